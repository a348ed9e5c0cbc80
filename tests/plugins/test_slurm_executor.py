"""The executor hklflow-slurm (src/snakemake_executor_plugin_hklflow_slurm), without a cluster:
Snakemake finds it with the stock plugin's settings plus the status-check cap, a SLURM job's
command runs its rules with the local executor on the job's CPUs (the stock plugin's other
job arguments kept), the wait between status checks is capped, and without the stock plugin
every Snakemake start still works.  The tests named test_stock_plugin_* fail when the stock
plugin changes what this executor relies on.  Jobs run through a real SLURM cluster in
.ci/slurm/run_stage.sh."""
from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

pytest.importorskip("snakemake_executor_plugin_slurm",
                    reason="snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]')")

import snakemake_executor_plugin_hklflow_slurm as hk  # noqa: E402
import snakemake_executor_plugin_slurm as stock  # noqa: E402
from snakemake_executor_plugin_slurm.submit_string import get_submit_command  # noqa: E402
from snakemake_interface_common.exceptions import WorkflowError  # noqa: E402
from snakemake_interface_executor_plugins.executors import remote as remote_executor  # noqa: E402
from snakemake_interface_executor_plugins.settings import SharedFSUsage  # noqa: E402


class _Resources(dict):
    """A job's resources as the plugins read them: .get() and attributes."""
    __getattr__ = dict.__getitem__


class _Logger:
    def __init__(self):
        self.warnings = []

    def warning(self, msg):
        self.warnings.append(msg)

    def debug(self, msg):
        pass


def _job(threads, resources=None):
    return SimpleNamespace(
        threads=threads, resources=_Resources(resources or {}), rules=["transform_frames"],
        jobid=7, attempt=1, is_updated=False, is_group=lambda: False,
        get_target_spec=lambda: [], get_wait_for_files=lambda: ["raw/scan.h5"])


def _executor(**settings):
    """hklflow-slurm's executor on a workflow of only what the tested hooks read."""
    executor = hk.Executor.__new__(hk.Executor)
    executor.logger = _Logger()
    executor._tmpdir = "/scratch/.snakemake/tmp.x"
    executor._next_seconds_between_status_checks = None
    executor.workflow = SimpleNamespace(
        executor_settings=hk.ExecutorSettings(**settings),
        resource_settings=SimpleNamespace(cores=64),               # the login node's
        remote_execution_settings=SimpleNamespace(seconds_between_status_checks=10),
        storage_settings=SimpleNamespace(shared_fs_usage=set(SharedFSUsage)),
        dag=SimpleNamespace(get_unneeded_temp_files=lambda job: []))
    return executor


def test_snakemake_finds_the_executor_with_the_stock_settings_and_the_cap():
    from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry
    plugin = ExecutorPluginRegistry().get_plugin("hklflow-slurm")
    assert plugin.executor is hk.Executor and issubclass(hk.Executor, stock.Executor)
    fields = {f.name for f in dataclasses.fields(plugin.settings_cls)}
    assert {f.name for f in dataclasses.fields(stock.ExecutorSettings)} < fields
    assert "max_seconds_between_status_checks" in fields
    with pytest.raises(WorkflowError, match="max-seconds-between-status-checks"):
        hk.ExecutorSettings(max_seconds_between_status_checks=0)
    with pytest.raises(WorkflowError, match="array-jobs is not supported"):
        hk.ExecutorSettings(array_jobs="transform_frames")


@pytest.mark.parametrize("stock_args, ours", [
    ("--executor slurm-jobstep --jobs 1", "--executor local"),
    ("--executor slurm-jobstep --jobs 1 --slurm-jobstep-pass-command-as-script",
     "--executor local --slurm-jobstep-pass-command-as-script"),
    ("--jobs=1 --executor=slurm-jobstep --keep-going", "--executor=local --keep-going"),
    ("--executor local-jobstep --jobs 1", None),                   # not the job-step executor
    ("--jobs 1", None),
])
def test_only_the_job_step_executor_and_its_one_job_at_a_time_are_replaced(stock_args, ours):
    assert hk.local_executor_args(stock_args) == ours


@pytest.mark.parametrize("as_script", [False, True])
def test_stock_plugin_job_arguments_name_its_job_step_executor(as_script):
    executor = _executor(pass_command_as_script=as_script)
    stock_args = stock.Executor.additional_general_args(executor)
    assert re.search(r"--executor[ =]slurm-jobstep\b", stock_args), stock_args
    # what a SLURM job's Snakemake gets: the local executor, the stock plugin's other options
    expected = "--executor local" + (" --slurm-jobstep-pass-command-as-script" if as_script else "")
    assert executor.additional_general_args() == expected
    assert executor.logger.warnings == []


def test_a_stock_plugin_without_the_job_step_executor_is_reported_once_and_kept(monkeypatch):
    monkeypatch.setattr(stock.Executor, "additional_general_args",
                        lambda self: "--executor slurm-srun --jobs 1")
    executor = _executor()
    assert executor.additional_general_args() == "--executor slurm-srun --jobs 1"
    assert executor.additional_general_args() == "--executor slurm-srun --jobs 1"
    assert len(executor.logger.warnings) == 1 and "slurm-jobstep" in executor.logger.warnings[0]


@pytest.mark.parametrize("threads, resources", [
    (3, {}), (1, {}), (2, {"cpus_per_task": 6}), (4, {"cpus_per_task": 0}),
    (2, {"cpus_per_task": -1}),                       # sbatch gets no --cpus-per-task: 1 CPU
    (1, {"threads": 4}),                              # a `threads` resource: sbatch ignores it
])
def test_stock_plugin_sbatch_asks_for_the_cpus_the_job_command_gets(threads, resources):
    job = _job(threads, resources)
    call = get_submit_command(job, {"run_uuid": "run", "slurm_logfile": "x/%j.log",
                                    "comment_str": "rule_x", "account": "", "partition": "",
                                    "workdir": "/w"})
    asked = re.search(r"--cpus-per-task=(\d+)", call)
    assert (int(asked.group(1)) if asked else 1) == hk.allocated_cpus(job), call


def test_a_job_command_gets_the_cpus_of_its_allocation_not_of_the_submitting_host():
    executor = _executor()
    args = executor.get_job_args(_job(2))
    assert "--cores 2" in args and "--cores 64" not in args, args
    assert "--wait-for-files" in args and "raw/scan.h5" in args, args   # RemoteExecutor's part
    # the interface's own arguments with cores=, RemoteExecutor's appended unchanged
    stock_args = stock.Executor.get_job_args(executor, _job(2))
    assert args == stock_args.replace("--cores 64", "--cores 2")
    assert "--cores 8" in executor.get_job_args(_job(1, {"cpus_per_task": 8}))
    assert "--cores 5" in executor.get_job_args(_job(2), cores=5)          # an explicit cores=
    assert executor.logger.warnings == []


def test_interface_job_arguments_that_no_longer_start_with_the_general_ones_are_reported(
        monkeypatch):
    monkeypatch.setattr(remote_executor.RemoteExecutor, "get_job_args",
                        lambda self, job: "--wait-for-files x --cores 64")
    executor = _executor()
    assert executor.get_job_args(_job(2)) == "--wait-for-files x --cores 64"
    executor.get_job_args(_job(2))
    assert len(executor.logger.warnings) == 1 and "--cores" in executor.logger.warnings[0]


@pytest.mark.parametrize("stock_wait, cap, expected", [(180, 30, 30), (12, 30, 12), (180, None, 180)])
def test_the_wait_between_status_checks_is_capped(monkeypatch, stock_wait, cap, expected):
    waits = []

    async def record(seconds):
        waits.append(seconds)

    monkeypatch.setattr(remote_executor, "asyncio", SimpleNamespace(sleep=record))
    executor = _executor(max_seconds_between_status_checks=cap)
    executor.next_seconds_between_status_checks = stock_wait    # what the stock plugin leaves
    asyncio.run(executor.sleep())
    assert waits == [expected]


def test_stock_plugin_sets_the_interface_wait_that_is_capped():
    # the stock plugin's status check sets RemoteExecutor.next_seconds_between_status_checks,
    # the wait that Executor.sleep caps (with no active job it returns at once)
    executor = _executor(init_seconds_before_status_checks=7)
    executor.next_seconds_between_status_checks = 170

    async def check():
        return [job async for job in executor.check_active_jobs([])]

    assert asyncio.run(check()) == []
    assert executor.next_seconds_between_status_checks == 7


def test_without_the_stock_plugin_snakemake_still_starts_and_the_executor_says_what_to_install():
    code = ("import sys; sys.modules['snakemake_executor_plugin_slurm'] = None\n"
            "import snakemake_executor_plugin_hklflow_slurm as hk\n"
            "try:\n    hk.Executor(None, None)\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "WorkflowError" in r.stdout and "pip install -e '.[slurm]'" in r.stdout, r.stdout
