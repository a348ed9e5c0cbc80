"""Step calibrate_powder: the detector geometry of one calibration, refined from a calibrant
powder image or imported from a PONI file (hklflow.algorithms.calibration), with its record, picture
and version (hklflow.files.calibration: every accepted calibration is archived; the same
source and settings reuse their earlier version)."""
from __future__ import annotations

from pathlib import Path

from ..algorithms import calibration as cal
from ..base.errors import CalibrationError
from ..files.calibration import CalibrationArchive, version_key, write_calibration_file
from ..files.provenance import file_digest, provenance
from ..model.geometry import DetectorGeometry
from ..settings.params import CalibrationParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("calibrate_powder", __doc__)
    p.add_settings()
    p.add_output("--poni", "the accepted geometry (geometry.poni)")
    p.add_output("--nexus", "its record (calibration.nxs)")
    p.add_output("--png", "its picture (calibration.png)")
    p.add_output("--version", "which version it is (version.json)")
    return p


def source_record(params: CalibrationParams) -> dict:
    """The input files (paths and sha256) a calibration is made from."""
    if params.poni:
        out = {"poni": params.poni, "sha256": file_digest(params.poni)}
        if params.image and Path(params.image).is_file():  # shown in the picture only
            out.update(image=params.image, image_sha256=file_digest(params.image))
        return out
    return {"image": params.image, "dataset": params.dataset, "frame": params.frame,
            "sha256": file_digest(params.image)}


def run(args, log) -> None:
    params = settings_part(args.settings, CalibrationParams)
    for f in (params.poni, params.image if not params.poni else None):
        if f and not Path(f).is_file():
            raise CalibrationError(f"calibrations.{params.name}: {f} not found")
    source = source_record(params)
    key = version_key(source, params.settings())
    archive = CalibrationArchive(args.poni.parent, params.name)
    reuse = archive.find(key)
    if reuse is not None:
        version = reuse["version"]
        log.info("same source (%s) and settings as %s: reusing it", source["sha256"], version)
    else:
        # (here: a calibration reused draws nothing, and the picture loads matplotlib)
        from ..pictures.detector import plot_calibration

        log.info("calibration %s: %s", params.name, f"import {params.poni}" if params.poni
                 else f"refine {','.join(params.refine)} from {params.image}")
        result, image = cal.calibrate(params)
        pattern = None
        if image is not None:
            bad = result.bad_pixels if result.bad_pixels is not None else \
                result.geometry.detector_mask()
            pattern = cal.integrate_pattern(image, result.geometry, bad, params.polarization_fraction)
        record = provenance("hklflow calibrate_powder", {"calibration": params.as_dict()},
                            inputs=[p for p in (params.image, params.poni) if p and Path(p).is_file()])
        with archive.new_version({"key": key, "source": source, "settings": params.as_dict(),
                                  **result.summary()}) as (version, made):
            result.geometry.write_poni(made["poni"])
            write_calibration_file(made["nexus"], result, params, source=source,
                                   pattern=pattern, provenance=record)
            plot_calibration(made["png"], result, params, image, pattern,
                             title=f"calibration {params.name}: {result.method} from "
                                   f"{source.get('poni') or source.get('image')}")
        log.info("new calibration version %s", version)
    archive.publish(version, {"poni": args.poni, "nexus": args.nexus, "png": args.png,
                              "version": args.version})
    g = DetectorGeometry.from_poni_file(args.poni, params.detector, params.orientation)
    log.info("%s: version %s (%s)", params.name, version, cal.describe(g))


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
