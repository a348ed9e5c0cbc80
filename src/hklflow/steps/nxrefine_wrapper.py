"""Step nxrefine_wrapper: the NXRefine wrapper file of a sample at one temperature
(files.nxrefine), so that NeXpy and NXRefine open hklflow's results as their own: the
sample, every scan entry's geometry in NXRefine's parameters (hklflow.model.nxrefine: refined
cell, UB, detector and goniometer offsets of the orientation file), its peaks, pixel mask,
monitor weights and frame time, and links to the raw frames (through NXReduce's scan
directory) and to every volume (no large array is copied).  Made when the config says
output.nxrefine_wrapper: true."""
from __future__ import annotations

import numpy as np

from ..base.errors import ConfigError, InputMismatchError
from ..files.mask import read_pixel_mask
from ..files.nxrefine import WrapperEntry, write_nxrefine_wrapper
from ..files.orientation import read_orientation_file
from ..files.peaks import read_peaks_file
from ..files.provenance import provenance
from ..files.scan import read_scan_file
from ..model.nxrefine import entry_parameters, sample_fields, transform_angles
from ..raw.exposure import frame_time
from ..raw.monitors import monitor_norm
from ..settings.params import NXRefineWrapperParams, SampleParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("nxrefine_wrapper", __doc__)
    p.add_settings()
    p.add_input("--orientation", "orientation.nxs of the sample at this temperature")
    p.add_input("--scans", "scan.nxs of every entry at this temperature", nargs="+")
    p.add_input("--peaks", "peaks.nxs of the same entries, in the same order", nargs="+")
    p.add_input("--masks", "mask.nxs of the same entries, in the same order (their pixel "
                "masks)", nargs="+")
    p.add_input("--entry-volumes", "every entry's volumes: for each entry (in the order of "
                "--scans) one per kind, in the order of the settings' kinds", nargs="+")
    p.add_input("--merged", "the merged volume of each kind, in the settings' order", nargs="+")
    p.add_input("--symmetrized", "the symmetrised volume of each kind (if made)", nargs="*",
                required=False, default=[])
    p.add_argument("--pdf", nargs="*", default=[], metavar="NAME=FILE",
                   help="PDF files to link as /entry/NAME (NXRefine's names: total_pdf, pdf, "
                        "masked_total_pdf, masked_pdf); each links the file's /entry/pdf")
    p.add_output("--out", "wrapper file to write (results/SAMPLE/nxrefine/SAMPLE_TLABEL.nxs; "
                 "its scan directory, links to the raw stacks, beside it: TLABEL/)")
    return p


def _peaks(peaks: dict) -> dict:
    """hklflow's peak table in NXRefine's names (nxreduce.write_peaks)."""
    return {"x": peaks["observed_px_x"], "y": peaks["observed_px_y"], "z": peaks["observed_frame"],
            "intensity": peaks["int_sum"], "sigx": np.sqrt(peaks["observed_px_x_var"]),
            "sigy": np.sqrt(peaks["observed_px_y_var"]),
            "sigz": np.sqrt(peaks["observed_frame_var"]), "polar_angle": peaks["polar_angle"]}


def _raw_link(rec, notes: dict):
    """(file, dataset) of the raw frames to link, or None with the reason in notes."""
    src = rec.frames
    if src.kind != "hdf5":
        notes.setdefault("raw_frames_not_linked", {})[rec.entry] = (
            f"{len(src.files)} single-frame files ({src.files[0]}, ...): HDF5 can link only "
            "a dataset, so NXRefine's data/data is left out")
        return None
    if len(src.files) == 1:
        return src.files[0], src.dataset or "/entry/data/data"
    return rec.path, f"/{rec.entry}/data/data"  # the scan file's virtual dataset of the stacks


def monitor_weights(monitor, reference, nframes: int) -> tuple[np.ndarray | None, float | None]:
    """NXRefine's monitor_weight of an entry (CCTW adds it to the weights of every pixel of a
    frame): monitor / norm, with hklflow's norm (reduction.transform.monitor_reference, else
    the median good monitor, as the transform scales frames by norm / monitor); 0 on frames
    whose monitor is <= 0 or not finite, which hklflow leaves out.  (None, None) without a
    monitor: every frame weighs 1."""
    if monitor is None:
        return None, None
    monitor = np.asarray(monitor, dtype=np.float64)[:nframes]
    good, norm = monitor_norm(monitor, reference)
    return np.where(good, monitor / norm, 0.0), norm


def run(args, log) -> None:
    wrapper = settings_part(args.settings, NXRefineWrapperParams)
    kinds = list(wrapper.kinds)
    name = settings_part(args.settings, SampleParams).name
    ori = read_orientation_file(args.orientation)
    scans = [read_scan_file(p) for p in args.scans]
    peaks = [read_peaks_file(p) for p in args.peaks]
    nk, ne = len(kinds), len(scans)
    if len(peaks) != ne or len(args.masks) != ne or len(args.entry_volumes) != ne * nk \
            or len(args.merged) != nk or len(args.symmetrized) not in (0, nk):
        raise InputMismatchError(
            f"{ne} scan files, {len(peaks)} peaks files, {len(args.masks)} mask files, "
            f"{len(args.entry_volumes)} entry volumes, {len(args.merged)} merged and "
            f"{len(args.symmetrized)} symmetrised volumes: expected one peaks and one mask "
            f"file per scan and, for the kinds {kinds}, {ne * nk} entry volumes, {nk} merged "
            f"and 0 or {nk} symmetrised")
    temperatures = {rec.temperature for rec in scans}
    if ori.sample != name or any(rec.sample != name for rec in scans) or len(temperatures) != 1 \
            or scans[0].temperature_label != ori.temperature_label:
        raise InputMismatchError(
            f"{args.orientation} ({ori.sample}/{ori.temperature_label}) and the scans "
            f"{[rec.scan_id for rec in scans]} are not all of sample {name} at one temperature")
    try:
        pdf = dict(item.split("=", 1) for item in args.pdf)
    except ValueError:
        raise ConfigError(f"--pdf: expected NAME=FILE items, got {args.pdf}") from None
    crystal = ori.crystal()
    notes = {"linked": "every array is an external link relative to this file; pixel and "
                       "frame coordinates are hklflow's (centre of pixel or frame i at i + 0.5)"}
    if ori.unusable_entries:
        notes["left_out_of_the_merge"] = ori.unusable_entries
    entries, norms = [], []
    for i, (rec, pk) in enumerate(zip(scans, peaks)):
        if pk.entry != rec.entry:
            raise InputMismatchError(f"{args.peaks[i]} holds entry {pk.entry}, but "
                                     f"{args.scans[i]} is entry {rec.entry}: give them in one order")
        mask = read_pixel_mask(args.masks[i], rec.entry)
        if mask.shape != tuple(rec.frames.frame_shape):
            raise InputMismatchError(f"{args.masks[i]}: pixel mask {mask.shape}, but the frames "
                                     f"of {args.scans[i]} are {rec.frames.frame_shape}: give "
                                     "the masks in the order of the scans")
        params = entry_parameters(rec.geometry(ori), crystal.cell)
        weight, norm = monitor_weights(rec.monitor, wrapper.monitor_reference,
                                       rec.nframes)
        norms.append(norm)
        seconds, source = frame_time(rec)
        notes.setdefault("frame_time", {})[rec.entry] = f"{seconds:g} s ({source})"
        entries.append(WrapperEntry(rec.entry, params, _peaks(pk.peaks), rec.nframes,
                                    rec.frames.frame_shape, _raw_link(rec, notes),
                                    dict(zip(kinds, args.entry_volumes[i * nk:(i + 1) * nk])),
                                    pixel_mask=mask, monitor=rec.monitor,
                                    monitor_weight=weight, frame_time=seconds,
                                    frame_time_source=source))
        log.info("%s: %d peaks; NXRefine distance %.3f mm, beam centre (%.2f, %.2f) px, "
                 "chi/omega/theta %.3f/%.3f/%.3f deg; %d pixels masked; %s; %g s per frame "
                 "(%s)", rec.scan_id, len(pk.peaks["int_sum"]), params["distance"],
                 params["xc"], params["yc"], params["chi"], params["omega"], params["theta"],
                 int(mask.sum()), "no monitor" if norm is None else
                 f"monitor weights = monitor / {norm:g}", seconds, source)
    sample = {"name": name, "temperature_label": ori.temperature_label,
              **sample_fields(crystal.hm, crystal.cell, scans[0].temperature)}
    title = f"{name}/{ori.temperature_label}"
    inputs = [args.orientation, *args.scans, *args.peaks, *args.masks, *args.entry_volumes,
              *args.merged, *args.symmetrized, *pdf.values()]
    write_nxrefine_wrapper(args.out, title=title, sample=sample,
                           angles=transform_angles(crystal.cell), entries=entries,
                           merged=dict(zip(kinds, args.merged)),
                           symmetrized=dict(zip(kinds, args.symmetrized)), pdf=pdf, notes=notes,
                           provenance=provenance("hklflow nxrefine_wrapper", args.settings,
                                                 inputs=inputs),
                           monitor_norm=_common_norm(norms, log))
    for why in notes.get("raw_frames_not_linked", {}).values():
        log.warning("%s", why)
    log.info("wrote %s: %d entries, kinds %s%s%s", args.out, len(entries), ", ".join(kinds),
             ", symmetrised" if args.symmetrized else "", f", PDF {sorted(pdf)}" if pdf else "")


def _common_norm(norms: list, log) -> float | None:
    """NXReduce's one norm (/entry/nxreduce/norm) for the entries' monitors: theirs when they
    agree, else their median (each entry's monitor_weight keeps its own)."""
    known = [n for n in norms if n is not None]
    if not known:
        return None
    if max(known) > min(known) * (1 + 1e-9):
        log.info("the entries' monitor norms differ (%s): NXReduce's norm is their median; "
                 "each entry's monitor_weight keeps its own", ", ".join(f"{n:g}" for n in known))
    return float(np.median(known))


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
