"""The executor hklflow-slurm (src/snakemake_executor_plugin_hklflow_slurm), without a cluster:
Snakemake finds it with the stock plugin's settings plus the status-check cap, a SLURM job's
command runs its rules with the local executor on the job's CPUs, the wait between status
checks is capped, and without the stock plugin every Snakemake start still works.  Jobs run
through a real SLURM cluster in .ci/slurm/run_stage.sh."""
from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from types import SimpleNamespace

import pytest

pytest.importorskip("snakemake_executor_plugin_slurm",
                    reason="snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]')")

import snakemake_executor_plugin_slurm as stock  # noqa: E402
import snakemake_executor_plugin_hklflow_slurm as hk  # noqa: E402
from snakemake_interface_common.exceptions import WorkflowError  # noqa: E402


def test_snakemake_finds_the_executor_with_the_stock_settings_and_the_cap():
    from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry
    plugin = ExecutorPluginRegistry().get_plugin("hklflow-slurm")
    assert plugin.executor is hk.Executor and issubclass(hk.Executor, stock.Executor)
    fields = {f.name for f in dataclasses.fields(plugin.settings_cls)}
    assert {f.name for f in dataclasses.fields(stock.ExecutorSettings)} < fields
    assert "max_seconds_between_status_checks" in fields
    with pytest.raises(WorkflowError, match="max-seconds-between-status-checks"):
        hk.ExecutorSettings(max_seconds_between_status_checks=0)


def _job(threads, resources=None):
    return SimpleNamespace(threads=threads, resources=dict(resources or {}))


def test_a_slurm_job_runs_its_rules_itself_on_the_cpus_it_was_given():
    executor = hk.Executor.__new__(hk.Executor)  # no workflow needed for these two
    # the stock plugin runs "--executor slurm-jobstep --jobs 1": one srun + Snakemake per rule
    assert executor.additional_general_args() == "--executor local"
    assert hk.allocated_cpus(_job(3)) == 3
    assert hk.allocated_cpus(_job(1, {"threads": 4})) == 4          # threads given as a resource
    assert hk.allocated_cpus(_job(2, {"cpus_per_task": 6})) == 6    # what sbatch --cpus-per-task gets


def test_a_job_command_gets_the_cpus_of_its_allocation_not_of_the_submitting_host(monkeypatch):
    # the command's --cores comes from the executor's `cores` (64: the login node's)
    monkeypatch.setattr(stock.Executor, "format_job_exec", lambda self, job: f"--cores {self.cores}",
                        raising=False)
    executor = hk.Executor.__new__(hk.Executor)
    executor.workflow = SimpleNamespace(resource_settings=SimpleNamespace(cores=64))
    assert executor.format_job_exec(_job(2)) == "--cores 2"
    assert executor.format_job_exec(_job(1, {"cpus_per_task": 8})) == "--cores 8"
    assert executor.cores == 64                                   # outside a job's command


@pytest.mark.parametrize("stock_wait, cap, expected", [(180, 30, 30), (12, 30, 12), (180, None, 180)])
def test_the_wait_between_status_checks_is_capped(monkeypatch, stock_wait, cap, expected):
    finished = object()

    async def stock_check(self, active_jobs):  # what the stock plugin leaves behind
        self.next_seconds_between_status_checks = stock_wait
        for job in active_jobs:
            yield job

    monkeypatch.setattr(stock.Executor, "check_active_jobs", stock_check)
    executor = hk.Executor.__new__(hk.Executor)
    executor.workflow = SimpleNamespace(
        executor_settings=SimpleNamespace(max_seconds_between_status_checks=cap))

    async def collect():
        return [job async for job in executor.check_active_jobs([finished])]

    assert asyncio.run(collect()) == [finished]               # still-running jobs pass through
    assert executor.next_seconds_between_status_checks == expected


def test_without_the_stock_plugin_snakemake_still_starts_and_the_executor_says_what_to_install():
    code = ("import sys; sys.modules['snakemake_executor_plugin_slurm'] = None\n"
            "import snakemake_executor_plugin_hklflow_slurm as hk\n"
            "try:\n    hk.Executor(None, None)\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "WorkflowError" in r.stdout and "pip install -e '.[slurm]'" in r.stdout, r.stdout
