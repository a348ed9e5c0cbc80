"""Parent orientation (rule index_parent): index a sample's parent scan from scratch.

All entries of the parent temperature are used together: their peaks go to the sample frame
(scan angle 0, offsets removed), the indexer finds U from the space group and the
approximate cell alone (indexing.py), and the refinement (refinement.py) then fits cell,
orientation, detector and goniometer offsets to the observed pixels and frames.  The
output is the orientation file every child scan of the sample starts from (read-only).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from .. import steplog


def refinement_params(section: dict):
    from ..refinement import RefinementParams

    names = {f.name for f in fields(RefinementParams)}
    return RefinementParams(**{k: v for k, v in section.items() if k in names})


def indexing_params(section: dict):
    from ..indexing import IndexingParams

    names = {f.name for f in fields(IndexingParams)}
    return IndexingParams(**{k: v for k, v in section.items() if k in names})


def _index(entries, crystal, index_params, log):
    from ..indexing import IndexingParams, index_from_scratch
    from ..orientation import sample_q

    q = sample_q(entries)
    intensities = (np.concatenate([e.intensity for e in entries])
                   if all(e.intensity is not None for e in entries) else None)
    sol = index_from_scratch(q, crystal, index_params or IndexingParams(), intensities)
    log.info("indexed %.1f%% of %d peaks in %.2f s; cell %s", 100 * sol.fraction, len(q),
             sol.seconds, " ".join(f"{v:.4f}" for v in sol.cell.parameters))
    for note in sol.notes:
        log.warning("indexing: %s", note)
    return sol


def index_parent(entries, common, crystal, refine_params, log, index_params=None):
    """Index from scratch, refine, then index again with the refined geometry and refine
    once more (keeping the better of the two).  The second pass matters on large detectors:
    the calibration cannot know rot3 (a rotation about the beam), and a pattern rotated by a
    few pixels can make the first indexing settle on another setting of the lattice; after
    the first refinement the detector is right.  Returns (RefinementResult, summary)."""
    from dataclasses import replace

    from ..refinement import Model, refine

    log.info("indexing %d entries from scratch (space group %s, approximate cell %s)",
             len(entries), crystal.hm, crystal.cell.parameters)
    passes = []
    geometry_entries = entries
    model_det, offsets = common, {}
    best = None
    for npass in (1, 2):
        sol = _index(geometry_entries, crystal, index_params, log)
        model = Model(crystal.with_cell(crystal.constraints.symmetrize(sol.cell)), sol.U,
                      model_det, offsets)
        result = refine(entries, model, refine_params, log)
        passes.append({"pass": npass, "indexing_fraction": float(sol.fraction),
                       "rms_hkl": float(sol.rms_hkl), "rms_q": float(sol.rms_q),
                       "seconds": float(sol.seconds), "cell": list(sol.cell.parameters),
                       "n_candidates_tried": int(sol.n_candidates_tried), "notes": list(sol.notes),
                       "refined_fraction": result.fraction_indexed, "n_absent": result.n_absent})
        key = (sol.fraction, result.fraction_indexed, -result.n_absent)
        if best is None or key > best[0]:
            best = (key, result, npass)
        if sol.fraction > 0.98 and result.n_absent == 0:
            break  # nothing to gain from another pass
        # index again on Q from the refined detector and offsets
        model_det, offsets = result.model.detector, dict(result.model.offset_corrections)
        geometry_entries = [replace(e, scan=result.model.entry_geometry(e)) for e in entries]
    _, result, kept = best
    log.info("kept indexing pass %d of %d", kept, len(passes))
    summary = {k: v for k, v in passes[kept - 1].items() if k != "pass"}
    summary["fraction"] = summary.pop("indexing_fraction")
    return result, dict(summary, kept_pass=kept, passes=passes)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hklflow index_parent", description=__doc__.splitlines()[0])
    add_orientation_arguments(p)
    return p


def add_orientation_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments index_parent and refine_scan share: one sample at one temperature."""
    p.add_argument("--config", action="append", required=True, help="experiment config file(s)")
    p.add_argument("--sample", required=True)
    p.add_argument("--temperature", required=True, help="temperature label, e.g. 300K")
    p.add_argument("--scan-files", nargs="+", required=True, type=Path,
                   help="scan.nxs of every entry at this temperature")
    p.add_argument("--peaks-files", nargs="+", required=True, type=Path,
                   help="peaks.nxs of the same entries, in the same order")
    p.add_argument("--out", required=True, type=Path, help="orientation file to write")
    p.add_argument("--png", required=True, type=Path, help="residual picture to write")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    log = steplog.setup("index_parent")
    from .. import provenance
    from ..config import ConfigError, load_experiment
    from ..indexing import IndexingError
    from ..nexus import write_orientation_file
    from ..orientation import load_entries, plot_residuals
    from ..refinement import RefinementError

    try:
        exp = load_experiment(args.config)
        crystal = exp.samples[args.sample].crystal
        params = refinement_params(exp.reduction["refinement"])
        entries, common = load_entries(args.scan_files, args.peaks_files)
        result, summary = index_parent(entries, common, crystal, params, log,
                                       indexing_params(exp.reduction["indexing"]))
        prov = provenance.provenance("hklflow index_parent", parameters=params.__dict__,
                                     inputs=[*args.scan_files, *args.peaks_files, *args.config])
        label = f"{args.sample}/{args.temperature}"
        write_orientation_file(args.out, sample=args.sample, temperature=args.temperature,
                               parent=label, result=result, indexing=summary, provenance=prov)
        plot_residuals(result, f"{label} (parent, indexed from scratch)", args.png)
    except (ConfigError, IndexingError, RefinementError, ValueError, OSError) as exc:
        return steplog.fail(log, exc, (args.out, args.png))
    log.info("parent %s/%s: rms %.3f px, %.3f frames, %.1f%% indexed, cell %s", args.sample,
             args.temperature, result.rms_px, result.rms_frames, 100 * result.fraction_indexed,
             result.model.crystal.cell.parameters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
