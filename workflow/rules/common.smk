# The experiment (config + scans table), validated once at parse time; the settings every
# job receives (params); the functions that map wildcards to files.  Parsing reads the two
# small text files and lists the raw files, and nothing else, because every cluster job
# parses the Snakefile again.  Snakemake's internals are reached through
# hklflow.planning.snakemake_compat only.
import os
import shlex
import sys
import sysconfig
from pathlib import Path

from snakemake.io import apply_wildcards

import hklflow
from hklflow.files import model_inputs, outputs
from hklflow.files.outputs import fill
from hklflow.planning import disk, snakemake_compat
from hklflow.planning.config import (ConfigError, load_experiment, read_config_files,
                                     set_aside_rows)
from hklflow.planning.live_files import (landed_block_marker, landed_blocks, landed_marker,
                                         provisional_grid, provisional_orientation)
from hklflow.planning.cuts import cut_arguments, cut_spec, cuts_of, is_line
from hklflow.planning.jobs import (JobSettings, SettingsFiles, delta_pdf_files,
                                   model_input_volumes, transform_frame_ranges)
from hklflow.raw.monitors import monitor_file
from hklflow.raw.rawfiles import RawChangeCheck, RawFileOwners, is_hdf5_path, matching_files

snakemake_compat.tune_gc_for_planning(workflow)
snakemake_compat.record_resource_evaluate_parameters()
snakemake_compat.format_shell_command_once_per_print()

# the Snakefile's configfile first, then --configfile ones in order (later ones win), as
# Snakemake merges them; workflow.configfiles lists the command-line ones first
_CLI_CONFIG_FILES = snakemake_compat.command_line_configfiles(workflow) or []
CONFIG_FILES = [str(p) for p in workflow.configfiles
                if str(p) not in _CLI_CONFIG_FILES] + _CLI_CONFIG_FILES
try:
    # read as Snakemake reads them (`007:` is 7) to compare; then as written (`007:` is the
    # name '007') for the experiment
    _as_snakemake_reads, _ = read_config_files(CONFIG_FILES, keys_as_written=False)
    if _as_snakemake_reads != config:
        snakemake_compat.stop_plan(
            "hklflow reads its settings from the config files only, so that every job sees the "
            "same ones: put the values given with --config into a YAML file and pass it with "
            "--configfile instead")
    EXP = load_experiment(CONFIG_FILES)
except ConfigError as exc:
    snakemake_compat.stop_plan(f"invalid configuration: {exc}")
for _warning in EXP.warnings:
    print(f"hklflow: {_warning}", file=sys.stderr)

# HDF5 file locking fails on NFS/GPFS; no two hklflow jobs write one file.  Set here because
# every job (local or on a cluster node) parses this file and inherits the environment.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
# the step commands (`hklflow ...`) are those installed with the interpreter running
# Snakemake, unless a rule's conda environment (--software-deployment-method conda) puts its
# own first
os.environ.update(PATH=os.pathsep.join([sysconfig.get_path("scripts"), os.path.dirname(sys.executable),
                                        os.environ.get("PATH", "")]))
# where envs/hklflow.post-deploy.sh installs hklflow from into a conda environment: this
# source checkout, or (a workflow installed with the wheel) the same version from an index
_SOURCE = Path(workflow.basedir).resolve()
os.environ.setdefault("HKLFLOW_DIST", str(_SOURCE) if (_SOURCE / "pyproject.toml").is_file()
                      else f"hklflow=={hklflow.__version__}")

CONDA_ENV = "../../envs/hklflow.yaml"
DETECTOR = EXP.instrument.detector
# what each job receives through params: settings, the file of its settings text
# (hklflow.planning.jobs.JobSettings, SettingsFiles)
# (the rows hklflow run set aside: named in the notes of the results made without them)
SETTINGS = JobSettings(EXP, set_aside_rows(EXP.scans_table))
_SETTINGS_FILES = SettingsFiles()


def settings_file(text):
    """The file holding a job's settings text, named by its digest (written if new): the
    rules' `params: settings`, which changes exactly when the settings do."""
    return _SETTINGS_FILES.path(text)


# The disk the results will take, said before any job runs (hklflow.planning.disk): by the
# Snakemake the user started, not by each job's, which parses this file again.  Results that
# would not fit stop the run in the Snakefile's onstart, which a dry run never reaches.
DISK = disk.foresee(EXP) if snakemake_compat.is_main_process(workflow) else None
if DISK is not None:
    print(f"hklflow: {DISK.line()}", file=sys.stderr)


def refuse_results_that_do_not_fit():
    """Stop the run before its first job when the results would not fit (onstart)."""
    why = DISK.refusal() if DISK is not None else None
    if why:
        snakemake_compat.stop_plan(why)


TRANSFORM_KINDS = list(EXP.reduction["transform"]["kinds"])
SYMMETRIZE = bool(EXP.reduction["merge"]["symmetrize"])
# scale_entries fits on the masked transform (no Bragg peaks) where there is one; merge_entries
# applies its scales unless reduction.scaling.apply is false (the unscaled merge)
SCALING = bool(EXP.reduction["scaling"]["enabled"])
# reduction.scaling.apply: true, false or auto (the merges read the scales and apply them
# where scale_entries found that they matter)
SCALING_APPLY = EXP.reduction["scaling"]["apply"]
SCALING_APPLIED = SCALING and SCALING_APPLY is not False
SCALING_KIND = "masked_transform" if "masked_transform" in TRANSFORM_KINDS else "transform"
NXREFINE_WRAPPER = bool(EXP.raw["output"]["nxrefine_wrapper"])
MODEL_INPUTS = list(EXP.raw["output"]["model_inputs"])
MODEL_INPUT_VOLUMES = model_input_volumes(EXP)  # (output.model_input_volumes)
CUTS = cuts_of(EXP)  # sample -> its cuts (output.cuts)
_PDF = EXP.reduction["pdf"]
PDF_ENABLED = bool(_PDF["enabled"])
# pdf.nxs: the DeltaPDF of masked_transform (of transform when that is the only kind);
# transform_pdf.nxs: the unmasked transform's own, when listed as well
PDF_FILE_KIND = delta_pdf_files(EXP)
# the total PDF: the volume with its Bragg peaks (transform) when it is made
TOTAL_PDF_KIND = "transform" if "transform" in TRANSFORM_KINDS else "masked_transform"


wildcard_constraints:
    calibration="[A-Za-z0-9_.-]+",
    sample="[A-Za-z0-9_.-]+",
    temperature=r"[0-9.]+K",
    entry="[A-Za-z0-9_-]+",
    kind="transform|masked_transform",
    volume="(masked_)?transform(_symmetrized)?",
    frames=r"[0-9]+-[0-9]+",


# --------------------------------------------------------------------------------------
# The experiment by wildcards
# --------------------------------------------------------------------------------------
def scan_of(w):
    return EXP.scan(w.sample, w.temperature, w.entry)


def scan_path(scan, pattern, **more):
    """An output of a scan entry (hklflow.files.outputs: SCAN, PEAKS, ...), named."""
    return fill(pattern, sample=scan.sample, temperature=scan.temperature_label,
                entry=scan.entry, **more)


def calibration_path(name, pattern):
    return fill(pattern, calibration=name)


def option(flag, paths):
    """A command line's option with its paths quoted (" --flag 'a' 'b'"), none without paths."""
    return f" {flag} {' '.join(shlex.quote(str(p)) for p in paths)}" if paths else ""


def entries_files(w, pattern, **more):
    """An output of every entry of the wildcards' sample and temperature."""
    return [scan_path(s, pattern, **more) for s in EXP.scans_of(w.sample, w.temperature)]


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------
def calibration_sources(w):
    """The calibration's image or PONI file; a missing one stops the plan, naming it (with
    the calibration's results present, Snakemake would not look for it)."""
    spec = EXP.calibrations[w.calibration]
    for key, path in (("poni", spec.poni), ("image", spec.image)):
        if path and not os.path.exists(path):
            snakemake_compat.stop_plan(f"{' + '.join(EXP.sources)}: field 'calibrations."
                                       f"{w.calibration}.{key}': {path} does not exist (relative "
                                       f"to the experiment directory {os.getcwd()})")
    return [p for p in (spec.poni, spec.image) if p]


_RAW_FILE_OWNERS = RawFileOwners()
_DELIBERATE_REPEATS = frozenset(EXP.reduction["ingest"]["deliberate_repeats"])


def _recorded_raw_files(scan_file):
    """(files, fingerprints) ingest recorded; none from a scan file that cannot be read (its
    ingest is not complete: Snakemake runs it again, or the step that reads it says why)."""
    from hklflow.base.errors import HklflowError
    from hklflow.files.scan import read_scan_file  # h5py: only for a scan file new since

    try:
        frames = read_scan_file(scan_file).frames
    except (OSError, HklflowError, KeyError, ValueError):
        return (), ()
    return frames.files, frames.fingerprints


# (reduction.ingest.fingerprint is this check's, not ingest's: switching it reruns no ingest)
_RAW_CHANGES = RawChangeCheck(_recorded_raw_files, reach=EXP.reduction["ingest"]["fingerprint"])


_RAW_FILES = {}  # scan id -> its raw files: listed, claimed and hashed once per process


def raw_files(w):
    """Every raw file of a scan entry (each HDF5 file, each frame file of a pattern); each
    may belong to one entry only, and no two entries may hold the same data."""
    scan = scan_of(w)
    if scan.id not in _RAW_FILES:
        _RAW_FILES[scan.id] = _list_raw_files(scan)
    return _RAW_FILES[scan.id]


def _list_raw_files(scan):
    if scan.in_progress:
        # hklflow watch: the raw files grow with every frame; the marker it rewrites when a
        # block of complete frames has landed stands for them (the complete scan's job reads
        # the raw files again)
        return [landed_marker(scan.id)]
    files = matching_files(scan.data)
    where = f"{EXP.scans_table}: row {scan.row} ({scan.id}): field 'data'"
    if not files:
        snakemake_compat.stop_plan(f"{where}: no file matches {scan.data!r} (relative to the "
                                   f"experiment directory {os.getcwd()})")
    hdf5 = is_hdf5_path(files[0])
    if not hdf5 and len(files) < scan.nframes:
        snakemake_compat.stop_plan(f"{where}: {scan.data!r} matches {len(files)} frame files, "
                                   f"the row's nframes says {scan.nframes}")
    try:
        _RAW_FILE_OWNERS.claim(scan.id, files, scan.dataset if hdf5 else "")
        _RAW_FILE_OWNERS.claim_content(scan.id, files, scan.dataset if hdf5 else "",
                                       _DELIBERATE_REPEATS)
    except ValueError as exc:
        snakemake_compat.stop_plan(f"{where}: {exc}")
    return files


def raw_change(w):
    """The marker of a change of the entry's raw data since ingest (hklflow.raw.rawfiles), once
    there has been one: rewritten, so that ingest is planned again, when a raw file holds
    other content than ingest recorded although its size and modification time are the
    same (a replaced file, a frame overwritten in place: Snakemake sees neither)."""
    scan = scan_of(w)
    if scan.in_progress:
        return []
    marker, changed = _RAW_CHANGES.marker_input(scan.id, scan_path(scan, outputs.SCAN),
                                                raw_files(w))
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        print(f"hklflow: {scan.id}: {changed[0]}{more} changed since ingest (other content, "
              f"whatever the modification time says): its ingest is planned again",
              file=sys.stderr)
    return marker


def monitor_column_file(w):
    """The entry's monitor column file, where its monitor is one (rows of frame files): an
    input of its ingest, so that the entry is ingested again when the file changes."""
    path = monitor_file(scan_of(w))
    return [path] if path else []


def scan_calibration(w, pattern):
    return calibration_path(scan_of(w).calibration, pattern)


def user_mask(w):
    return [DETECTOR.mask_file] if DETECTOR.mask_file else []


def calibration_poni(name):
    return calibration_path(name, outputs.GEOMETRY_PONI)


def parent_temperature(w):
    """Label of the parent temperature whose orientation seeds this temperature's."""
    first = EXP.scans_of(w.sample, w.temperature)[0]
    return EXP.samples[w.sample].parent_for(first.temperature)


def parent_orientation(w):
    return fill(outputs.PARENT_ORIENTATION, sample=w.sample, temperature=parent_temperature(w))


# reduction.refinement.detector_from: all makes one detector of every temperature of a
# sample (rule refine_detector), which every temperature's refinement waits for
DETECTOR_FROM_ALL = EXP.reduction["refinement"]["detector_from"] == "all"


def shared_detector(w):
    """The sample's shared detector file for a temperature's refinement (detector_from all);
    none otherwise (the parent's orientation carries it)."""
    return [fill(outputs.SHARED_DETECTOR, sample=w.sample)] if DETECTOR_FROM_ALL else []


def sample_parent_orientations(w):
    """The orientation file of every parent of the sample (its temperatures' parents)."""
    spec = EXP.samples[w.sample]
    labels = sorted({spec.parent_for(EXP.scans_of(w.sample, t)[0].temperature)
                     for t in EXP.temperatures_of(w.sample)})
    return [fill(outputs.PARENT_ORIENTATION, sample=w.sample, temperature=t) for t in labels]


def sample_entries_files(w, pattern):
    """An output of every entry of the wildcards' sample, temperature by temperature."""
    return [scan_path(s, pattern) for t in EXP.temperatures_of(w.sample)
            for s in EXP.scans_of(w.sample, t)]


def sample_orientations(w):
    return [fill(outputs.ORIENTATION, sample=w.sample, temperature=t)
            for t in EXP.temperatures_of(w.sample)]


@snakemake_compat.known_parameters  # a group function: not among the rules' input and params
def peaks_group(w):
    """Cluster group of an entry's ingest and peak search: the group of the job that reads
    its peaks, index_parent's at a parent temperature and refine_temperature's at any other
    (profiles/slurm: one SLURM job per temperature, no wave of per-entry jobs); none where
    that job has none (a local run: no `groups` given)."""
    groups = snakemake_compat.cluster_groups(workflow)
    reader = "index_parent" if parent_temperature(w) == w.temperature else "refine_temperature"
    group = groups.get(reader)
    # a name with wildcards (e.g. temperature_{temperature}) as the reader's job expands it
    return apply_wildcards(group, w) if group else None


def final_only(sample, temperature):
    """Whether a temperature's results are final, not previews (hklflow watch): previews
    leave out what only the final results need, the scale fit (their merges are unscaled)
    and the symmetrisation (docs/live.md)."""
    return not EXP.is_preview(sample, temperature)


def scaled_merge(w):
    """Whether the wildcards' merge applies the scales (reduction.scaling; never a preview's)."""
    return SCALING_APPLIED and final_only(w.sample, w.temperature)


def volumes_orientation(w):
    """The orientation a temperature's masks, transforms and merges are made with: its refined
    one; a preview's, its provisional orientation (rule provisional_orientation, then
    hklflow.live.orientation), which stays put while the refined one moves by less than
    live.reorient_voxels."""
    if EXP.is_preview(w.sample, w.temperature):
        return provisional_orientation(w.sample, w.temperature)
    return fill(outputs.ORIENTATION, sample=w.sample, temperature=w.temperature)


def volumes_grid(w):
    """The grid a temperature's transforms are made on: the sample's; a preview's, its
    provisional grid (rule provisional_grid, then hklflow.live.grid), which stays put while
    define_grid, made again for every new detector position, gives the same grid."""
    if EXP.is_preview(w.sample, w.temperature):
        return provisional_grid(w.sample)
    return fill(outputs.GRID, sample=w.sample)


def sample_ponis(w):
    return sorted({calibration_poni(s.calibration) for s in EXP.scans_of(w.sample)})


def transform_parts(w):
    """The transform jobs' volumes of a scan entry, every kind's chunks in a row; of a scan
    in progress, its blocks' (blocks.smk)."""
    scan = scan_of(w)
    blocks = entry_blocks(scan)
    if blocks:
        return [scan_path(scan, outputs.BLOCK_VOLUME, kind=kind, frames=frames)
                for kind in TRANSFORM_KINDS for frames in blocks]
    ranges = transform_frame_ranges(EXP, scan)
    return [fill(outputs.VOLUME_PART, sample=w.sample, temperature=w.temperature,
                 entry=w.entry, kind=kind, frames=outputs.part_frames(a, b))
            for kind in TRANSFORM_KINDS for a, b in ranges]


_BLOCKS = {}  # scan id -> the {frames} of its blocks: listed once per process


def entry_blocks(scan):
    """The {frames} of the blocks hklflow watch marked for a scan of a preview temperature
    (in progress, or complete while another is not), in frame order: they cover its frames to
    reduce, from frame 0.  None once the temperature is complete: its final run reduces every
    scan whole, as batch."""
    if not EXP.is_preview(scan.sample, scan.temperature_label):
        return []
    if scan.id not in _BLOCKS:
        blocks = landed_blocks(scan.id)
        if not blocks or blocks[-1][1] != scan.nframes:
            blocks = []  # (not marked by hklflow watch: the scan reduced whole)
        _BLOCKS[scan.id] = [outputs.part_frames(a, b) for a, b in blocks]
    return _BLOCKS[scan.id]


def block_marker(w):
    """The marker of a block's frames, written once when they landed."""
    first, stop = (int(v) for v in w.frames.split("-"))
    return landed_block_marker(scan_of(w).id, first, stop)


def block_row_settings(w):
    """The settings of a block's row: its ingest's when the block's last frame had landed
    (the row's own, with the frames up to that one): a change of the row reruns its blocks,
    a later frame landing does not."""
    stop = int(w.frames.split("-")[1])
    return settings_file(SETTINGS.scan_block(w.sample, w.temperature, w.entry, stop))


def block_peaks(w):
    """The peaks of a scan's blocks, which find_peaks puts together (none outside a preview:
    the scan is searched whole)."""
    scan = scan_of(w)
    return [scan_path(scan, outputs.BLOCK_PEAKS, frames=frames) for frames in entry_blocks(scan)]


def background_scan(w):
    """scan.nxs of the background row the entry names."""
    return scan_path(EXP.background_of(scan_of(w)), outputs.SCAN)


def background_parts(w):
    """transform_background's volumes of the entry, every kind's (none without a
    background)."""
    if EXP.background_of(scan_of(w)) is None:
        return []
    return [fill(outputs.BACKGROUND_PART, sample=w.sample, temperature=w.temperature,
                 entry=w.entry, kind=kind) for kind in TRANSFORM_KINDS]


def merged_volumes(w):
    return [fill(outputs.MERGED_VOLUME, sample=w.sample, temperature=t, kind=w.kind)
            for t in EXP.temperatures_of(w.sample)]


def pdf_input(kind):
    """The volume a PDF is made from: the symmetrised one (the merged one without
    symmetrisation) of a kind."""
    name = f"{kind}_symmetrized" if SYMMETRIZE else kind
    return fill(outputs.VOLUME, volume=name)


def _pdf_name(kind, what):
    """NXRefine's name of a PDF of a volume kind (its masked_* for masked_transform)."""
    return ("masked_" if kind == "masked_transform" else "") + what


def nxrefine_pdf_links(w):
    """NXRefine's name -> the PDF file of the wildcards' sample and temperature: the files
    reduction.pdf makes (pdf.smk), none when it is off."""
    if not PDF_ENABLED or w.temperature not in EXP.pdf_temperatures_of(w.sample):
        return {}
    at = dict(sample=w.sample, temperature=w.temperature)
    links = {_pdf_name(TOTAL_PDF_KIND, "total_pdf"): fill(outputs.TOTAL_PDF, **at)}
    links.update({_pdf_name(kind, "pdf"): fill(outputs.DELTA_PDF, pdf=name, **at)
                  for name, kind in PDF_FILE_KIND.items()})
    return links


def entry_volumes(w):
    """Every entry's volumes at the wildcards' temperature: per entry, every kind."""
    return [scan_path(s, outputs.ENTRY_VOLUME, kind=kind)
            for s in EXP.scans_of(w.sample, w.temperature) for kind in TRANSFORM_KINDS]


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------
def all_targets():
    targets = [calibration_path(c, outputs.GEOMETRY_PONI) for c in EXP.calibrations]
    for s in EXP.scans:
        targets += [scan_path(s, outputs.SCAN), scan_path(s, outputs.PEAKS)]
    for name in EXP.samples:
        temperatures = EXP.temperatures_of(name)
        if not temperatures:
            continue  # hklflow watch: the sample's scans have not begun
        targets += [fill(outputs.ORIENTATION, sample=name, temperature=t) for t in temperatures]
        targets += [fill(outputs.ORIENTATION_TABLE, sample=name),
                    fill(outputs.ORIENTATION_TABLE_PNG, sample=name)]
        for kind in TRANSFORM_KINDS:
            for t in temperatures:
                at = dict(sample=name, temperature=t, kind=kind)
                targets.append(fill(outputs.MERGED_VOLUME, **at))
                targets.append(fill(outputs.STATISTICS_PNG, **at))
                if SYMMETRIZE and final_only(name, t):
                    targets.append(fill(outputs.SYMMETRIZED_VOLUME, **at))
            targets.append(fill(outputs.TEMPERATURE_SERIES_PNG, sample=name, kind=kind))
        if SCALING:  # (reduction.scaling.apply false: fitted and reported, not applied)
            targets += [fill(outputs.SCALES, sample=name, temperature=t) for t in temperatures
                        if final_only(name, t)]
        pdf_temperatures = EXP.pdf_temperatures_of(name)  # (previews: live.preview_pdf)
        if PDF_ENABLED and pdf_temperatures:
            for t in pdf_temperatures:
                targets += [fill(outputs.TOTAL_PDF, sample=name, temperature=t)]
                targets += [fill(outputs.DELTA_PDF, sample=name, temperature=t, pdf=f)
                            for f in PDF_FILE_KIND]
            targets.append(fill(outputs.PDF_SERIES_PNG, sample=name))
        if NXREFINE_WRAPPER:
            targets += [fill(outputs.NXREFINE_WRAPPER, sample=name, temperature=t)
                        for t in temperatures]
        for t in temperatures:
            for volume in MODEL_INPUT_VOLUMES:
                targets += [fill(f, sample=name, temperature=t, volume=volume)
                            for f in model_input_outputs()]
        for spec in CUTS.get(name, []):  # (output.cuts)
            targets += [fill(f, sample=name, temperature=t, cut=spec["name"])
                        for t in temperatures for f in (outputs.CUT, outputs.CUT_PNG)]
            if is_line(spec):
                targets.append(fill(outputs.CUT_SERIES_PNG, sample=name, cut=spec["name"]))
    # last: its job reads what every other one made (experiment_page.smk)
    targets.append(outputs.EXPERIMENT_PAGE)
    return targets


# the experiment's page (experiment_page.smk)
def page_files(w):
    """The files the page reads, by what they are (the step's options)."""
    files = {"calibrations": [calibration_path(c, outputs.CALIBRATION_NEXUS)
                              for c in EXP.calibrations],
             "peaks": [scan_path(s, outputs.PEAKS) for s in EXP.scans],
             "orientations": [], "tables": [], "volumes": [], "pdfs": []}
    for name in EXP.samples:
        temperatures = EXP.temperatures_of(name)
        if not temperatures:
            continue  # hklflow watch: the sample's scans have not begun
        files["orientations"] += [fill(outputs.ORIENTATION, sample=name, temperature=t)
                                  for t in temperatures]
        files["tables"].append(fill(outputs.ORIENTATION_TABLE, sample=name))
        for t in temperatures:
            for kind in TRANSFORM_KINDS:
                at = dict(sample=name, temperature=t, kind=kind)
                files["volumes"].append(fill(outputs.MERGED_VOLUME, **at))
                if SYMMETRIZE and final_only(name, t):
                    files["volumes"].append(fill(outputs.SYMMETRIZED_VOLUME, **at))
        if PDF_ENABLED:
            files["pdfs"] += [fill(outputs.DELTA_PDF, sample=name, temperature=t, pdf=f)
                              for t in EXP.pdf_temperatures_of(name) for f in PDF_FILE_KIND]
    return files


def page_targets(w):
    """Every other target: the page runs after every job."""
    return [t for t in all_targets() if t != outputs.EXPERIMENT_PAGE]


def model_input_outputs() -> list:
    """The files rule model_inputs writes for output.model_inputs, each program's as its
    module names them (hklflow.files.model_inputs), in the volume's model_inputs folder."""
    return [f"{outputs.MODEL_INPUTS}/{f}" for program in MODEL_INPUTS
            for f in model_inputs.file_names(program, "{volume}")]


# output.cuts (rules cut and cut_temperature_series, cuts.smk)
def cut_volume(w):
    """The volume a cut is made of, at the wildcards' temperature."""
    spec = cut_spec(EXP, w.sample, w.cut)
    return fill(outputs.VOLUME, sample=w.sample, temperature=w.temperature, volume=spec["volume"])


def cut_series_inputs(w):
    """A line cut at every temperature of its sample."""
    return [fill(outputs.CUT, sample=w.sample, temperature=t, cut=w.cut)
            for t in EXP.temperatures_of(w.sample)]
