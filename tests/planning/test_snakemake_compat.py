"""hklflow.planning.snakemake_compat: every hook hklflow installs into Snakemake works with the
installed Snakemake and does its work; when what a hook touches is gone (monkeypatched away
here, as an upgrade might), it stays out, says so once, and the workflow still plans the
same jobs."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
import types

import pytest
import snakemake.api  # noqa: F401 - imports snakemake.workflow, registers its exit functions

from hklflow.planning import snakemake_compat as compat

from conftest import REPO, planned_jobs, run_snakemake


@pytest.fixture(autouse=True)
def fresh_compat(monkeypatch):
    """Each test finds the hooks on, nothing reported yet, and the look-up not yet tried."""
    monkeypatch.delenv("HKLFLOW_SNAKEMAKE_HOOKS", raising=False)
    monkeypatch.setattr(compat, "_reported", set())
    monkeypatch.setattr(compat, "_lookup_honoured", None)
    monkeypatch.setattr(compat, "_locks_in_folder", None)


def _reports(err: str, hook: str) -> int:
    return err.count(f"Snakemake hook {hook!r} is off")


def _parameter_lookup_ignores_the_record(monkeypatch):
    """A Snakemake whose get_function_params reads another attribute than hklflow sets."""
    import snakemake.common

    monkeypatch.setattr(snakemake.common, "FUNC_OVERWRITE_PARAMS_ATTR", "_renamed_by_a_test")


# --------------------------------------------------------------------------------------
# known_parameters, record_rule_function_parameters
# --------------------------------------------------------------------------------------
def test_snakemake_reads_the_recorded_parameters(capsys):
    from snakemake.common import get_function_params

    def mem_mb(wildcards, attempt):
        return attempt

    assert compat.known_parameters(mem_mb) is mem_mb
    assert get_function_params(mem_mb) is mem_mb._overwrite_params
    assert list(get_function_params(mem_mb)) == ["wildcards", "attempt"]
    assert "Snakemake hook" not in capsys.readouterr().err


def test_rule_functions_get_their_parameters_recorded():
    def files(wildcards):
        return []

    def settings(wildcards, input):
        return ""

    rule = types.SimpleNamespace(input=[files, "a.txt"], params=[settings, 3])
    compat.record_rule_function_parameters([rule])
    assert list(files._overwrite_params) == ["wildcards"]
    assert list(settings._overwrite_params) == ["wildcards", "input"]


def test_without_the_parameter_look_up_nothing_is_recorded_and_it_is_said_once(
        monkeypatch, capsys):
    from snakemake.common import get_function_params

    _parameter_lookup_ignores_the_record(monkeypatch)

    def one(wildcards):
        return 1

    def two(wildcards, attempt):
        return 2

    compat.known_parameters(one)
    compat.record_rule_function_parameters([types.SimpleNamespace(input=[two], params=[])])
    assert not compat.record_resource_evaluate_parameters()
    assert not hasattr(one, "_overwrite_params") and not hasattr(two, "_overwrite_params")
    assert list(get_function_params(two)) == ["wildcards", "attempt"]  # Snakemake inspects
    assert _reports(capsys.readouterr().err, "known_parameters") == 1


def test_rules_that_no_longer_list_their_functions_are_left_alone(capsys):
    compat.record_rule_function_parameters([types.SimpleNamespace(name="no input")])
    compat.record_rule_function_parameters([types.SimpleNamespace(name="no input")])
    assert _reports(capsys.readouterr().err, "record_rule_function_parameters") == 1


# --------------------------------------------------------------------------------------
# record_resource_evaluate_parameters
# --------------------------------------------------------------------------------------
def test_resource_evaluate_parameters_are_recorded_for_the_bound_method():
    import inspect

    from snakemake.common import get_function_params
    from snakemake.resources import Resource

    assert compat.record_resource_evaluate_parameters()
    bound = types.MethodType(Resource.evaluate, object())
    assert get_function_params(bound) is Resource.evaluate._overwrite_params
    assert get_function_params(bound) == inspect.signature(bound).parameters


def test_without_resource_evaluate_nothing_is_recorded_and_it_is_said_once(monkeypatch, capsys):
    import snakemake.resources

    monkeypatch.delattr(snakemake.resources.Resource, "evaluate")
    assert not compat.record_resource_evaluate_parameters()
    assert not compat.record_resource_evaluate_parameters()
    assert _reports(capsys.readouterr().err, "record_resource_evaluate_parameters") == 1


# --------------------------------------------------------------------------------------
# format_shell_command_once_per_print
# --------------------------------------------------------------------------------------
def test_snakemake_jobs_have_what_the_shell_command_hook_replaces():
    from snakemake.jobs import Job

    assert isinstance(Job.__dict__["shellcmd"], property)
    assert callable(Job.__dict__["log_info"])


def test_a_printed_job_has_its_shell_command_formatted_once(monkeypatch):
    """Stand-ins for Snakemake's Job.shellcmd (counts its calls) and Job.log_info (asks for
    the command three times, as Snakemake's does); monkeypatch puts Snakemake's back."""
    from snakemake.jobs import Job

    formatted = []

    def shellcmd(self):
        formatted.append(1)
        return f"command {len(formatted)}"

    printed = []

    def log_info(self, indent=False):
        printed.extend([self.shellcmd, self.shellcmd, self.shellcmd])

    monkeypatch.setattr(Job, "shellcmd", property(shellcmd))
    monkeypatch.setattr(Job, "log_info", log_info)
    assert compat.format_shell_command_once_per_print()
    assert not compat.format_shell_command_once_per_print()  # already installed
    job = Job.__new__(Job)
    job.log_info()
    assert printed == ["command 1"] * 3 and len(formatted) == 1
    assert job.shellcmd == "command 2"  # not while printing: formatted as before
    job.log_info()
    assert printed[3:] == ["command 3"] * 3


def test_a_job_whose_shell_command_is_no_property_is_left_alone_said_once(monkeypatch, capsys):
    from snakemake.jobs import Job

    def shellcmd(self):
        return "command"

    monkeypatch.setattr(Job, "shellcmd", shellcmd)
    log_info = Job.log_info
    assert not compat.format_shell_command_once_per_print()
    assert not compat.format_shell_command_once_per_print()
    assert Job.log_info is log_info and Job.shellcmd is shellcmd
    assert _reports(capsys.readouterr().err, "format_shell_command_once_per_print") == 1


# --------------------------------------------------------------------------------------
# tune_gc_for_planning
# --------------------------------------------------------------------------------------
class _Workflow:
    def __init__(self, dryrun):
        self._dryrun = dryrun

    @property
    def dryrun(self):
        return self._dryrun


@pytest.fixture
def gc_state(monkeypatch):
    """The thresholds put back after the test; the exit functions collected, not registered."""
    at_exit = []
    monkeypatch.setattr(compat.atexit, "register", lambda f, *a: at_exit.append((f, a)))
    before = gc.get_threshold()
    yield at_exit
    gc.set_threshold(*before)
    gc.unfreeze()


def test_snakemake_workflow_has_the_dry_run_property_the_gc_hook_reads(gc_state):
    from snakemake.workflow import Workflow

    assert compat.tune_gc_for_planning(object.__new__(Workflow))
    assert gc.get_threshold()[2] >= 1000
    assert [f for f, _ in gc_state] == [compat._freeze_after_dry_run]


@pytest.mark.parametrize("dryrun", [True, False])
def test_full_collections_are_rarer_and_a_dry_run_ends_frozen(gc_state, dryrun):
    assert compat.tune_gc_for_planning(_Workflow(dryrun))
    assert gc.get_threshold()[2] >= 1000
    gc.unfreeze()
    (exit_function, args), = gc_state
    exit_function(*args)
    assert (gc.get_freeze_count() > 0) == dryrun


def test_a_workflow_without_the_dry_run_property_gets_no_freeze_said_once(gc_state, capsys):
    assert not compat.tune_gc_for_planning(types.SimpleNamespace())
    assert not compat.tune_gc_for_planning(types.SimpleNamespace())
    assert gc.get_threshold()[2] >= 1000 and gc_state == []
    assert _reports(capsys.readouterr().err, "tune_gc_for_planning") == 1


# --------------------------------------------------------------------------------------
# defer_sigterm_handler
# --------------------------------------------------------------------------------------
def test_sigterm_arriving_while_the_main_thread_holds_the_lock_is_handled():
    lock = threading.Lock()  # the scheduler's: a plain lock, as Snakemake 9's
    handled = threading.Event()

    def exit_gracefully(signum, frame):  # what Snakemake's handler does first
        with lock:
            handled.set()

    before = signal.signal(signal.SIGTERM, exit_gracefully)
    try:
        assert compat.defer_sigterm_handler()
        assert not compat.defer_sigterm_handler()  # once is enough
        with lock:  # the main thread selecting jobs; run here, the handler would deadlock
            signal.raise_signal(signal.SIGTERM)
            assert not handled.wait(0.2)  # waits for the lock
        assert handled.wait(10)
    finally:
        signal.signal(signal.SIGTERM, before)


def test_without_a_python_handler_nothing_changes_and_it_is_said_once(capsys):
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert not compat.defer_sigterm_handler()
        assert not compat.defer_sigterm_handler()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)
    assert _reports(capsys.readouterr().err, "defer_sigterm_handler") == 1


@pytest.mark.slow
def test_snakemake_stops_on_sigterm_while_it_schedules(tmp_path):
    """A real Snakemake run of many instant jobs (its main thread mostly selecting and
    finishing jobs, under the scheduler's lock) stopped by SIGTERM, as the Snakefile's
    onstart sets it up: it exits and removes its lock.  Without the hook it hung, every
    time in three tries here, until SIGKILL."""
    (tmp_path / "Snakefile").write_text(
        "from hklflow.planning.snakemake_compat import defer_sigterm_handler\n\n"
        "onstart:\n    defer_sigterm_handler()\n\n"
        "rule all:\n    input: expand('out/{i}.txt', i=range(3000))\n\n"
        "rule one:\n    output: 'out/{i}.txt'\n    shell: 'touch {output}'\n")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "-q"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "out").is_dir() or len(list((tmp_path / "out").iterdir())) < 20:
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("snakemake hung after SIGTERM")
    assert len(list((tmp_path / "out").iterdir())) < 3000  # stopped, not finished
    locks = tmp_path / ".snakemake" / "locks"
    assert not locks.is_dir() or not any(locks.iterdir())


# --------------------------------------------------------------------------------------
# Look-ups of the workflow's settings
# --------------------------------------------------------------------------------------
def test_command_line_config_files_are_read_from_snakemakes_settings(capsys, tmp_path):
    from snakemake.settings.types import ConfigSettings

    files = [tmp_path / "a.yaml", tmp_path / "b c.yaml"]
    for f in files:
        f.write_text("x: 1\n")
    workflow = types.SimpleNamespace(config_settings=ConfigSettings(configfiles=files))
    assert compat.command_line_configfiles(workflow) == [str(f) for f in files]
    assert compat.command_line_configfiles(types.SimpleNamespace()) is None
    assert compat.command_line_configfiles(types.SimpleNamespace()) is None
    assert _reports(capsys.readouterr().err, "command_line_configfiles") == 1


def test_cluster_groups_are_read_from_snakemakes_settings(capsys):
    from snakemake.settings.types import GroupSettings

    groups = {"index_parent": "temperature_{temperature}"}
    workflow = types.SimpleNamespace(group_settings=GroupSettings(overwrite_groups=groups))
    assert compat.cluster_groups(workflow) == groups
    assert compat.cluster_groups(types.SimpleNamespace(group_settings=None)) == {}
    assert "Snakemake hook" not in capsys.readouterr().err
    for _ in range(2):
        assert compat.cluster_groups(types.SimpleNamespace()) == {}
    assert _reports(capsys.readouterr().err, "cluster_groups") == 1


def test_a_lock_left_is_seen_where_snakemake_writes_it(tmp_path, capsys):
    """Snakemake's own file persistence locks a folder; the look-up sees its lock, and none
    once it is gone (a real run's lock and --unlock: tests/plugins/test_logger_plugin.py)."""
    from snakemake.persistence.file import FilePersistence

    assert not compat.lock_left(tmp_path)  # (no .snakemake at all)
    store = FilePersistence(path=tmp_path / ".snakemake")
    assert not compat.lock_left(tmp_path)
    store._write_locks("output", ["results/s/grid.json"])
    assert compat.lock_left(tmp_path)
    store._delete_locks()
    assert not compat.lock_left(tmp_path)
    assert "Snakemake hook" not in capsys.readouterr().err


def test_locks_kept_elsewhere_are_not_looked_for_said_once(tmp_path, monkeypatch, capsys):
    from snakemake.persistence.file import FilePersistence

    monkeypatch.setattr(FilePersistence, "_write_locks", lambda self, kind, keys: None)
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.output.lock").write_text("x\n")
    for _ in range(2):
        assert not compat.lock_left(tmp_path)  # (the watcher unlocks after a refused run)
    assert _reports(capsys.readouterr().err, "lock_left") == 1


# --------------------------------------------------------------------------------------
# Switched off, and the whole workflow with a hook gone
# --------------------------------------------------------------------------------------
def test_hooks_switched_off_install_nothing_and_say_nothing(monkeypatch, capsys, gc_state):
    monkeypatch.setenv("HKLFLOW_SNAKEMAKE_HOOKS", "0")
    before = gc.get_threshold()

    def f(wildcards):
        return 1

    compat.known_parameters(f)
    assert not hasattr(f, "_overwrite_params")
    assert not compat.tune_gc_for_planning(_Workflow(True)) and gc.get_threshold() == before
    assert not compat.record_resource_evaluate_parameters()
    assert not compat.format_shell_command_once_per_print()
    handler = signal.getsignal(signal.SIGTERM)
    assert not compat.defer_sigterm_handler() and signal.getsignal(signal.SIGTERM) is handler
    assert capsys.readouterr().err == ""


# the workflow's dry run with Snakemake's parameter look-up changed under it, as an upgrade
# that drops `_overwrite_params` would
_LOOKUP_GONE = ("import sys, snakemake.common as c\n"
                "c.FUNC_OVERWRITE_PARAMS_ATTR = '_renamed_by_a_test'\n"
                "from snakemake.cli import main\n"
                "sys.exit(main(sys.argv[1:]))\n")


def _shell_commands(output: str) -> list[str]:
    commands = sorted(line for line in output.splitlines() if line.startswith("Shell command:"))
    assert commands
    return commands


def test_the_workflow_plans_the_same_jobs_with_hooks_on_off_or_broken(tiny_copy):
    """The tiny experiment's dry run: the hooks report nothing with the installed Snakemake;
    switched off, or with the parameter look-up gone (reported once), the plan is the same."""
    on = run_snakemake(tiny_copy, "-n", "--cores", "1")
    assert on.returncode == 0, on.stderr[-3000:]
    assert "Snakemake hook" not in on.stdout + on.stderr
    expected = planned_jobs(on.stdout + on.stderr)
    assert len(expected) > 30

    env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
    off = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                          "--directory", str(tiny_copy), "-n", "--cores", "1"],
                         capture_output=True, text=True, timeout=600,
                         env=dict(env, HKLFLOW_SNAKEMAKE_HOOKS="0"))
    assert off.returncode == 0, off.stderr[-3000:]
    assert "Snakemake hook" not in off.stdout + off.stderr
    assert planned_jobs(off.stdout + off.stderr) == expected
    assert _shell_commands(off.stdout + off.stderr) == _shell_commands(on.stdout + on.stderr)

    broken = subprocess.run([sys.executable, "-c", _LOOKUP_GONE, "--snakefile",
                             str(REPO / "Snakefile"), "--directory", str(tiny_copy), "-n",
                             "--cores", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert broken.returncode == 0, broken.stderr[-3000:]
    assert _reports(broken.stdout + broken.stderr, "known_parameters") == 1
    assert planned_jobs(broken.stdout + broken.stderr) == expected


@pytest.mark.parametrize("where", ["parse", "input function"])
def test_a_plan_stopped_by_hklflow_shows_its_message_and_nothing_of_snakemakes(tmp_path, where):
    """stop_plan: Snakemake ends on its SystemExit with status 1 and adds no frame of its
    own (a WorkflowError would come as 'WorkflowError in file ..., line ...' or an
    InputFunctionException with a traceback)."""
    stop = ("snakemake_compat.stop_plan('config/scans.tsv: row 3 (s/1K/f1): field \\'data\\': "
            "no file matches')")
    parse, function = (stop, "[]") if where == "parse" else ("", stop)
    (tmp_path / "Snakefile").write_text(
        "from hklflow.planning import snakemake_compat\n"
        f"{parse}\n"
        f"def inputs(w):\n    return {function}\n"
        "rule all:\n    input: 'a.txt'\n"
        "rule a:\n    input: inputs\n    output: 'a.txt'\n    shell: 'touch {output}'\n")
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[-2:] == ["hklflow: config/scans.tsv: row 3 (s/1K/f1): field 'data': no file "
                          "matches", compat.STOPPED_PLAN], out
    for frame in ("WorkflowError", "Traceback", "InputFunctionException"):
        assert frame not in out, out
