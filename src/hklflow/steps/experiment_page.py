"""Step experiment_page: the whole experiment on one page, results/report.html: the
calibrations and their residuals; per scan its peaks found and indexed and its geometry's
residuals; per temperature the residuals per detector module, displaced modules flagged; the
orientation table across temperatures; per merged volume its statistics in shells of |Q| and
the fraction of reciprocal space measured; per DeltaPDF the count of every punch-and-fill
outcome; every warning a job logged, with its log; the pictures, linked.
Every number comes from the files (their readers in hklflow.files), only the warnings from
the logs."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..base.errors import FileFormatError
from ..files.calibration import read_calibration_summary
from ..files.experiment_page import Link, Pictures, Section, Table, Text, write_experiment_page
from ..files.orientation import orientation_row, read_orientation_file, read_refined_peaks
from ..files.pdf import read_pdf_notes
from ..files.peaks import read_peaks_file
from ..files.scales import read_scales
from ..files.volume import read_volume_header
from ..model.detector_modules import (FLAG_MIN_PEAKS, FLAG_STANDARD_ERRORS, ModuleLayout,
                                      module_residuals)
from ..model.geometry import detector_facts
from ._run import StepParser, run_step

# a warning line of a step's log (hklflow.base.steplog's format), as the console reads it
WARNING = re.compile(r"^\S+ \S+ hklflow\.(\w+) WARNING: (.*)$")


def parser() -> StepParser:
    p = StepParser("experiment_page", __doc__)
    p.add_input("--calibrations", "calibration.nxs of every calibration", nargs="*", default=[],
                required=False)
    p.add_input("--peaks", "peaks.nxs of every scan entry", nargs="*", default=[],
                required=False)
    p.add_input("--orientations", "orientation.nxs of every sample and temperature", nargs="*",
                default=[], required=False)
    p.add_input("--tables", "orientation_table.tsv of every sample (linked)", nargs="*",
                default=[], required=False)
    p.add_input("--volumes", "the merged (and symmetrised) volumes", nargs="*", default=[],
                required=False)
    p.add_input("--pdfs", "the DeltaPDF files", nargs="*", default=[],
                required=False)
    p.add_input("--logs", "the folder of the jobs' logs (their warnings)", required=False,
                default=Path("logs"))
    p.add_output("--out", "page to write (HTML)")
    return p


def _num(value, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def _pictures(*paths) -> Pictures:
    return Pictures([p for p in paths if Path(p).is_file()])


def calibration_section(paths) -> Section:
    rows, pictures = [], []
    for path in paths:
        c = read_calibration_summary(path)
        r = c["residuals"]
        misfit = (f"{_num(r['ring_misfit_px'], '.3f')} (bound "
                  f"{_num(r['ring_misfit_bound_px'], '.3f')})" if "ring_misfit_px" in r else "–")
        rows.append([Path(path).parent.name, c["calibrant"] or "(none named)", c["method"],
                     c["refined_parameters"], _num(r.get("rms_residual_px"), ".4f"),
                     _num(r.get("rms_residual_2theta"), ".5f"), r.get("n_points", "–"),
                     r.get("n_rings", "–"), misfit, r.get("n_hot_pixels", "–")])
        pictures.append(Path(path).with_suffix(".png"))
    table = Table(["calibration", "calibrant", "method", "refined", "RMS residual (px)",
                   "RMS residual 2θ (°)", "control points", "rings", "ring misfit (px)",
                   "hot pixels"], rows)
    return Section("Calibration", [table, _pictures(*pictures)] if rows else
                   [Text("no calibration", "note")])


def scans_section(peaks_paths, records) -> Section:
    """Per scan entry: peaks found (peaks.nxs) and used by its temperature's refinement with
    their RMS residuals (orientation.nxs, per entry)."""
    per_entry = {}
    for rec in records:
        for e in orientation_row(rec).get("entries", []):
            per_entry[(rec.sample, rec.temperature_label, e["entry"])] = e
    rows, pictures = [], []
    for path in peaks_paths:
        p = read_peaks_file(path)
        found = len(p.peaks.get("observed_px_x", ()))
        sample, label, entry = (p.scan_id.split("/") + ["", "", ""])[:3]
        e = per_entry.get((sample, label, entry), {})
        rows.append([p.scan_id, found, e.get("n_used", "–"), _num(e.get("rms_x_px"), ".3f"),
                     _num(e.get("rms_y_px"), ".3f"), _num(e.get("rms_frames"), ".3f"),
                     _num(e.get("rms_deg"), ".4f")])
        pictures.append(Path(path).with_suffix(".png"))
    table = Table(["scan", "peaks found", "peaks indexed and used", "RMS x (px)", "RMS y (px)",
                   "RMS φ (frames)", "RMS φ (°)"], rows)
    why = Text("Residuals per detector module: the next section.", "note")
    return Section("Scans", [table, why, _pictures(*pictures)] if rows else
                   [Text("no scan", "note")])


def _mean_se(mean, se, spec: str) -> str:
    return f"{_num(float(mean), spec)} ± {_num(float(se), spec)}"


def modules_section(records) -> Section:
    """Per sample and temperature, summed over its entries: the refined peaks' residuals per
    detector module (orientation.nxs, peaks), the module of a peak from its pixel and the
    detector's module layout (model.detector_modules)."""
    blocks = []
    for rec in records:
        title = f"{rec.sample}/{rec.temperature_label}"
        try:
            layout = ModuleLayout.of(detector_facts(rec.detector.detector,
                                                    rec.detector.orientation))
        except ValueError as exc:  # a detector pyFAI does not know: no layout
            blocks.append(Section(title, [Text(f"no module layout: {exc}", "note")], level=3))
            continue
        p = read_refined_peaks(rec.path)
        res = np.column_stack([p["residual_x"], p["residual_y"], p["residual_frame"]])
        res[~p["used"]] = np.nan
        found = module_residuals(layout, p["observed_px_x"], p["observed_px_y"], res)
        rows = [[f"({m['module'][0]}, {m['module'][1]})", layout.placement(*m["module"]),
                 m["n"], _num(m["rms"][0], ".3f"), _num(m["rms"][1], ".3f"),
                 _num(m["rms"][2], ".3f"), _mean_se(m["mean"][0], m["se"][0], ".3f"),
                 _mean_se(m["mean"][1], m["se"][1], ".3f"),
                 _mean_se(m["mean"][2], m["se"][2], ".3f"),
                 ("DISPLACED (" + ", ".join(m["flag"]) + ")") if m["flag"] else ""]
                for m in found]
        nr, nc = layout.shape
        what = (f"{rec.detector.detector}, orientation {rec.detector.orientation}: "
                + ("a single sensor, no modules: one row" if layout.single else
                   f"{nr} × {nc} modules, those with refined peaks"))
        own = [Table(["module (row, column)", "seen from the sample", "peaks", "RMS x (px)",
                      "RMS y (px)", "RMS φ (frames)", "mean x ± s.e. (px)",
                      "mean y ± s.e. (px)", "mean φ ± s.e. (frames)", "flag"], rows,
                     caption=what)]
        flagged = [m for m in found if m["flag"]]
        if flagged:
            own.append(Text("FLAG: modules whose mean residual is more than "
                            f"{FLAG_STANDARD_ERRORS:g} standard errors from zero (displaced?): "
                            + ", ".join(f"({m['module'][0]}, {m['module'][1]}) in "
                                        + "/".join(m["flag"]) for m in flagged), "warn"))
        blocks.append(Section(title, own, level=3))
    note = Text("Summed over a temperature's entries: a module is the same in every entry "
                "(a detector translation moves the pixels' view, not the modules), and per "
                "entry a Pilatus 2M's 24 modules would take 24 rows each.  Modules are counted in "
                "the frames' array, (0, 0) holding pixel (0, 0); where they lie seen from the "
                "sample follows the detector orientation.  A module whose mean residual is "
                f"more than {FLAG_STANDARD_ERRORS:g} standard errors from zero in x, y or φ is "
                f"flagged (with at least {FLAG_MIN_PEAKS} peaks): the refinement's one "
                "detector does not fit it.  By chance a component passes that now and then "
                "(0.3 % of them with many peaks, 1.5 % with 10), so on 24 modules a single flag "
                "at one temperature may be chance; a module really displaced is flagged at "
                "every temperature.", "note")
    return Section("Geometry residuals per detector module",
                   [note, *blocks] if blocks else [Text("no orientation", "note")])


def orientation_section(records, tables) -> Section:
    blocks = []
    samples = sorted({rec.sample for rec in records})
    for sample in samples:
        own = [t for t in tables if Path(t).parent.name == sample]  # results/SAMPLE/...tsv
        rows = []
        for rec in [r for r in records if r.sample == sample]:
            row = orientation_row(rec)
            cell = ", ".join(f"{n} {_num(v, '.5f')} ± {_num(s, '.5f')}"
                             for n, v, s in zip(row["names"], row["cell"], row["esd"]))
            rows.append([row["temperature"], "all", row["n_used"],
                         _num(rec.statistics.get("fraction_indexed"), ".3f"),
                         _num(row["rms_px"], ".3f"), _num(row["rms_frames"], ".3f"),
                         _num(row["goodness_of_fit"], ".3f"), cell])
            for e in row.get("entries", []):
                rows.append(["", e["entry"], e["n_used"], "", _num(e["rms_x_px"], ".3f") + " / "
                             + _num(e["rms_y_px"], ".3f"), _num(e["rms_frames"], ".3f"), "", ""])
        blocks.append(Section(sample, [
            Table(["temperature", "entry", "peaks used", "fraction indexed",
                   "RMS (px; entries: x / y)", "RMS φ (frames)", "goodness of fit",
                   "cell (Å, °) ± esd"], rows),
            Table(["the table, tab-separated"], [[Link(str(t))] for t in own]),
            _pictures(*[Path(t).with_suffix(".png") for t in own],
                      *[Path(rec.path).with_suffix(".png") for rec in records
                        if rec.sample == sample])], level=3))
    return Section("Orientation across temperatures", blocks or [Text("no orientation", "note")])


def _bragg_note(stats: dict) -> str:
    r = stats.get("bragg_exclusion_inverse_angstrom") or 0.0
    if r > 0:
        return (f"voxels within {r:.4g} Å⁻¹ (no 2π) of integer hkl left out "
                f"({stats['overall'].get('excluded', 0)} voxels)")
    return "none left out by the statistics (a masked_transform's Bragg regions are masked)"


def _entry_notes(notes: dict, title: str = "", depth: int = 0):
    """(title, notes) of the entry volumes a volume was made from (its notes' inputs, down
    through sums and merges): the notes that say what was corrected and subtracted."""
    if "background" in notes or depth > 4:
        yield title or notes.get("scan", ""), notes
        return
    for item in notes.get("inputs", []):
        if isinstance(item, dict):
            yield from _entry_notes(item.get("notes", {}), item.get("title", ""), depth + 1)


def _corrections_of(notes: dict) -> dict | None:
    """The corrections a transform recorded, in an entry's notes or its parts'."""
    if "corrections" in notes:
        return notes["corrections"]
    for item in notes.get("inputs", []):
        found = _corrections_of(item.get("notes", {})) if isinstance(item, dict) else None
        if found:
            return found
    return None


def corrections_lines(notes: dict) -> list[str]:
    """What a volume's entries were corrected for and which background each lost."""
    lines, applied = [], None
    for scan, entry in _entry_notes(notes):
        corrections = _corrections_of(entry)
        if corrections and applied is None:
            applied = corrections
        bg = entry.get("background")
        what = (f"{bg.get('scan')} subtracted (scale {_num(bg.get('scale'))}, "
                f"{bg.get('voxels_left_out', 0)} voxels left out)" if isinstance(bg, dict)
                else "no background")
        lines.append(f"{scan or '?'}: {what}")
    if applied is not None:
        off = "; ".join(f"{k}: {v}" for k, v in applied.get("not_applied", {}).items())
        lines.insert(0, "corrections: " + (", ".join(applied.get("applied", {})) or "none")
                     + (f" (not applied - {off})" if off else ""))
    scaling = notes.get("scaling")
    if isinstance(scaling, dict):  # (merge_entries: the scales it was given)
        chi, cc = scaling.get("chi2_nu", {}), scaling.get("cc_half", {})
        terms = "; ".join(f"{k} {v}" for k, v in scaling.get("terms", {}).items())
        if scaling.get("applied", True):
            lines.append(f"scaled between entries ({scaling.get('scales', '?')}): chi²/ν of "
                         f"equivalents {_num(chi.get('before'), '.3f')} → "
                         f"{_num(chi.get('after'), '.3f')}, CC½ "
                         f"{_num(cc.get('before'), '.4f')} → {_num(cc.get('after'), '.4f')} "
                         f"({terms})")
        else:
            lines.append(f"scales fitted, not applied: they do not matter "
                         f"({scaling.get('verdict', '?')}; reduction.scaling.apply: true "
                         f"applies them)")
    elif isinstance(scaling, str):  # (a preview's merge: merge_entries --unscaled-preview)
        lines.append(f"scaling: {scaling}")
    return lines


def fitted_scales_line(path, notes: dict) -> str | None:
    """What the temperature's scales (scales.json beside a merged volume) would do, where
    the merge was not given them (reduction.scaling.apply false), and whether they matter."""
    scales = Path(path).parent / "scales.json"
    if "scaling" in notes or "inputs" not in notes or not scales.is_file():
        return None
    try:
        content = read_scales(scales)[1]
        away = content["statistics"]["away_from_nodes"]
    except (FileFormatError, KeyError):
        return None
    verdict = content.get("verdict", {})
    matter = (" - they matter" if verdict.get("matter") else
              " - they do not matter" if "matter" in verdict else "")
    return (f"scales fitted, not applied (reduction.scaling.apply: false){matter}: chi²/ν "
            f"of equivalents {_num(away['before']['chi2_nu'], '.3f')} → "
            f"{_num(away['after']['chi2_nu'], '.3f')}, CC½ "
            f"{_num(away['before']['cc_half'], '.4f')} → {_num(away['after']['cc_half'], '.4f')}")


def volumes_section(paths) -> Section:
    blocks = []
    for path in paths:
        notes = read_volume_header(path).notes
        stem = Path(path).with_suffix("")
        fraction = notes.get("measured_fraction")
        lines = [f"reciprocal space measured: {_num(100 * fraction, '.2f')} % of the grid"
                 if fraction is not None else "reciprocal space measured: not recorded"]
        if "measured_fraction_before" in notes:
            before = notes["measured_fraction_before"]
            lines.append(f"before symmetrisation: {_num(100 * before, '.2f')} %")
        blocks_of = [Text("; ".join(lines))]
        blocks_of += [Text(line, "note") for line in corrections_lines(notes)]
        unapplied = fitted_scales_line(path, notes)
        if unapplied:
            blocks_of.append(Text(unapplied, "note"))
        stats = notes.get("statistics")
        if isinstance(stats, str):  # (a preview's merge: merge_entries --preview)
            blocks_of.append(Text(f"statistics: {stats}", "note"))
        elif stats:
            rows = []
            for r in stats.get("shells", []) + [dict(stats["overall"], overall=True)]:
                label = ("overall" if r.get("overall") else
                         f"{_num(r['q_min'], '.3f')}–{_num(r['q_max'], '.3f')}")
                rows.append([label, r["voxels"], r["measured"], r["excluded"],
                             _num(r["i_over_sigma"], ".2f"), _num(r["chi2_nu"], ".3f"), r["nu"],
                             _num(r["cc_half"], ".4f")])
            blocks_of += [
                Table(["|Q| (Å⁻¹)", "voxels", "measured", "near Bragg (left out)", "I/σ",
                       "χ²/ν", "ν", "CC½"], rows,
                      caption=f"Laue group {stats.get('laue_group', '?')}"),
                Text("Bragg nodes: " + _bragg_note(stats) + ". The file carries these "
                     "statistics once; the masked and unmasked kinds side by side show them "
                     "with and without the Bragg regions.", "note")]
            if stats.get("flag"):
                blocks_of.append(Text("FLAG: " + stats.get("flag_reason", ""), "warn"))
        blocks_of.append(_pictures(f"{stem}.png", f"{stem}_statistics.png"))
        blocks.append(Section(str(path), blocks_of, level=3))
    return Section("Volumes", blocks or [Text("no volume", "note")])


def pdfs_section(paths) -> Section:
    rows, pictures, names = [], [], []
    for path in paths:
        notes = read_pdf_notes(path)
        outcomes = notes.get("outcomes", {})
        names += [n for n in outcomes if n not in names]
    names.sort(key=lambda n: n != "filled")  # (stable: the others as the files list them)
    for path in paths:
        notes = read_pdf_notes(path)
        outcomes = notes.get("outcomes", {})
        total, punched = sum(outcomes.values()), notes.get("positions")
        rows.append([str(path), punched] + [outcomes.get(n, 0) for n in names]
                    + [total if total == punched else f"{total} (≠ {punched}!)"])
        pictures.append(Path(path).with_suffix(".png"))
    table = Table(["ΔPDF", "reflections punched"] + names + ["sum of outcomes"], rows)
    return Section("ΔPDF: punch and fill", [table, _pictures(*pictures)] if rows else
                   [Text("no ΔPDF", "note")])


def sample_pictures(paths) -> Section:
    """Every picture of a sample as a whole (temperature series, ...), beside its folder."""
    folders = sorted({Path(p).parent for p in paths})  # results/SAMPLE/
    found = sorted(str(p) for f in folders for p in f.glob("*.png")
                   if p.name != "orientation_table.png")  # (shown with the orientation)
    return Section("Temperature series and other pictures of a sample",
                   [_pictures(*found)] if found else [Text("none", "note")])


def log_warnings(logs: Path) -> list[tuple[str, str, str]]:
    """(step, message, log) of every warning line in logs/**/*.log, the page's own logs
    (logs/experiment_page/, being written) left out."""
    found = []
    if not logs.is_dir():
        return found
    for path in sorted(logs.rglob("*.log")):
        if path.relative_to(logs).parts[0] == "experiment_page":
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            m = WARNING.match(line)
            if m:
                found.append((m.group(1), m.group(2), str(path)))
    return found


def warnings_section(warnings) -> Section:
    if not warnings:
        return Section("Warnings", [Text("no job logged a warning")])
    return Section(f"Warnings ({len(warnings)}, from the jobs' logs)", [
        Table(["step", "warning", "log"], [[step, message, Link(log)]
                                           for step, message, log in warnings], wrap=True)])


def run(args, log) -> None:
    records = [read_orientation_file(p) for p in args.orientations]
    warnings = log_warnings(args.logs)
    sections = [calibration_section(args.calibrations), scans_section(args.peaks, records),
                modules_section(records), orientation_section(records, args.tables), volumes_section(args.volumes),
                pdfs_section(args.pdfs), sample_pictures(args.tables),
                warnings_section(warnings)]
    samples = sorted({rec.sample for rec in records})
    write_experiment_page(args.out, "hklflow: " + (", ".join(samples) or "the experiment"),
                          sections, subtitle="Every number is read from the result files; "
                          "the warnings from the jobs' logs.  Click a picture for its full size.")
    log.info("experiment page: %d calibrations, %d scans, %d temperatures, %d volumes, "
             "%d PDFs, %d warnings -> %s", len(args.calibrations), len(args.peaks),
             len(records), len(args.volumes), len(args.pdfs), len(warnings), args.out)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
