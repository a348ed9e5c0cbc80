"""Snakemake executor `hklflow-slurm`: the SLURM executor plugin (snakemake-executor-plugin-slurm)
with two changes for workflows of many short jobs (README, "Running on a SLURM cluster"):

* A SLURM job runs its rules with Snakemake's local executor, on the CPUs SLURM gave it.  The
  stock plugin runs them through its job-step executor, which starts one more Snakemake under
  `srun` for every rule and runs the rules of a group job one after another (`--jobs 1`) even
  when the job was given the CPUs of several.
* The wait between status checks is capped (max_seconds_between_status_checks).  The stock
  plugin lengthens the wait after every check that saw no job finish, so a job that ends
  after a run of such checks is seen finished late, and so is everything that waits for it.

What each change buys is measured in docs/slurm.md (`.ci/slurm/run_stage.sh`), and
docs/slurm-plugin-proposals.md proposes both to the stock plugin.  Everything else - sbatch
options, resources, partitions, accounts, logs, status queries, cancellation, retries - is the
stock plugin's, with its settings under this executor's prefix (--hklflow-slurm-logdir, ...
instead of --slurm-logdir, ...).  Not supported: SLURM array jobs (--hklflow-slurm-array-jobs),
whose tasks need the job-step executor.

Only the executor plugin interface's public hooks are overridden (get_job_args,
additional_general_args, sleep); where the stock plugin's output is edited, a change in it is
reported once in the log and the stock behaviour kept (slower, never wrong).

Snakemake finds executor plugins by their top-level module name (snakemake_executor_plugin_*),
so this module is imported by every Snakemake start, with or without the stock plugin; without
it, choosing this executor fails with what to install.
"""
# no `from __future__ import annotations`: Snakemake reads the settings types at run time

import shlex
from dataclasses import dataclass, field
from typing import Optional

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.real import RealExecutor
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.settings import CommonSettings

try:
    import snakemake_executor_plugin_slurm as _slurm
except ImportError:  # the optional dependency: pip install -e '.[slurm]'
    _slurm = None

DEFAULT_MAX_SECONDS_BETWEEN_STATUS_CHECKS = 60
STOCK_JOB_EXECUTOR = "slurm-jobstep"
_NEEDS_PLUGIN = ("the executor hklflow-slurm needs the Snakemake SLURM plugin: pip install -e "
                 "'.[slurm]' (snakemake-executor-plugin-slurm>=2.8,<3)")


def allocated_cpus(job) -> int:
    """The CPUs a job's sbatch asks for (--cpus-per-task): its cpus_per_task resource where
    set, else its threads; at least 1.  This mirrors the stock plugin's rule, which is not
    public: tests/plugins/test_slurm_executor.py compares the two on the sbatch line the stock plugin
    builds (submit_string.get_submit_command), so a change there fails that test."""
    cpus = job.resources.get("cpus_per_task") or job.threads
    return max(1, int(cpus))


def local_executor_args(stock_args: str) -> Optional[str]:
    """The stock plugin's arguments for a SLURM job's Snakemake with its job-step executor
    replaced by the local one, everything else kept; None when they name no job-step executor.

    Its `--jobs 1` goes too, without a replacement: the job's --cores (get_job_args) is what
    its CPUs allow, and with any --jobs Snakemake's scheduler stops counting cores."""
    words = shlex.split(stock_args)
    out, found, i = [], False, 0
    while i < len(words):
        word = words[i]
        if word == "--executor" and i + 1 < len(words) and words[i + 1] == STOCK_JOB_EXECUTOR:
            out += ["--executor", "local"]
            found, i = True, i + 2
        elif word == f"--executor={STOCK_JOB_EXECUTOR}":
            out.append("--executor=local")
            found, i = True, i + 1
        elif word in ("--jobs", "-j") and i + 1 < len(words):
            i += 2
        elif word.startswith("--jobs="):
            i += 1
        else:
            out.append(word)
            i += 1
    return shlex.join(out) if found else None


if _slurm is not None:
    common_settings = _slurm.common_settings

    @dataclass
    class ExecutorSettings(_slurm.ExecutorSettings):
        max_seconds_between_status_checks: Optional[int] = field(
            default=DEFAULT_MAX_SECONDS_BETWEEN_STATUS_CHECKS,
            metadata={
                "help": "The longest wait (s) between two status checks of the submitted jobs. "
                        "Without it the stock plugin lengthens the wait after every check that "
                        "finds no job finished, up to its own maximum. "
                        f"Default {DEFAULT_MAX_SECONDS_BETWEEN_STATUS_CHECKS}.",
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
            if self.array_jobs:
                raise WorkflowError("--hklflow-slurm-array-jobs is not supported: the tasks of a "
                                    "SLURM array job need the stock plugin's job-step executor "
                                    "(use --executor slurm for array jobs)")

    class Executor(_slurm.Executor):
        _warned = frozenset()

        def _warn_once(self, key, message):
            if key not in self._warned:
                self._warned = self._warned | {key}
                self.logger.warning(f"hklflow-slurm: {message}")

        def additional_general_args(self):
            stock = super().additional_general_args()
            ours = local_executor_args(stock)
            if ours is None:
                self._warn_once("executor", (
                    f"the SLURM plugin's job arguments ({stock!r}) name no "
                    f"'--executor {STOCK_JOB_EXECUTOR}' any more; its jobs run their rules the "
                    "stock plugin's way (one srun and Snakemake per rule)"))
                return stock
            return ours

        def get_job_args(self, job, **kwargs):
            # --cores of a job's Snakemake: the CPUs SLURM gives this job, not the submitting
            # host's.  RemoteExecutor.get_job_args takes no keywords: it is RealExecutor's
            # arguments (which take cores=) followed by its own (--wait-for-files).
            kwargs.setdefault("cores", allocated_cpus(job))
            remote = super().get_job_args(job)
            general = RealExecutor.get_job_args(self, job)
            if not remote.startswith(general):
                self._warn_once("cores", (
                    "the job arguments of snakemake-interface-executor-plugins no longer start "
                    "with RealExecutor's: a SLURM job's Snakemake gets the submitting host's "
                    "--cores, not its own CPUs"))
                return remote
            return RealExecutor.get_job_args(self, job, **kwargs) + remote[len(general):]

        async def sleep(self):
            cap = self.workflow.executor_settings.max_seconds_between_status_checks
            if cap is not None and self.next_seconds_between_status_checks > cap:
                self.next_seconds_between_status_checks = cap
            await super().sleep()
else:
    common_settings = CommonSettings(non_local_exec=True, implies_no_shared_fs=False,
                                     job_deploy_sources=False)

    class Executor(RemoteExecutor):
        def __new__(cls, *args, **kwargs):
            raise WorkflowError(_NEEDS_PLUGIN)
