"""The effects real beamline data have, for simulated experiments (experiment.SimulationSpec's
air, plate, beam and holder; each off by default, and the default frames bit for bit those
made before they existed).

* air: every photon reaching a pixel is attenuated by exp(-mu_air |r|), |r| the distance
  from the sample (the origin) to where the pixel's rays enter the detector
  (DetectorGeometry.lab_positions), mu_air from xraydb's 'air' at the wavelength;
* plate: a plate-shaped crystal {normal: [h, k, l], thickness: m, mu: 1/m}, fully bathed by
  the beam and laterally much larger than thick (edges neglected), whose face is the
  lattice plane (hkl): its normal in the lab at frame f is R(phi_f) U B hkl.  Everything the
  crystal scatters (Bragg, diffuse, TDS, its own background) reaching a pixel is multiplied
  by the transmission averaged over the plate's depth, computed by Gauss-Legendre quadrature
  of the path lengths (frames_kernel._plate_transmission_one), not by a closed form (the
  workflow's correction uses the closed form: this is its independent check);
* beam: the incident flux of frame f of n, b(f) = (1 - decay (f + 1/2) / n)
  (1 + ripple sin(2 pi (f + 1/2) / period)), multiplies everything in the frame; with
  monitor, the raw files carry MONITOR_SCALE * b(f) per frame (HDF5 frames: the dataset
  HDF5_MONITOR_DATASET of the scan's file; CBF frames: each header's '# Flux' line) and the
  scans table's monitor column names it;
* holder: an amorphous ring of the sample holder (kapton, glass) plus a flat part,
  amplitude * (exp(-(|Q| - ring_q)^2 / 2 ring_width^2) + flat) * solid angle * polarization
  (* sensor efficiency), photons per pixel and frame; with the air scatter it makes an
  empty-holder scan beside every sample scan (RAW/SAMPLE/TK/ENTRY_empty.h5, own noise),
  which holds no crystal (no Bragg, diffuse or the crystal's own background).  The plate's
  absorption does not apply to it; the air's attenuation and the beam's flux do.
"""
from __future__ import annotations

import math

import numpy as np

from . import frames_kernel

HC_EV_ANGSTROM = 12398.419843320026
MONITOR_SCALE = 1.0e5
HDF5_MONITOR_DATASET = "/entry/monitor/data"
CBF_MONITOR = "cbf:Flux"
HOLDER_FLAT = 0.25  # the holder's flat part, relative to its ring's peak (holder["flat"])
QUADRATURE_POINTS = 64
EMPTY_SUFFIX = "_empty"  # RAW/SAMPLE/TK/ENTRY_empty.h5

AIR_MODEL = "exp(-mu |r_pixel|), the whole path sample to pixel in air"
PLATE_MODEL = (
    "A = (1/t) integral_0^t exp(-mu (path_in(z) + path_out(z))) dz by 64-point Gauss-Legendre "
    "quadrature of the path lengths (over the part of [0, t] where mu (path_in + path_out) is "
    "within 60 of its least); plate normal n = R(phi_f) U B hkl, oriented along the beam; "
    "path_in = z / (n . k_i), path_out = (t - z) / (n . u) leaving through the back face "
    "(n . u > 0) or z / |n . u| through the entry face; u the pixel's direction; multiplies "
    "everything the crystal scatters (Bragg, diffuse, TDS, the simulation's background term, "
    "which stands for the sample's own incoherent scatter), not the holder or air scatter; "
    "reflections' plate_transmission at their centre (frame, pixel)")
BEAM_FORMULA = ("b(f) = (1 - decay (f + 0.5) / nframes) * (1 + ripple sin(2 pi (f + 0.5) / "
                "ripple_period_frames)), f = 0 .. nframes - 1; multiplies everything in frame f "
                "(crystal, background, air scatter, holder)")
HOLDER_MODEL = (
    "amplitude * (exp(-(|Q| - ring_q)^2 / (2 ring_width^2)) + flat) * solid angle * polarization "
    "(* sensor efficiency) * air attenuation * b(f), photons per pixel and frame, in every frame "
    "of every sample scan; not absorbed by the plate")


def any_effect(spec) -> bool:
    return bool(spec.air) or spec.plate is not None or spec.beam is not None \
        or spec.holder is not None


def _number(d: dict, key: str, what: str, low=None, high=None, low_open=False,
            default=None) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(v)):
        raise ValueError(f"{what}: {key} must be a finite number; got {v!r}")
    v = float(v)
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{what}: {key} must be {'>' if low_open else '>='} {low:g}; got {v:g}")
    if high is not None and v >= high:
        raise ValueError(f"{what}: {key} must be < {high:g}; got {v:g}")
    return v


def _keys(d, known: set, required: set, what: str) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a mapping; got {d!r}")
    unknown = set(d) - known
    missing = required - set(d)
    if unknown or missing:
        raise ValueError(f"{what}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
                         f" (keys: {', '.join(sorted(known))})")


def check_effects(spec, frame_format: str | None = None) -> None:
    """ValueError unless the spec's beamline effects are well formed (and, given the frame
    format, a beam monitor can be written in it)."""
    if not isinstance(spec.air, bool):
        raise ValueError(f"air must be true or false; got {spec.air!r}")
    if not isinstance(spec.plate_in_config, bool):
        raise ValueError(f"plate_in_config must be true or false; got {spec.plate_in_config!r}")
    if spec.plate is not None:
        p = spec.plate
        _keys(p, {"normal", "thickness", "mu"}, {"normal", "thickness", "mu"}, "plate")
        n = np.asarray(p["normal"], dtype=float)
        if n.shape != (3,) or not np.all(np.isfinite(n)) or not np.any(n != 0):
            raise ValueError(f"plate: normal must be three Miller indices, not all 0; got "
                             f"{p['normal']!r}")
        _number(p, "thickness", "plate", low=0.0, low_open=True)
        _number(p, "mu", "plate", low=0.0, low_open=True)
    if spec.beam is not None:
        b = spec.beam
        _keys(b, {"decay", "ripple", "ripple_period_frames", "monitor"}, set(), "beam")
        _number(b, "decay", "beam", low=0.0, high=1.0, default=0.0)
        _number(b, "ripple", "beam", low=0.0, high=1.0, default=0.0)
        _number(b, "ripple_period_frames", "beam", low=0.0, low_open=True, default=1.0)
        if not isinstance(b.get("monitor", False), bool):
            raise ValueError(f"beam: monitor must be true or false; got {b['monitor']!r}")
        if b.get("monitor", False) and frame_format not in (None, "hdf5", "cbf"):
            raise ValueError(f"beam: a monitor is written with the hdf5 and cbf frame formats "
                             f"only, not {frame_format!r} (set beam.monitor false)")
    if spec.holder is not None:
        h = spec.holder
        _keys(h, {"amplitude", "ring_q", "ring_width", "flat"}, {"amplitude", "ring_q",
                                                                 "ring_width"}, "holder")
        _number(h, "amplitude", "holder", low=0.0)
        _number(h, "ring_q", "holder", low=0.0)
        _number(h, "ring_width", "holder", low=0.0, low_open=True)
        _number(h, "flat", "holder", low=0.0, default=HOLDER_FLAT)


# --------------------------------------------------------------------------------------
# Air
# --------------------------------------------------------------------------------------
def air_mu_per_m(wavelength: float) -> float:
    """Linear attenuation coefficient of air (1/m) at the wavelength (Angstrom), xraydb's."""
    import xraydb
    return float(xraydb.material_mu("air", HC_EV_ANGSTROM / wavelength)) * 100.0


def air_transmission(spec, positions: np.ndarray):
    """exp(-mu_air |r|) of lab positions (..., 3) in m; 1.0 without air."""
    if not spec.air:
        return np.ones(positions.shape[:-1])
    return np.exp(-air_mu_per_m(spec.wavelength) * np.linalg.norm(positions, axis=-1))


# --------------------------------------------------------------------------------------
# Beam
# --------------------------------------------------------------------------------------
def beam_flux(beam: dict | None, nframes: int) -> np.ndarray:
    """b(f) of every frame (BEAM_FORMULA); ones without a beam setting."""
    if beam is None:
        return np.ones(nframes)
    x = np.arange(nframes, dtype=np.float64) + 0.5
    decay = float(beam.get("decay", 0.0))
    ripple = float(beam.get("ripple", 0.0))
    period = float(beam.get("ripple_period_frames", 1.0))
    return (1.0 - decay * x / nframes) * (1.0 + ripple * np.sin(2.0 * np.pi * x / period))


def has_monitor(spec) -> bool:
    return spec.beam is not None and bool(spec.beam.get("monitor", False))


def monitor_values(spec) -> np.ndarray | None:
    """The per-frame monitor the raw files carry (MONITOR_SCALE * b(f), float64), or None."""
    return MONITOR_SCALE * beam_flux(spec.beam, spec.nframes) if has_monitor(spec) else None


def monitor_column(spec, frame_format: str) -> str | None:
    """The scans table's monitor of the spec's scans, or None (no column)."""
    if not has_monitor(spec):
        return None
    if frame_format == "hdf5":
        return HDF5_MONITOR_DATASET
    if frame_format == "cbf":
        return CBF_MONITOR
    raise ValueError(f"beam: a monitor is written with the hdf5 and cbf frame formats only, "
                     f"not {frame_format!r}")


# --------------------------------------------------------------------------------------
# Plate
# --------------------------------------------------------------------------------------
def plate_normals(plate: dict, UB: np.ndarray, R: np.ndarray) -> np.ndarray:
    """The plate's unit normal in the lab, R @ UB @ hkl for every rotation R (n, 3, 3),
    oriented along the incident beam (n . (0, 0, 1) >= 0: into the plate from the face the
    beam enters)."""
    g = UB @ np.asarray(plate["normal"], dtype=np.float64)
    n = np.einsum("nij,j->ni", R, g / np.linalg.norm(g))
    return np.where(n[:, 2:3] < 0.0, -n, n)


def _rule():
    x, w = np.polynomial.legendre.leggauss(QUADRATURE_POINTS)
    return np.ascontiguousarray(x), np.ascontiguousarray(w)


def plate_transmission(c_in: float, c_out, mu: float, thickness: float) -> np.ndarray:
    """Depth-averaged transmission of a plate (frames_kernel._plate_transmission_one) for an
    incident cosine c_in (> 0) and outgoing cosines c_out (any shape) with the normal oriented
    along the beam; by quadrature."""
    c_out = np.asarray(c_out, dtype=np.float64)
    x, w = _rule()
    flat = np.ascontiguousarray(c_out.ravel())
    return frames_kernel.plate_transmission(float(c_in), flat, float(mu), float(thickness),
                                            x, w).reshape(c_out.shape)


def plate_transmission_at(plate: dict, normal: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """The plate's transmission towards unit directions (..., 3) with the lab normal of one
    frame (plate_normals)."""
    c_out = directions @ normal
    return plate_transmission(float(normal[2]), c_out, plate["mu"], plate["thickness"])


# --------------------------------------------------------------------------------------
# Holder
# --------------------------------------------------------------------------------------
def holder_intensity(holder: dict, q_abs: np.ndarray, pixel_scale: np.ndarray) -> np.ndarray:
    """The holder's photons per pixel and frame (HOLDER_MODEL, before the air and beam)."""
    ring = np.exp(-0.5 * ((q_abs - holder["ring_q"]) / holder["ring_width"]) ** 2)
    return holder["amplitude"] * (ring + holder.get("flat", HOLDER_FLAT)) * pixel_scale


def empty_scan_path(sample: str, temperature_folder: str, entry: str) -> str:
    """Where an empty-holder scan is written, relative to the experiment directory."""
    return f"raw/{sample}/{temperature_folder}/{entry}{EMPTY_SUFFIX}.h5"


# --------------------------------------------------------------------------------------
# truth.json
# --------------------------------------------------------------------------------------
def truth_sections(spec) -> dict:
    """truth.json's air, beam and holder sections (the plate's comes with its transmission
    range, after the first scan)."""
    out = {}
    if spec.air:
        out["air"] = {"mu_per_m": air_mu_per_m(spec.wavelength),
                      "energy_eV": HC_EV_ANGSTROM / spec.wavelength,
                      "source": "xraydb.material_mu('air', energy_eV) * 100", "model": AIR_MODEL}
    if spec.beam is not None:
        flux = beam_flux(spec.beam, spec.nframes)
        out["beam"] = {**dict(spec.beam), "formula": BEAM_FORMULA,
                       "flux_per_frame": flux.tolist(),
                       "monitor_written": has_monitor(spec),
                       **({"monitor_scale": MONITOR_SCALE,
                           "monitor": f"{MONITOR_SCALE:g} * b(f), float64: the HDF5 frames' "
                                      f"{HDF5_MONITOR_DATASET}, the CBF frames' '# Flux' "
                                      "header line; the scans table's monitor column"}
                          if has_monitor(spec) else {})}
    if spec.holder is not None:
        out["holder"] = {**dict(spec.holder), "flat": spec.holder.get("flat", HOLDER_FLAT),
                         "model": HOLDER_MODEL,
                         "empty_scans": "per sample scan, truth scans[ID].empty_scan (HDF5, "
                                        "dataset empty_scan_dataset): the same detector, angles "
                                        "and frames, its own noise; holds the holder ring and "
                                        "the air scatter (air_scatter, with the air's "
                                        "attenuation and the beam's flux when on), NOT the "
                                        "simulation's background term (the sample's own "
                                        "incoherent scatter) nor anything else of the crystal; "
                                        "not in the scans table",
                         "background_term_in_empty_scan": False}
    return out


def plate_truth(spec, transmission_range) -> dict:
    return {**dict(spec.plate), "mu_t": spec.plate["mu"] * spec.plate["thickness"],
            "model": PLATE_MODEL, "quadrature_points": QUADRATURE_POINTS,
            "in_config": bool(spec.plate_in_config),
            "transmission_range": [float(v) for v in transmission_range],
            "transmission_range_of": "every pixel (not gaps or defects) and frame of the "
                                     "first scan"}
