# The experiment (config + scans table), validated once at parse time, and the functions that
# map wildcards to files.  Parsing reads two small text files and nothing else, because every
# cluster job parses the Snakefile again.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from hklflow.config import ConfigError, load_experiment, read_config_files

# the Snakefile's configfile first, then --configfile ones in order (later ones win), as
# Snakemake merges them; workflow.configfiles lists the command-line ones first
_CLI_CONFIG_FILES = [str(p) for p in workflow.config_settings.configfiles]
CONFIG_FILES = [str(p) for p in workflow.configfiles
                if str(p) not in _CLI_CONFIG_FILES] + _CLI_CONFIG_FILES
try:
    _on_disk, _ = read_config_files(CONFIG_FILES)
    if _on_disk != config:
        raise WorkflowError(
            "hklflow reads its settings from the config files only, so that every job sees the "
            "same ones: put the values given with --config into a YAML file and pass it with "
            "--configfile instead")
    EXP = load_experiment(CONFIG_FILES, config=config)
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None

# HDF5 file locking fails on NFS/GPFS; no two hklflow jobs write one file.  Set here because
# every job (local or on a cluster node) parses this file and inherits the environment.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

# how rules call the step command lines: the interpreter running Snakemake has hklflow
HKLFLOW = f"{sys.executable} -m hklflow"
CONFIG_ARGS = " ".join(f"--config {p}" for p in CONFIG_FILES)


wildcard_constraints:
    calibration="[A-Za-z0-9_.-]+",
    sample="[A-Za-z0-9_.-]+",
    temperature=r"[0-9.]+K",
    entry="[A-Za-z0-9_-]+",


def scan_of(wildcards):
    return EXP.scan(wildcards.sample, wildcards.temperature, wildcards.entry)


def calibration_input(wildcards):
    spec = EXP.calibrations[wildcards.calibration]
    return [spec.poni] if spec.poni else [spec.image]


def calibration_poni(wildcards):
    return f"results/calibration/{scan_of(wildcards).calibration}/geometry.poni"


def raw_data_input(wildcards):
    """The raw HDF5 file, or the folder holding a scan's frame files (not every file: a
    3650-frame scan would mean 3650 stat calls per job at parse time)."""
    scan = scan_of(wildcards)
    return str(Path(scan.data).parent) if scan.is_frame_files else scan.data


def scan_path(scan, name):
    return f"results/{scan.sample}/{scan.temperature_label}/{scan.entry}/{name}"


def all_targets():
    targets = [f"results/calibration/{c}/geometry.poni" for c in EXP.calibrations]
    targets += [scan_path(s, "scan.nxs") for s in EXP.scans]
    targets += [scan_path(s, "peaks.nxs") for s in EXP.scans]
    for name in EXP.samples:
        targets += [f"results/{name}/{t}/orientation.nxs" for t in EXP.temperatures_of(name)]
    return targets
