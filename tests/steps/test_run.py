"""hklflow.steps._run.run_step: a step runs its BLAS/OpenMP libraries and numba's parallel
loops on its --threads (1 without the option), not on every core, and puts the settings
back after; it keeps the memory it frees.  hklflow.commands.cli.main: a command's process imports
its step without garbage collection and freezes what the imports made, and a step's process
ends without the interpreter's teardown once its HDF5 files are closed.  A step reads its
settings from the file the workflow wrote, named by their digest, or inline JSON."""
from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numba
import numpy as np
import pytest
import scipy.sparse.linalg  # noqa: F401 - scipy's OpenBLAS loaded, as in delta_pdf
from threadpoolctl import threadpool_info

from hklflow.steps._run import StepParser, run_step


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def _threads() -> tuple[list[int], int]:
    return _blas_threads(), numba.get_num_threads()


def _probe(with_threads: bool, seen: list):
    parser = StepParser("probe", "records the BLAS threads it runs on")
    if with_threads:
        parser.add_threads()
    return parser, lambda args, log: seen.append(_threads())


@pytest.mark.parametrize("with_threads, argv", [(True, []), (True, ["--threads", "1"]),
                                                (False, [])])
def test_step_runs_blas_on_one_thread_and_puts_the_setting_back(with_threads, argv):
    before = _threads()
    if not before[0] or max(before[0]) < 2 or before[1] < 2:
        pytest.skip("BLAS or numba run on one thread here anyway: nothing to tell apart")
    seen = []
    assert run_step(*_probe(with_threads, seen), argv) == 0
    assert seen == [([1] * len(before[0]), 1)]
    assert _threads() == before


def test_step_given_two_threads_runs_numba_on_two_and_blas_on_one():
    """BLAS stays on one thread: hklflow's matrix products are small or tall and skinny,
    where OpenBLAS's threads only spin."""
    before = _threads()
    if not before[0] or max(before[0]) < 2 or before[1] < 2:
        pytest.skip("fewer than 2 threads possible here")
    seen = []
    assert run_step(*_probe(True, seen), ["--threads", "2"]) == 0
    assert seen == [([1] * len(before[0]), 2)]
    assert _threads() == before


def test_a_step_logs_what_it_used_last_with_its_system_share(capsys, tmp_path):
    """The `resources:` line bench/pipeline.py reads: CPU of the process with its start,
    of its children, wall time, peak memory, and the system (kernel) share of the CPU,
    which a step that makes fresh memory and writes a file cannot have at 0."""
    import re

    def work(args, log):
        data = np.ones(50_000_000, np.float32)  # 200 MB of fresh pages: page faults
        (tmp_path / "out.bin").write_bytes(data.tobytes())

    assert run_step(StepParser("probe", "makes memory and writes a file"), work, []) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1].split("INFO: ", 1)[-1]
    found = re.fullmatch(r"resources: cpu_s=([\d.]+) start_cpu_s=([\d.]+) "
                         r"children_cpu_s=([\d.]+) wall_s=([\d.]+) peak_rss_mb=(\d+) "
                         r"system_cpu_s=([\d.]+)", line)
    assert found, line
    cpu, start, children, _wall, peak, system = (float(v) for v in found.groups())
    # system: of the process and its children (in a long-lived test process the children
    # of earlier tests may have more than the process itself)
    assert 0 < system <= cpu + children and start <= cpu
    assert peak >= 200


@pytest.fixture
def hooks_restored(monkeypatch):
    """A step that ends on a full disk leaves its process deaf to `Exception ignored`: this
    test process is not."""
    from hklflow.steps import _run

    # (the interpreter's own hook, not pytest's, which turns what it is given into warnings)
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(_run, "ENDED_ON_FULL_DISK", False)


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_full_disk_is_one_line_naming_the_folder(capsys, tmp_path, wrapped, hooks_restored):
    """No space left (the OS's error, or wrapped by a library as HDF5 does) is one line that
    names the folder of the step's outputs, not "a bug" with a traceback; the outputs go."""
    import errno

    def work(args, log):
        args.out.write_text("half written")
        full = OSError(errno.ENOSPC, "No space left on device")
        if not wrapped:
            raise full
        try:
            raise full
        except OSError as exc:
            raise RuntimeError("Can't write data (file write failed)") from exc

    parser = StepParser("probe", "fills the disk")
    parser.add_output("--out", "a file")
    out = tmp_path / "results" / "out.nxs"
    out.parent.mkdir()
    assert run_step(parser, work, ["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"probe failed: no space left on the device holding {out.parent}" in err
    assert "bug" not in err and "Traceback" not in err
    assert not out.exists()


class _H5Object:
    """Stands for an h5py object of a file on a full disk: freeing it fails to flush."""

    def __del__(self):
        raise OSError(28, "Driver write request failed (file write failed: errno = 28, "
                          "error message = 'No space left on device')")


def test_a_full_disk_is_one_line_not_60_h5py_tracebacks(capsys, tmp_path, hooks_restored):
    """h5py's objects of a file cut short by a full disk fail to flush as they are freed,
    each an `Exception ignored in: ...` traceback (about 60 before the one useful line,
    issue 86): none is printed, during the step or after it, and the line names the file
    being written and the free space."""
    import errno
    import gc

    from hklflow.base.atomic import atomic_path

    def work(args, log):
        objects = [_H5Object() for _ in range(60)]  # freed as the error unwinds
        log.info("%d objects of the file", len(objects))
        with atomic_path(args.out) as tmp:
            tmp.write_text("half written")
            cycle = [_H5Object()]
            cycle.append(cycle)  # (one freed later, by the garbage collector)
            raise OSError(errno.ENOSPC, "No space left on device")

    parser = StepParser("probe", "fills the disk")
    parser.add_output("--out", "a file")
    out = tmp_path / "results" / "volume.nxs"
    assert run_step(parser, work, ["--out", str(out)]) == 1
    gc.collect()
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and "Traceback" not in err, err
    line, = [ln for ln in err.splitlines() if "ERROR" in ln]
    assert len(err.splitlines()) <= 3, err  # (with the INFO lines: 60 objects, the output gone)
    assert (f"probe failed: no space left on the device holding {out.parent} (writing {out}; "
            in line and " MB free now): expected room for the step's outputs" in line), line
    assert not out.exists() and not list(out.parent.iterdir())
    # its row of docs/bad-inputs.md says so
    from conftest import REPO

    row = next(ln for ln in (REPO / "docs/bad-inputs.md").read_text().splitlines()
               if ln.startswith("| a full disk"))
    assert "h5py `Exception ignored in: ...` tracebacks" in row
    assert (" MB free now): expected room for the step's outputs: free some space, then run "
            "again (what is done is kept)`") in row


def test_a_really_full_disk_is_one_line(tmp_path):
    """The same on a real full disk (a 2 MB tmpfs, where this test may mount one), through
    h5py and nexusformat, in a step's own process: one line, status 1 (closing what h5py
    left open at the interpreter's exit used to crash it: status 139)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("no tmpfs can be mounted here (not root)")
    try:
        (tmp_path / "fill.py").write_text(
            "import numpy as np\n"
            "from hklflow.files.h5 import nexus, write_nexus_atomically\n"
            "from hklflow.steps._run import StepParser, run_step\n"
            "def run(args, log):\n"
            "    nx = nexus()\n"
            "    root = nx.NXroot(nx.NXentry())\n"
            "    for i in range(20):  # (random: 40 MB whatever the compression)\n"
            "        v = nx.NXfield(np.random.rand(64, 64, 64), name='v')\n"
            "        root['entry'][f'd{i}'] = nx.NXdata(v)\n"
            "    write_nexus_atomically(root, args.out)\n"
            "def main(argv=None):\n"
            "    p = StepParser('fill', 'fills the disk')\n"
            "    p.add_output('--out', 'a file')\n"
            "    return run_step(p, run, argv)\n")
        code = ("import sys\n"
                "import hklflow.commands.cli as cli\n"
                "cli.COMMANDS['fill'] = ('fill:main', 'fills the disk')\n"
                "cli.STEPS = cli.STEPS | {'fill'}\n"
                "sys.argv = ['hklflow', 'fill', '--out', sys.argv[1]]\n"
                "sys.exit(cli.main())\n")
        out = disk / "volume.nxs"
        r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
        assert r.returncode == 1, r.stderr[-3000:]
        line, = r.stderr.splitlines()
        assert f"fill failed: no space left on the device holding {disk} (writing {out};" in line
        assert not list(disk.iterdir())
    finally:
        subprocess.run(["umount", str(disk)])


def test_what_is_ignored_in_a_step_that_does_not_fill_the_disk_is_shown(capsys, tmp_path,
                                                                        hooks_restored):
    """Elsewhere an `Exception ignored` may be a bug: shown when the step ends."""
    class Leaky:
        def __del__(self):
            raise ValueError("a bug in a __del__")

    def work(args, log):
        Leaky()

    parser = StepParser("probe", "works")
    assert run_step(parser, work, []) == 0
    err = capsys.readouterr().err
    assert "Exception ignored in" in err and "ValueError: a bug in a __del__" in err
    assert sys.unraisablehook is sys.__unraisablehook__  # (put back)


def test_the_next_run_of_a_step_removes_what_a_killed_one_left(tmp_path, capsys):
    """A write killed by SIGKILL leaves its hidden temporary file (issue 71); the next run of
    the step that writes that output removes it, and leaves a live writer's alone."""
    import os
    import subprocess
    import sys

    from hklflow.base.atomic import HOST, atomic_path

    out = tmp_path / "volume.nxs"
    killed = subprocess.run([sys.executable, "-c", f"""
import os, signal
from hklflow.base.atomic import atomic_path
with atomic_path({str(out)!r}) as tmp:
    tmp.write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)
"""])
    assert killed.returncode == -9
    left = list(tmp_path.glob(".volume.nxs.*.tmp"))
    assert len(left) == 1
    live = tmp_path / f".volume.nxs.{os.getpid()}@{HOST}.0123456789ab.tmp"
    live.write_bytes(b"being written")
    other = tmp_path / ".other.nxs.1@elsewhere.0123456789ab.tmp"
    other.write_bytes(b"another output's")

    def work(args, log):
        with atomic_path(args.out) as tmp:
            tmp.write_bytes(b"whole")

    parser = StepParser("probe", "writes a file")
    parser.add_output("--out", "a file")
    assert run_step(parser, work, ["--out", str(out)]) == 0
    assert not left[0].exists() and live.exists() and other.exists()
    assert out.read_bytes() == b"whole"
    assert f"removed {left[0]} (left by a run that was killed)" in capsys.readouterr().err


def _settings_probe(seen: list):
    parser = StepParser("probe", "records the settings it was given")
    parser.add_settings()
    return parser, lambda args, log: seen.append(args.settings)


def test_a_step_reads_its_settings_from_the_file_the_workflow_wrote(tmp_path, monkeypatch):
    """The workflow's commands name a settings file (hklflow.planning.jobs.SettingsFiles); a test or a
    person may give the same JSON inline: both give the step the same settings."""
    from hklflow.planning.jobs import SettingsFiles

    text = '{"mask":{"radius_px":3.0},"name":"x"}'
    monkeypatch.chdir(tmp_path)
    path = SettingsFiles().path(text)
    assert path.startswith(".snakemake/hklflow/settings/") and path.endswith(".json")
    assert SettingsFiles().path(text) == path  # the same text, the same file
    assert SettingsFiles().path(text.replace("3.0", "4.0")) != path
    seen = []
    assert run_step(*_settings_probe(seen), ["--settings-file", path]) == 0
    assert run_step(*_settings_probe(seen), ["--settings", text]) == 0
    assert seen == [{"mask": {"radius_px": 3.0}, "name": "x"}] * 2


def test_a_settings_file_changed_after_it_was_written_is_refused(tmp_path, monkeypatch, capsys):
    """Its name is the digest of its text: a file edited by hand no longer says which
    settings the job ran with, and the step stops with a line that says so."""
    from hklflow.planning.jobs import SettingsFiles

    monkeypatch.chdir(tmp_path)
    path = SettingsFiles().path('{"a":1}')
    (tmp_path / path).write_text('{"a":2}')
    seen = []
    assert run_step(*_settings_probe(seen), ["--settings-file", path]) == 1
    assert seen == []
    err = capsys.readouterr().err
    assert "does not match its name" in err and path in err
    (tmp_path / path).unlink()  # a command copied without its file
    assert run_step(*_settings_probe(seen), ["--settings-file", path]) == 1
    err = capsys.readouterr().err
    assert "no such file" in err and path in err and seen == []


def test_a_step_given_no_settings_or_both_stops_with_usage(capsys):
    for argv in ([], ["--settings", "{}", "--settings-file", "x.json"]):
        with pytest.raises(SystemExit) as stop:
            run_step(*_settings_probe([]), argv)
        assert stop.value.code == 2
    assert "--settings" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_step_reuses_the_memory_it_freed_without_page_faults():
    """After keep_freed_memory (run_step calls it), an array made after a volume-sized one
    was freed takes the same pages: (nearly) no page faults where glibc's default mapping
    faults in every page again.  Each in a process of its own (it changes malloc)."""
    probe = ("import resource, sys, numpy as np\n"
             "from hklflow.steps._run import keep_freed_memory\n"
             "kept = keep_freed_memory() if sys.argv[1] == 'keep' else None\n"
             "a = np.ones(50_000_000, np.float32); del a\n"
             "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
             "b = np.ones(50_000_000, np.float32)\n"
             "print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    out = {mode: subprocess.run([sys.executable, "-c", probe, mode], capture_output=True,
                                text=True, check=True).stdout.split()
           for mode in ("keep", "default")}
    assert out["keep"][0] == "True"
    faults = {mode: int(v[1]) for mode, v in out.items()}
    assert faults["default"] >= 50  # 200 MB in 4 KiB or 2 MiB pages
    assert faults["keep"] <= faults["default"] // 10


def test_a_command_process_runs_its_step_with_the_imports_frozen_out_of_gc(tmp_path):
    """`hklflow COMMAND` (its own process): the step module is imported with the garbage
    collector off, then runs with it on and the objects of its imports frozen (left out of
    every collection); called in-process with argv, main changes nothing of gc."""
    probe = tmp_path / "gc_probe.py"
    probe.write_text("import gc\n"
                     "import numpy\n"
                     "SEEN = gc.isenabled()\n"
                     "TRACKED = len(gc.get_objects())\n"
                     "def main(argv):\n"
                     "    print('import', SEEN, 'run', gc.isenabled(),\n"
                     "          gc.get_freeze_count() >= 0.9 * TRACKED, gc.get_freeze_count(), TRACKED)\n"
                     "    return 3\n")
    code = ("import gc, sys\n"
            "import hklflow.commands.cli as cli\n"
            "cli.COMMANDS['gc_probe'] = ('gc_probe:main', 'prints what gc was doing')\n"
            "if sys.argv[1] == 'process':\n"
            "    sys.argv = ['hklflow', 'gc_probe']\n"
            "    sys.exit(cli.main())\n"
            "rc = cli.main(['gc_probe'])\n"
            "print('after', gc.isenabled(), gc.get_freeze_count())\n"
            "sys.exit(rc)\n")
    for how in ("process", "in_process"):
        r = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                           cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": ""},
                           timeout=300)
        assert r.returncode == 3, r.stderr
        words = r.stdout.split()
        if how == "process":  # every object of the imports frozen
            assert words[:5] == ["import", "False", "run", "True", "True"]
        else:
            assert words[:6] == ["import", "True", "run", "True", "False", "0"]
            assert words[7:] == ["after", "True", "0"]


def test_a_step_process_starts_no_blas_threads(tmp_path):
    """`hklflow STEP` (its own process) tells OpenBLAS one thread before numpy loads: no
    worker threads spinning after the imports (0.1 CPU-s each), the process's only thread
    its own; a command that is not a step (demo, run) leaves the environment alone."""
    probe = tmp_path / "blas_probe.py"
    probe.write_text("import os\n"
                     "import numpy, scipy.linalg\n"
                     "from threadpoolctl import threadpool_info\n"
                     "def main(argv):\n"
                     "    blas = {i['num_threads'] for i in threadpool_info()\n"
                     "            if i['user_api'] == 'blas'}\n"
                     "    print(sorted(blas), len(os.listdir('/proc/self/task')),\n"
                     "          os.environ.get('OPENBLAS_NUM_THREADS'), flush=True)\n"
                     "    return 0\n")
    code = ("import sys\n"
            "import hklflow.commands.cli as cli\n"
            "cli.COMMANDS['blas_probe'] = ('blas_probe:main', 'how many BLAS threads')\n"
            "if sys.argv[1] == 'step':\n"
            "    cli.STEPS = cli.STEPS | {'blas_probe'}\n"
            "sys.argv = ['hklflow', 'blas_probe']\n"
            "sys.exit(cli.main())\n")
    out = {}
    for how in ("step", "command"):
        r = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                           cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": ""},
                           timeout=300)
        assert r.returncode == 0, r.stderr
        out[how] = r.stdout.split()
    assert out["step"] == ["[1]", "1", "1"]
    assert out["command"][-1] == "None"


def test_a_step_process_ends_without_teardown_only_once_its_hdf5_files_are_closed(tmp_path):
    """`hklflow STEP` (its own process) ends at once when the step returns (no exit handlers,
    no teardown), with its status, its log and its buffered output written; while an HDF5
    object is still open it exits normally, which closes the file complete, and so it does
    under a profiler.  A command that is not a step, and main called in-process, return as
    before."""
    probe = tmp_path / "h5_probe.py"
    probe.write_text("import atexit, logging, sys\n"
                     "import h5py, numpy\n"
                     "KEEP = []\n"
                     "def main(argv):\n"
                     "    atexit.register(lambda: print('teardown', flush=True))\n"
                     "    f = h5py.File(argv[1], 'w')\n"
                     "    f['data'] = numpy.arange(1000.0)\n"
                     "    if argv[0] == 'left_open':\n"
                     "        KEEP.append(f)  # written, not closed: the normal exit closes it\n"
                     "    else:\n"
                     "        f.close()\n"
                     "    logging.getLogger('probe').warning('logged')\n"
                     "    sys.stdout.write('written ')  # a pipe: buffered, not yet flushed\n"
                     "    return 4\n")
    code = ("import sys\n"
            "import hklflow.commands.cli as cli\n"
            "cli.COMMANDS['h5_probe'] = ('h5_probe:main', 'writes an HDF5 file')\n"
            "if sys.argv[1] != 'not_a_step':\n"
            "    cli.STEPS = cli.STEPS | {'h5_probe'}\n"
            "if sys.argv[1] == 'profiled':  # cProfile, coverage: their data at exit\n"
            "    sys.setprofile(lambda *args: None)\n"
            "if sys.argv[1] == 'in_process':\n"
            "    print('returned', cli.main(['h5_probe', 'closed', sys.argv[2]]))\n"
            "    sys.exit(0)\n"
            "sys.argv = ['hklflow', 'h5_probe', sys.argv[1], sys.argv[2]]\n"
            "sys.exit(cli.main())\n")
    expected = {"closed": (4, "written"), "left_open": (4, "written teardown"),
                "not_a_step": (4, "written teardown"), "profiled": (4, "written teardown"),
                "in_process": (0, "written returned 4 teardown")}
    for how, (status, out) in expected.items():
        path = tmp_path / f"{how}.h5"
        r = subprocess.run([sys.executable, "-c", code, how, str(path)], capture_output=True,
                           text=True, cwd=tmp_path, timeout=300,
                           env={"PYTHONPATH": str(tmp_path), "PATH": ""})
        assert (r.returncode, " ".join(r.stdout.split())) == (status, out), (how, r.stderr)
        assert "logged" in r.stderr
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["data"][()], np.arange(1000.0))


def test_a_step_imports_no_library_it_does_not_use():
    """A job's start is the imports of its step: no step imports jsonschema, nor YAML but
    through numba's config (the config is validated by the workflow; a step gets its
    settings as JSON), and numba (~0.3 CPU-s) is imported with the step only where its
    module compiles kernels; the others load it at their first compiled call, if they
    make one (merge and symmetrise do; calibration, indexing, pictures of volumes, a
    chunk moved into place do not)."""
    light = ("calibrate_powder", "ingest_scan", "define_grid", "index_parent",
             "refine_temperature", "sum_chunks", "merge_entries", "symmetrize",
             "temperature_series", "pdf_temperature_series", "nxrefine_wrapper")
    heavy = ("find_peaks", "mask_scan", "transform_frames", "total_pdf", "delta_pdf")
    code = ("import importlib, sys\n"
            "for step in sys.argv[1:]:\n"
            "    importlib.import_module('hklflow.steps.' + step)\n"
            "print(*(m in sys.modules for m in ('jsonschema', 'yaml', 'numba')))\n")
    seen = {}
    for group in (light, heavy):
        r = subprocess.run([sys.executable, "-c", code, *group], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        seen[group] = r.stdout.split()
    assert seen[light] == ["False", "False", "False"]
    assert seen[heavy][0] == "False" and seen[heavy][2] == "True"


@pytest.mark.parametrize("step, deferred", [
    ("sum_chunks", ("scipy.ndimage", "hklflow.algorithms.merge.background")),  # a background's
    ("total_pdf", ("scipy.sparse", "hklflow.algorithms.pdf.fill")),  # the DeltaPDF's fill
    ("transform_frames", ("matplotlib",)),  # draws nothing; labels previews only
    ("calibrate_powder", ("matplotlib",)),  # a calibration reused draws nothing
])
def test_a_step_imports_what_only_some_of_its_runs_use_when_they_use_it(step, deferred):
    """What only a branch of a step uses is imported in that branch, not with the step:
    every job of the step would pay for it at its start (bench/startup.py)."""
    code = (f"import sys, hklflow.commands.cli, hklflow.steps.{step}\n"
            f"print(*(m in sys.modules for m in {deferred!r}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False"] * len(deferred)
