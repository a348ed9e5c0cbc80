"""Every hook hklflow installs into Snakemake, and every look-up of Snakemake's internals.

The workflow (workflow/rules/common.smk, the Snakefile) reaches Snakemake's inner parts only
through this module.  Each hook buys speed or sturdiness, and touches something Snakemake
does not promise to keep.  Before it installs, each hook checks that this thing is there and
behaves as expected.  If a Snakemake upgrade has removed or changed it, the hook stays out
and says so once, on stderr, when the workflow is planned.  Snakemake then works as it does
without hklflow: slower, or (the SIGTERM hook) liable to hang on SIGTERM, but never with
other jobs or other results.

HKLFLOW_SNAKEMAKE_HOOKS=0 installs none of the hooks; the look-ups still work.
bench/dryrun.py times planning with the hooks on and off.

What a run did (jobs started, finished, failed; a lock refusal) comes through Snakemake's
public logger plugin interface instead (src/snakemake_logger_plugin_hklflow, read by
hklflow.planning.job_events), never from its wording.
"""
from __future__ import annotations

import atexit
import gc
import inspect
import os
import signal
import sys
import tempfile
import threading
import types
from pathlib import Path

# the attribute snakemake.common.get_function_params reads before it asks inspect.signature
_PARAMETERS_ATTRIBUTE = "_overwrite_params"

_reported: set[str] = set()
_MISSING = object()


def hooks_enabled() -> bool:
    """False when HKLFLOW_SNAKEMAKE_HOOKS is 0 (or off/false/no): stock Snakemake, for
    comparisons and as a way out if a hook misbehaves."""
    return os.environ.get("HKLFLOW_SNAKEMAKE_HOOKS", "1").strip().lower() not in (
        "0", "off", "false", "no")


def report_once(hook: str, problem: str, consequence: str) -> None:
    """One line on stderr, the first time a hook finds it cannot work in this process."""
    if hook in _reported:
        return
    _reported.add(hook)
    print(f"hklflow: Snakemake hook {hook!r} is off: {problem}; {consequence} (please report "
          "this with your Snakemake version)", file=sys.stderr)


# --------------------------------------------------------------------------------------
# Function parameters recorded once (planning)
# --------------------------------------------------------------------------------------
_lookup_honoured: bool | None = None


def _parameter_lookup_honoured() -> bool:
    """Whether this Snakemake's get_function_params returns the parameters recorded in
    `_overwrite_params` (tried once on a function of our own)."""
    global _lookup_honoured
    if _lookup_honoured is None:
        try:
            # (here, guarded: an upgrade of Snakemake may have moved it)
            from snakemake.common import get_function_params

            def probe(wildcards):
                return wildcards

            recorded = inspect.signature(probe).parameters
            setattr(probe, _PARAMETERS_ATTRIBUTE, recorded)
            _lookup_honoured = get_function_params(probe) is recorded
        except Exception:  # noqa: BLE001 - any change of that look-up turns the hook off
            _lookup_honoured = False
    return _lookup_honoured


def _parameters_can_be_recorded() -> bool:
    if not hooks_enabled():
        return False
    if _parameter_lookup_honoured():
        return True
    report_once("known_parameters",
                "snakemake.common.get_function_params no longer reads `_overwrite_params`",
                "Snakemake inspects the parameters of the workflow's functions for every job "
                "instead: planning is slower, jobs and results are the same")
    return False


def known_parameters(func):
    """func, with its parameters recorded where Snakemake looks before it asks
    inspect.signature (snakemake.common.get_function_params reads `_overwrite_params`).

    Why: Snakemake asks for the parameters of every input, params and resource function
    two or three times for every job it plans, and inspect.signature is slow; recorded,
    they are found at once (bench/dryrun.py, hooks on and off).  They are the same
    parameters, so nothing but the time changes.

    If an upgrade drops that look-up (tried once on a function of our own), the attribute
    is not set, this is reported once, and Snakemake inspects the functions as usual."""
    if _parameters_can_be_recorded():
        setattr(func, _PARAMETERS_ATTRIBUTE, inspect.signature(func).parameters)
    return func


def record_rule_function_parameters(rules) -> None:
    """known_parameters for every input and params function of the rules (the Snakefile
    calls it once they are all defined: `workflow.rules`, each rule's `input` and `params`).

    Why and what an upgrade may break: as known_parameters.  A rule whose input or params
    are not listed as they are today is left as it is (reported once)."""
    if not _parameters_can_be_recorded():
        return
    for rule in rules:
        try:
            items = (*rule.input, *rule.params)
        except (AttributeError, TypeError):
            report_once("record_rule_function_parameters",
                        "Snakemake's rules no longer list their input and params functions",
                        "their parameters are inspected for every job: planning is slower")
            return
        for item in items:
            if isinstance(item, types.FunctionType) and not hasattr(item, _PARAMETERS_ATTRIBUTE):
                known_parameters(item)


def record_resource_evaluate_parameters() -> bool:
    """Snakemake evaluates every resource of every job it plans through the bound method
    Resource.evaluate, and asks for that method's parameters each time (four resources per
    job: most of the signatures a plan asks for).  Recorded once on the method's function,
    as known_parameters does (the bound method's parameters, which are what it asks for).

    Why: the time of a plan (bench/dryrun.py, hooks on and off).  If an upgrade renames or
    removes snakemake.resources.Resource.evaluate, or drops the parameter look-up, nothing is
    set, this is reported once, and Snakemake inspects the method as usual.  True when set."""
    if not _parameters_can_be_recorded():
        return False
    try:
        # (here, guarded: an upgrade of Snakemake may have moved it)
        from snakemake.resources import Resource

        evaluate = Resource.evaluate
        parameters = inspect.signature(types.MethodType(evaluate, object())).parameters
        setattr(evaluate, _PARAMETERS_ATTRIBUTE, parameters)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        report_once("record_resource_evaluate_parameters",
                    f"snakemake.resources.Resource.evaluate is not what it was ({exc})",
                    "its parameters are inspected for every resource of every job: planning "
                    "is slower")
        return False
    return True


# --------------------------------------------------------------------------------------
# One shell command per printed job
# --------------------------------------------------------------------------------------
def format_shell_command_once_per_print() -> bool:
    """Each time Snakemake prints a job (Job.log_info: every job of a dry run, every job
    it starts) it formats the job's shell command three times, the same command each time:
    twice for the fields of the log record and once for its message.  Formatting copies
    the Snakefile's globals and quotes every field, and a large plan spends a good part of
    its time there (bench/README.md, dryrun.py, hooks on and off).  This hook formats it
    once as log_info starts, and Job.shellcmd returns that command to the calls made for
    that same job until log_info returns; every other call formats as before.

    It touches Job.log_info and the property Job.shellcmd (snakemake.jobs).  If an upgrade
    renames either or makes shellcmd other than a property, nothing is replaced, this is
    reported once, and the command is formatted three times (slower, the same output).
    True when installed (False as well when it already was)."""
    if not hooks_enabled():
        return False
    try:
        # (here, guarded: an upgrade of Snakemake may have moved it)
        from snakemake.jobs import Job

        stock_shellcmd = Job.__dict__["shellcmd"]
        stock_log_info = Job.__dict__["log_info"]
        if not isinstance(stock_shellcmd, property) or not callable(stock_log_info):
            raise TypeError("Job.shellcmd is not a property or Job.log_info not a function")
    except (ImportError, KeyError, TypeError) as exc:
        report_once("format_shell_command_once_per_print",
                    f"snakemake.jobs.Job is not what it was ({exc!r})",
                    "each printed job's shell command is formatted three times: slower")
        return False
    if getattr(stock_log_info, "hklflow_hook", False):
        return False
    printing: dict[int, object] = {}  # id(job) -> its command, while log_info prints it
    format_command = stock_shellcmd.fget

    def shellcmd(self):
        command = printing.get(id(self), _MISSING)
        return format_command(self) if command is _MISSING else command

    def log_info(self, *args, **kwargs):
        printing[id(self)] = format_command(self)
        try:
            return stock_log_info(self, *args, **kwargs)
        finally:
            printing.pop(id(self), None)

    shellcmd.__doc__ = stock_shellcmd.__doc__
    log_info.hklflow_hook = True
    log_info.__wrapped__ = stock_log_info
    Job.shellcmd = property(shellcmd)
    Job.log_info = log_info
    return True


# --------------------------------------------------------------------------------------
# Garbage collection while planning
# --------------------------------------------------------------------------------------
# Full collections only after this many young collections (Python's default: 10)
_FULL_COLLECTION_THRESHOLD = 1000


def _freeze_after_dry_run(workflow) -> None:
    if getattr(workflow, "dryrun", False):
        gc.freeze()


def tune_gc_for_planning(workflow) -> bool:
    """Fewer full garbage collections while Snakemake plans, and none at the end of a dry run.

    Why: planning makes millions of objects that live until the plan is made (jobs, their
    files and wildcards) and almost no cyclic garbage, yet each full collection walks all of
    them; and after a dry run, which writes nothing, a last collection over the whole plan
    is wasted (gc.freeze at exit leaves them to the end of the process).  bench/dryrun.py
    measures the plan with the hooks on and off.  The young generations are collected as
    before, so memory stays bounded.

    The thresholds are Python's own; the one thing of Snakemake's used is `workflow.dryrun`
    (read at exit).  A workflow object without that property gets the thresholds but no
    freeze at exit (reported once): the end of a dry run is slower, nothing else changes.
    True when both parts are installed."""
    if not hooks_enabled():
        return False
    young, middle, full = gc.get_threshold()
    gc.set_threshold(young, middle, max(full, _FULL_COLLECTION_THRESHOLD))
    if not isinstance(getattr(type(workflow), "dryrun", None), property):
        report_once("tune_gc_for_planning", "Snakemake's workflow has no `dryrun` property",
                    "the end of a dry run collects the whole plan's objects: slower")
        return False
    atexit.register(_freeze_after_dry_run, workflow)
    return True


# --------------------------------------------------------------------------------------
# SIGTERM
# --------------------------------------------------------------------------------------
def defer_sigterm_handler() -> bool:
    """Snakemake's SIGTERM handler run on a thread of its own (called from `onstart`, after
    Snakemake's scheduler installed its handler).

    Why: Snakemake 9's scheduler handles SIGTERM (a batch system's time limit, `kill`) with
    a function that takes the scheduler's lock, a plain threading.Lock.  Python runs signal
    handlers in the main thread, which holds that lock while it selects and finishes jobs,
    so a SIGTERM arriving then waits for a lock its own thread holds: Snakemake hangs until
    the batch system kills it (SIGKILL), and the directory stays locked until `--unlock`
    (tests/planning/test_snakemake_compat.py reproduces it).  On a thread of its own the handler
    waits for the lock, and Snakemake stops as it means to.

    If an upgrade installs no Python handler by `onstart` (none to defer), or this is not
    the main thread, nothing changes and this is reported once: SIGTERM is then handled as
    Snakemake does.  True when the handler was replaced (False as well when it already was)."""
    if not hooks_enabled():
        return False
    handler = signal.getsignal(signal.SIGTERM)
    if getattr(handler, "deferred", False):
        return False
    if not callable(handler):
        report_once("defer_sigterm_handler",
                    f"Snakemake installed no Python SIGTERM handler by onstart ({handler!r})",
                    "SIGTERM is handled as Snakemake does")
        return False

    def deferred(signum, frame):
        threading.Thread(target=handler, args=(signum, frame), name="sigterm",
                         daemon=True).start()

    deferred.deferred = True
    try:
        signal.signal(signal.SIGTERM, deferred)
    except ValueError:  # not the main thread
        report_once("defer_sigterm_handler", "onstart ran outside the main thread",
                    "SIGTERM is handled as Snakemake does")
        return False
    return True


# --------------------------------------------------------------------------------------
# Look-ups of the workflow's settings (always on: the workflow needs their answers)
# --------------------------------------------------------------------------------------
def command_line_configfiles(workflow) -> list[str] | None:
    """The --configfile files, in order (`workflow.config_settings.configfiles`), to merge
    after the Snakefile's own `configfile:` as Snakemake does.

    None (reported once) when Snakemake no longer has them there: the caller then takes
    `workflow.configfiles` as it is, and its check that the files it read give Snakemake's
    own config stops the run if the order was not Snakemake's (an error, not other
    settings)."""
    try:
        return [str(p) for p in workflow.config_settings.configfiles]
    except (AttributeError, TypeError):
        report_once("command_line_configfiles",
                    "Snakemake's workflow has no config_settings.configfiles",
                    "the config files are read in the order workflow.configfiles lists them")
        return None


def cluster_groups(workflow) -> dict:
    """Rule -> job group given on the command line or in a profile (`--groups`,
    `workflow.group_settings.overwrite_groups`); {} without any.

    {} as well (reported once) when Snakemake no longer has them there: the jobs that would
    join their reader's group then run as jobs of their own (more cluster jobs, the same
    results)."""
    settings = getattr(workflow, "group_settings", _MISSING)
    if settings is None:  # no group settings made for this run
        return {}
    groups = getattr(settings, "overwrite_groups", _MISSING)
    if not isinstance(groups, dict):
        report_once("cluster_groups",
                    "Snakemake's workflow has no group_settings.overwrite_groups",
                    "ingest_scan and find_peaks jobs join no group")
        return {}
    return groups


def is_main_process(workflow) -> bool:
    """Whether this is the Snakemake the user started, not one that runs a job (a cluster
    job, or a local one Snakemake starts as a subprocess, parses the Snakefile again):
    `workflow.is_main_process`, from its --mode.

    True (reported once) when Snakemake no longer says: every parse then does what only the
    user's should (the disk foreseen: one more line and a look at results/ in each job's
    log)."""
    main = getattr(workflow, "is_main_process", _MISSING)
    if not isinstance(main, bool):
        report_once("is_main_process", "Snakemake's workflow has no is_main_process",
                    "every job's parse foresees the disk as well")
        return True
    return main


# --------------------------------------------------------------------------------------
# The lock a killed run left (a look-up: always on)
# --------------------------------------------------------------------------------------
_locks_in_folder: bool | None = None


def _locks_kept_in_folder() -> bool:
    """Whether this Snakemake's file persistence (its default) writes a run's locks into the
    `locks` folder of its `.snakemake` (tried once, in a folder of our own)."""
    global _locks_in_folder
    if _locks_in_folder is None:
        try:
            # (in the try, as every hook's: an upgrade may have moved it)
            from snakemake.persistence.file import FilePersistence

            with tempfile.TemporaryDirectory() as folder:
                FilePersistence(path=Path(folder))._write_locks("output", ["probe"])
                locks = Path(folder) / "locks"
                _locks_in_folder = locks.is_dir() and any(locks.iterdir())
        except Exception:  # noqa: BLE001 - any change of the persistence turns the look-up off
            _locks_in_folder = False
    return _locks_in_folder


def lock_left(directory) -> bool:
    """Whether Snakemake's lock folder in `directory` (`.snakemake/locks`) holds a lock: a
    run goes on there, or a killed one left it.

    Why: `hklflow watch` removes a killed run's lock before its first run, instead of
    starting a run that plans everything only to be refused.  A refused run says so in its
    job events (hklflow.planning.job_events.lock_refused), and the watcher unlocks then, so
    this look-up saves that one refused run and nothing else depends on it.

    If an upgrade keeps the locks elsewhere (snakemake.persistence.file, tried once), or the
    run uses another persistence backend, the answer is False (the first reported once): the
    first run is refused and the watcher unlocks then (slower, the same results)."""
    if not _locks_kept_in_folder():
        report_once("lock_left", "Snakemake's file persistence no longer writes its locks to "
                    ".snakemake/locks", "hklflow watch learns of a killed run's lock from its "
                    "first run, refused, and unlocks then")
        return False
    locks = Path(directory) / ".snakemake" / "locks"
    return locks.is_dir() and bool(os.listdir(locks))


def stop_plan(message: str):
    """Stop the plan with `message` on stderr, as `hklflow: MESSAGE`, and status 1: a
    WorkflowError raised while the Snakefile is read or an input function runs would reach
    the user framed by Snakemake's own lines ("WorkflowError in file .../common.smk, line
    40:", "InputFunctionException in rule ...") around the one line that matters.  Snakemake
    ends on the SystemExit with the status it carries and adds nothing (tests/planning/
    test_snakemake_compat.py checks that it still does)."""
    print(f"hklflow: {message}\n{STOPPED_PLAN}", file=sys.stderr, flush=True)
    raise SystemExit(1)


# the line that ends stop_plan's message: how `hklflow run`'s console tells the problem that
# stopped a plan from Snakemake's own output (commands.console.plan_problem)
STOPPED_PLAN = "hklflow stopped the plan"
