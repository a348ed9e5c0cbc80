"""Snakemake executor `hklflow-slurm`: the SLURM executor plugin (snakemake-executor-plugin-slurm)
with two changes for workflows of many short jobs (README, "Running on a SLURM cluster"):

* A SLURM job runs its rules with Snakemake's local executor, on the CPUs SLURM gave it.  The
  stock plugin runs them through its job-step executor, which starts one more Snakemake under
  `srun` for every rule (1.5-2 s each, measured) and runs the rules of a group job one after
  another (`--jobs 1`) even when the job was given the CPUs of several.
* The wait between status checks is capped (max_seconds_between_status_checks).  The stock
  plugin waits init_seconds_before_status_checks after a check that saw a job finish and 10 s
  longer after every check that saw none, up to 180 s: a job that ends after a run of such
  checks is seen finished that much later, and so is everything that waits for it.

Everything else - sbatch options, resources, partitions, accounts, logs, status queries,
cancellation, retries - is the stock plugin's, with its settings under this executor's prefix
(--hklflow-slurm-logdir, ... instead of --slurm-logdir, ...).  Not supported: SLURM array jobs
(--hklflow-slurm-array-jobs), whose tasks need the job-step executor.

Snakemake finds executor plugins by their top-level module name (snakemake_executor_plugin_*),
so this module is imported by every Snakemake start, with or without the stock plugin; without
it, choosing this executor fails with what to install.
"""
# no `from __future__ import annotations`: Snakemake reads the settings types at run time

import threading
from dataclasses import dataclass, field
from typing import List, Optional

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.settings import CommonSettings

try:
    import snakemake_executor_plugin_slurm as _slurm
    from snakemake_executor_plugin_slurm.partitions import get_job_cpu_requirement
except ImportError:  # the optional dependency: pip install -e '.[slurm]'
    _slurm = None

DEFAULT_MAX_SECONDS_BETWEEN_STATUS_CHECKS = 60
_NEEDS_PLUGIN = ("the executor hklflow-slurm needs the Snakemake SLURM plugin: pip install -e "
                 "'.[slurm]' (snakemake-executor-plugin-slurm>=2.8,<3)")


def allocated_cpus(job) -> int:
    """The CPUs sbatch asks for this job (--cpus-per-task; the stock plugin's rule: the
    cpus_per_task resource, else the job's threads), at least 1."""
    cpus, kind = get_job_cpu_requirement(job)
    return max(1, int(cpus)) if kind == "task" else max(1, int(job.threads))


if _slurm is not None:
    common_settings = _slurm.common_settings

    @dataclass
    class ExecutorSettings(_slurm.ExecutorSettings):
        max_seconds_between_status_checks: Optional[int] = field(
            default=DEFAULT_MAX_SECONDS_BETWEEN_STATUS_CHECKS,
            metadata={
                "help": "The longest wait (s) between two status checks of the submitted jobs. "
                        "Without it the wait grows by 10 s after every check that finds no job "
                        f"finished, up to 180 s. Default {DEFAULT_MAX_SECONDS_BETWEEN_STATUS_CHECKS}.",
                "env_var": False,
                "required": False,
            },
        )

        def __post_init__(self):
            super().__post_init__()
            cap = self.max_seconds_between_status_checks
            if cap is not None and not cap >= 1:
                raise WorkflowError(f"--hklflow-slurm-max-seconds-between-status-checks must be "
                                    f">= 1 second, got {cap}")

    class Executor(_slurm.Executor):
        def __post_init__(self, *args, **kwargs):
            super().__post_init__(*args, **kwargs)
            if self.array_jobs:
                raise WorkflowError("--hklflow-slurm-array-jobs is not supported: the tasks of a "
                                    "SLURM array job need the stock plugin's job-step executor "
                                    "(use --executor slurm for array jobs)")

        def additional_general_args(self):
            # the job's own Snakemake runs its rules (stock: "--executor slurm-jobstep --jobs 1")
            return "--executor local"

        # --cores of a job's command: the CPUs SLURM gives that job, not the cores of the
        # submitting host (the stock plugin passes the latter, harmless with its --jobs 1).
        # Jobs are submitted from two threads at once, hence a thread-local value.
        _job_cores = threading.local()

        def format_job_exec(self, job):
            self._job_cores.value = allocated_cpus(job)
            try:
                return super().format_job_exec(job)
            finally:
                self._job_cores.value = None

        @property
        def cores(self):
            value = getattr(self._job_cores, "value", None)
            return super().cores if value is None else value

        async def check_active_jobs(self, active_jobs: List):
            async for job in super().check_active_jobs(active_jobs):
                yield job
            cap = self.workflow.executor_settings.max_seconds_between_status_checks
            if cap is not None and self.next_seconds_between_status_checks > cap:
                self.next_seconds_between_status_checks = cap
else:
    common_settings = CommonSettings(non_local_exec=True, implies_no_shared_fs=False,
                                     job_deploy_sources=False)

    class Executor(RemoteExecutor):
        def __new__(cls, *args, **kwargs):
            raise WorkflowError(_NEEDS_PLUGIN)
