"""The `hklflow` command: one subcommand per step (each a module with main(argv))."""
from __future__ import annotations

import gc
import importlib
import logging
import os
import shlex
import sys

from .. import __version__

# command -> (module:function(argv), what it does).  The workflow's rules run the step
# commands; a rule, its command, its module hklflow/steps/<name>.py and its test
# tests/test_<name>.py share one name (docs/map.md).
COMMANDS = {
    "calibrate_powder": ("hklflow.steps.calibrate_powder:main", "refine the detector geometry from a calibrant image, or import a PONI"),
    "ingest_scan": ("hklflow.steps.ingest_scan:main", "build the NeXus file of one scan entry, linking its raw frames"),
    "find_peaks": ("hklflow.steps.find_peaks:main", "one streamed pass over a scan: frame statistics and 3D Bragg peaks"),
    "index_parent": ("hklflow.steps.index_parent:main", "index a sample's parent scan from scratch and refine it"),
    "refine_detector": ("hklflow.steps.refine_detector:main", "refine the detector a sample's temperatures share on all of them together"),
    "refine_temperature": ("hklflow.steps.refine_temperature:main", "refine a sample at one temperature, starting from its parent"),
    "orientation_table": ("hklflow.steps.orientation_table:main", "every temperature's cell, esd and residuals beside the shared detector"),
    "experiment_page": ("hklflow.steps.experiment_page:main", "the whole experiment on one page, results/report.html"),
    "define_grid": ("hklflow.steps.define_grid:main", "the (H, K, L) grid of a sample, from the config or the cell and Q range"),
    "mask_scan": ("hklflow.steps.mask_scan:main", "pixel mask and 3D Bragg-peak mask of a scan entry"),
    "transform_frames": ("hklflow.steps.transform_frames:main", "map frames of a scan entry to (H, K, L) and accumulate them on the grid"),
    "transform_background": ("hklflow.steps.transform_background:main", "transform the background a scan entry names on its grid, in its units"),
    "sum_chunks": ("hklflow.steps.sum_chunks:main", "the volume of a scan entry: the sum of its frame chunks"),
    "scale_entries": ("hklflow.steps.scale_entries:main", "the scales of a temperature's entries, fitted on Laue-equivalent voxels"),
    "merge_entries": ("hklflow.steps.merge_entries:main", "the volume of a sample at one temperature: its entries merged"),
    "symmetrize": ("hklflow.steps.symmetrize:main", "symmetrise a merged volume by the Laue group"),
    "temperature_series": ("hklflow.steps.temperature_series:main", "one slice of a sample's volume at every temperature"),
    "model_inputs": ("hklflow.steps.model_inputs:main", "the files modelling programs read (Yell, rmc-discord) of a merged or symmetrised volume"),
    "nxrefine_wrapper": ("hklflow.steps.nxrefine_wrapper:main", "NXRefine's wrapper file of a sample at one temperature, linking hklflow's results"),
    "total_pdf": ("hklflow.steps.total_pdf:main", "the total PDF of a sample at one temperature (tapered FFT of its volume)"),
    "delta_pdf": ("hklflow.steps.delta_pdf:main", "the 3D-DeltaPDF: reflections punched and filled, then tapered FFT"),
    "pdf_temperature_series": ("hklflow.steps.pdf_temperature_series:main", "one plane of a sample's DeltaPDF at every temperature"),
    "cut_temperature_series": ("hklflow.steps.cut_temperature_series:main", "a line cut of a sample (output.cuts) at every temperature in one picture"),
    # not rules:
    "init": ("hklflow.commands.init:main", "a commented config and scans table for a new experiment"),
    "import": ("hklflow.commands.importing:main", "an experiment from another program's records (import nxrefine SOURCE DEST, import spec SPECFILE DEST ...), its raw data referenced"),
    "simulate": ("hklflow.simulation.cli:main", "write a simulated experiment (config, scans table, raw data, truth)"),
    "demo": ("hklflow.commands.run:main", "simulate the demo experiment if absent, then reduce it"),
    "run": ("hklflow.commands.run:run_main", "reduce an experiment directory with the installed workflow (snakemake)"),
    "workflow-path": ("hklflow.commands.run:workflow_path_main", "print the path of the installed workflow's Snakefile"),
    "watch": ("hklflow.live.watch:main", "reduce an experiment while its scans are being collected (previews, then final results)"),
    "status": ("hklflow.live.status:main", "where every scan of a watched experiment stands (frames, stage, lag, errors)"),
    "cut": ("hklflow.steps.cut:main", "a line or plane through a volume at any angle, in r.l.u.: NeXus NXdata and a PNG"),
}


# the commands of the workflow's rules: hklflow/steps/<name>.py
STEPS = frozenset(name for name, (target, _) in COMMANDS.items()
                  if target.startswith("hklflow.steps."))


# the options of the commands that start snakemake (hklflow.commands.run): name -> whether it takes
# a value.  Snakemake's own arguments go after `--`.
_OWN_OPTIONS = {"run": {"-h": False, "--help": False, "--cores": True, "--verbose": False,
                        "--set-aside-gone": False},
                "demo": {"-h": False, "--help": False, "--dir": True, "--cores": True,
                         "--verbose": False}}


def _own_option(name: str, arg: str) -> str | None:
    """The option of `hklflow NAME` that ARG is (argparse takes unique prefixes of long
    options, and --opt=value), else None."""
    opt = arg.split("=", 1)[0] if arg.startswith("--") else arg
    matches = [o for o in _OWN_OPTIONS[name]
               if o == opt or (opt.startswith("--") and len(opt) > 2 and o.startswith(opt))]
    return matches[0] if len(matches) == 1 else None


def misplaced_snakemake_arguments(name: str, args: list[str]) -> str | None:
    """`hklflow run EXP -n`: arguments before `--` that are not hklflow's (Snakemake's
    options, or targets) get a message that shows where they go, instead of argparse's
    'unrecognized arguments'; None when there are none (or help is asked for)."""
    split = args.index("--") if "--" in args else len(args)
    before, after = args[:split], args[split + 1:]
    if any(_own_option(name, a) == o for a in before for o in ("-h", "--help")):
        return None
    positional = [a for a in before if not a.startswith("-")]
    # hklflow run's experiment directory: the first that is one, else the first positional
    experiment = next((a for a in positional if os.path.isdir(a)),
                      positional[0] if positional else None) if name == "run" else None
    own, theirs, i = [], [], 0
    while i < len(before):
        a = before[i]
        option = _own_option(name, a) if a.startswith("-") else None
        if option is not None:
            takes_value = _OWN_OPTIONS[name][option] and "=" not in a
            own += before[i:i + 1 + takes_value]
            i += 1 + takes_value
            continue
        if a == experiment and experiment not in own:
            own.append(a)
        else:
            theirs.append(a)
        i += 1
    if not theirs:
        return None
    if name == "run" and experiment is None:
        own.insert(0, "EXPDIR")
    again = shlex.join(["hklflow", name, *own, "--", *theirs, *after])
    return (f"unrecognized argument(s) {shlex.join(theirs)}: Snakemake's arguments go after --, "
            f"as in: {again}")


def _run_arguments_problem(name: str, args: list[str]) -> tuple[str, int] | None:
    """What is wrong with the command line of `hklflow run` or `hklflow demo` that would
    otherwise reach the user in Snakemake's words, or not at all: arguments of Snakemake's
    before `--` (status 2), a config file that is not YAML (status 1).  None: nothing."""
    misplaced = misplaced_snakemake_arguments(name, args)
    if misplaced:
        return misplaced, 2
    if name != "run":
        return None
    split = args.index("--") if "--" in args else len(args)
    positional = [a for a in args[:split] if not a.startswith("-")]
    if len(positional) != 1:
        return None  # argparse says what is missing
    files = [os.path.join(positional[0], "config", "config.yaml")]
    after, taking = args[split + 1:], False
    for a in after:  # --configfile FILE [FILE ...] (and --configfiles, --configfile=FILE)
        if a.startswith("-"):
            taking = a in ("--configfile", "--configfiles")
            if a.startswith(("--configfile=", "--configfiles=")):
                files.append(a.split("=", 1)[1])
        elif taking:
            files.append(a)
    # (here: every step job starts in this module; the config is read by run and demo only)
    from ..planning.config import ConfigError, check_yaml_syntax

    try:
        check_yaml_syntax(files)
    except ConfigError as exc:
        return f"invalid configuration: {exc}", 1
    return None


# the commands a user types, in the order of a first hour; the steps are the workflow's
USER_COMMANDS = ("demo", "init", "run", "watch", "status", "cut", "simulate", "workflow-path")


def usage() -> str:
    lines = ["usage: hklflow COMMAND [ARGS...]   (hklflow COMMAND --help for its arguments;",
             "                                     hklflow --version)", "",
             "commands:"]
    lines += [f"  {name:<22} {COMMANDS[name][1]}" for name in USER_COMMANDS]
    lines += ["", "the workflow's steps (each rule of the Snakefile runs one; run them by hand "
              "only to debug):"]
    lines += [f"  {name:<22} {doc}" for name, (_, doc) in COMMANDS.items()
              if name not in USER_COMMANDS]
    return "\n".join(lines)


def main(argv=None) -> int:
    """The command line (argv None: sys.argv, this process being the command)."""
    own_process = argv is None
    if own_process:
        # A step's imports (numpy, h5py, numba, ...) make many objects and no garbage, yet
        # set off the garbage collector hundreds of times, some of them full walks of
        # everything: a share of every job's start (bench/pipeline.py's start_cpu_s).  So
        # none while importing, and what the imports made is kept out of the step's own
        # collections (gc.freeze): it lives as long as the process anyway.
        gc.disable()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"hklflow {__version__}")
        return 0
    name = argv[0] if argv[0] in COMMANDS else argv[0].replace("-", "_")
    if name not in COMMANDS:
        print(f"hklflow: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if own_process and name in STEPS:
        # A step runs BLAS on one thread (steps/_run.threads_limited), and OpenBLAS's
        # worker threads, started when numpy and scipy load, spin before they sleep: CPU
        # time of every job, more with more cores (bench/pipeline.py's start_cpu_s).  Told
        # before numpy loads, OpenBLAS (and MKL) start none.
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
        if os.environ.get("HKLFLOW_WARM_STARTS"):  # (hklflow watch's runs: a warm start)
            from .warm_client import run_warm

            status = run_warm(sys.argv)
            if status is not None:
                return status
    if name in _OWN_OPTIONS:
        problem = _run_arguments_problem(name, argv[1:])
        if problem:
            print(f"hklflow {name}: {problem[0]}", file=sys.stderr)
            return problem[1]
    module, function = COMMANDS[name][0].split(":")
    try:
        command = getattr(importlib.import_module(module), function)
        if own_process:
            gc.freeze()
            gc.enable()
        status = int(command(argv[1:]) or 0)
    except KeyboardInterrupt:
        # Ctrl-C is how a run (and its jobs) is stopped, not a failure: one line, not a
        # traceback (a step has removed its outputs: steps._run.run_step)
        print("interrupted; run again to resume" if name in ("run", "demo")
              else f"hklflow {name}: interrupted", file=sys.stderr, flush=True)
        return 130
    if own_process and name in STEPS:
        exit_without_teardown(status)
    return status


def exit_without_teardown(status: int) -> None:
    """End a step's process now, its outputs written and closed: the interpreter's teardown
    (every module and object freed one by one, the libraries' exit handlers) costs every
    job CPU time and writes nothing.  Returns instead (the normal exit) while an HDF5 file,
    group, dataset or attribute is still open, which that exit closes (not after a step
    ended on a full disk: its outputs are gone, and closing what h5py left open crashed),
    and under a profiler or tracer (cProfile, coverage), which writes its data at exit."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    h5f = getattr(sys.modules.get("h5py"), "h5f", None)
    full = getattr(sys.modules.get("hklflow.steps._run"), "ENDED_ON_FULL_DISK", False)
    if not full and h5f is not None and h5f.get_obj_ids(
            types=h5f.OBJ_FILE | h5f.OBJ_DATASET | h5f.OBJ_GROUP | h5f.OBJ_ATTR):
        return
    logging.shutdown()  # the step's log
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stream: let the normal exit say so
        return
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
