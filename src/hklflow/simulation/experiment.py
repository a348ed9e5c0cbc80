"""Simulated experiments: config, scans table, raw frames and a truth file.

The physics follows hklflow's conventions (geometry.py, crystal.py), which the tests pin to
pyFAI and cctbx; so the truth here is truth in those conventions.  What is simulated:

* a powder calibrant image at the calibration geometry (simulation/powder.py);
* per sample, temperature and entry a rotation scan: Bragg spots where the Ewald condition
  puts them (3D Gaussians in rows, cols and rotation angle, integrated over each pixel and
  each frame, so partials split correctly), intensities from a symmetric pseudo-random
  structure-factor model spanning `intensity_decades` decades with a Wilson fall-off,
  Lorentz and polarization factors; diffuse scattering defined in HKL (satellites at
  half-integer (h, k) below a transition temperature, thermal diffuse scattering around
  Bragg nodes); background; Poisson noise times the detector's gain (counts per photon, 1
  by default); module gaps (-1), hot and dead pixels;
* the scans' true detector geometry differs slightly from the calibration (`scan_drift`),
  the cell changes with temperature and the orientation drifts slightly on cooling;
* with a `sensor` (a thick one), its parallax and efficiency, in the calibrant image and
  the scans: every spot is recorded where hklflow's parallax model puts it (model/sensor.py:
  its mean absorption depth; rendered as a Gaussian there, the depth profile's tail left
  out), every pixel's diffuse and background intensity is that of the direction it looks
  along, and everything is counted with the efficiency 1 - exp(-mu t / cos alpha);
  truth.json gives the sensor, each reflection's displacement (px) and efficiency;
* the beamline's effects, each off by default (beamline.py): air attenuation (`air`), a
  plate crystal's absorption (`plate`, also written to the config's samples.NAME.shape
  unless `plate_in_config` is false), the beam's decay and ripple with an optional monitor
  (`beam`), a holder ring with an empty-holder scan beside every sample scan (`holder`).
  Their frames are drawn with independent noise streams for every frame (see
  frame_noise_states), and truth.json records each effect that is on.

Two seeds: `seed` fixes everything structural (structure factors, defects, the calibrant
image) and, while `noise_seed` is None, the scans' Poisson noise too.  `noise_seed` N draws
the scans' noise from other streams: the same experiment (config, scans table, truth.json,
calibrant image) with other noise in its frames.
"""
from __future__ import annotations

import json
import logging
import math
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml
from scipy.ndimage import distance_transform_edt

from ..base.atomic import write_text_atomically
from ..model.crystal import Crystal, UnitCell, random_rotation
from ..model.geometry import (DetectorGeometry, Goniometer, ScanAngles, ScanGeometry, axis_rotation,
                              lorentz_zeta, pyfai_detector, q_from_directions)
from ..model.scan import temperature_label
from ..model.sensor import HC_KEV_ANGSTROM
from . import beamline, frames_kernel
from .powder import simulate_calibrant_image
from .writers import RAW_DATASET, CbfFramesWriter, EigerScanWriter, Hdf5StackWriter

log = logging.getLogger("hklflow.simulate")



@dataclass(frozen=True)
class SampleModel:
    name: str
    space_group: str
    cell: tuple  # true cell at the parent (first) temperature
    temperatures: tuple = (300.0, 200.0, 100.0)  # K, first = parent
    # per kelvin: relative change of a, b, c and change of alpha, beta, gamma in degrees
    expansion: tuple = (6e-6, 6e-6, 9e-6, 0.0, 0.0, 0.0)
    orientation_seed: int = 1
    drift_deg_per_temperature: float = 0.05  # orientation change between temperatures
    transition_temperature: float = 150.0  # satellites exist below it
    approx_cell_error: float = 0.01  # config cell = true cell scaled by (1 + this)

    def crystal_at(self, temperature: float) -> Crystal:
        dT = temperature - self.temperatures[0]
        p = list(self.cell)
        for i in range(3):
            p[i] *= 1.0 + self.expansion[i] * dT
        for i in range(3, 6):
            p[i] += self.expansion[i] * dT
        return Crystal(self.space_group, UnitCell(*p))

    def U_at(self, temperature: float) -> np.ndarray:
        rng = np.random.default_rng(self.orientation_seed)
        U0 = random_rotation(rng)
        axis = rng.normal(size=3)
        steps = sorted(self.temperatures, reverse=True).index(temperature) \
            if temperature in self.temperatures else 0
        return axis_rotation(axis, math.radians(self.drift_deg_per_temperature * steps)) @ U0


@dataclass(frozen=True)
class EntryModel:
    name: str
    det_shift: tuple = (0.0, 0.0, 0.0)  # (d_dist, d_poni1, d_poni2) in m, as in the scans table
    offsets: dict = field(default_factory=dict)  # offset axis name -> deg


@dataclass(frozen=True)
class SimulationSpec:
    name: str
    detector: str
    wavelength: float  # Angstrom
    calibration_geometry: tuple  # (dist, poni1, poni2, rot1, rot2, rot3): m, rad
    rough_start: tuple  # the config's rough calibration start (dist, poni1, poni2) in m
    scan_drift: tuple  # true scan geometry minus calibration: (dist, poni1, poni2, rot1, rot2, rot3)
    scan_axis: tuple
    scan_sense: int
    offset_axes: dict
    samples: tuple
    entries: tuple
    nframes: int
    phi_start: float
    phi_step: float
    calibrant: str = "CeO2"
    # pyFAI's detector orientation of the frames (instrument.detector.orientation)
    detector_orientation: int = 3
    spot_sigma_px: float = 0.8
    mosaicity_deg: float = 0.08
    intensity_decades: float = 5.0
    bragg_scale: float = 2.0e5  # expected counts of the strongest reflection (before L, P)
    wilson_b: float = 0.8  # Angstrom^2
    background: float = 6.0  # counts/pixel/frame at normal incidence
    air_scatter: float = 4.0  # counts/pixel/frame, decaying with 2 theta
    satellite_amplitude: float = 4.0  # counts/pixel/frame at the satellite centre, lowest T
    satellite_sigma_hk: float = 0.06  # r.l.u.
    satellite_sigma_l: float = 0.25  # r.l.u.
    tds_amplitude: float = 0.02  # counts scale of the thermal diffuse term at the parent T
    tds_kappa: float = 0.02  # 1/Angstrom
    tds_reach: float = 0.12  # r.l.u.: Gaussian envelope of the thermal diffuse term
    polarization_fraction: float = 0.99
    hot_pixels: int = 5
    dead_pixels: int = 5
    hot_value: int = 1048575
    seed: int = 20261121
    # the scans' noise: None, the streams of `seed` (bit for bit the frames of before this
    # field); N >= 0, streams of N (module docstring).  Not written to truth.json.
    noise_seed: int | None = None
    # counts per photon: a pixel holds round(gain * Poisson(expected photons)); truth's counts,
    # background and diffuse amplitudes are photons.  Not written to the config.
    gain: float = 1.0
    # a quick-look grid bound written into the experiment's config (None: the default 401^3)
    transform_max_voxels: int | None = None
    # a thick sensor {material, thickness} (model.sensor.Sensor): simulated, and written to the
    # config's instrument.detector.sensor and the raw files' headers; None: none (and no key
    # in truth.json's simulation, as before it existed)
    sensor: dict | None = None
    # Beamline effects (beamline.py; each off by default, the default frames as before it
    # existed, and recorded in truth.json only when on):
    # air between sample and pixel: every photon reaching a pixel times exp(-mu_air |r_pixel|)
    air: bool = False
    # a plate crystal's absorption {normal: [h, k, l] of its face, thickness: m, mu: 1/m}
    plate: dict | None = None
    # write the plate as the config's samples.NAME.shape (False: the workflow is not told)
    plate_in_config: bool = True
    # the incident flux per frame {decay, ripple, ripple_period_frames, monitor: bool}
    beam: dict | None = None
    # an amorphous holder ring {amplitude: photons/pixel/frame, ring_q: 1/A, ring_width: 1/A,
    # flat: fraction (default 0.25)}, and an empty-holder scan beside every sample scan
    holder: dict | None = None

    def calibration(self) -> DetectorGeometry:
        return DetectorGeometry(self.detector, *self.calibration_geometry, wavelength=self.wavelength,
                                orientation=self.detector_orientation, sensor=self.sensor)

    def goniometer(self) -> Goniometer:
        return Goniometer(tuple(self.scan_axis), self.scan_sense, tuple(self.offset_axes.items()))

    def true_scan_geometry(self, entry: EntryModel) -> DetectorGeometry:
        cal = self.calibration()
        d = self.scan_drift
        g = replace(cal, dist=cal.dist + d[0], poni1=cal.poni1 + d[1], poni2=cal.poni2 + d[2],
                    rot1=cal.rot1 + d[3], rot2=cal.rot2 + d[4], rot3=cal.rot3 + d[5])
        return g.shifted(*entry.det_shift)


def _px(detector: str, rows: float, cols: float) -> tuple[float, float]:
    """PONI coordinates (m) of a point given in pixels."""
    d = pyfai_detector(detector)
    return rows * float(d.pixel1), cols * float(d.pixel2)


def preset(name: str) -> SimulationSpec:
    """Named simulations: 'demo' (the README's demo experiment), 'tiny' and its hexagonal
    and monoclinic variants (tests), 'thick_sensor' (a 1 mm CdTe sensor at 87 keV),
    'absorbing_plate' (tiny with the beamline's effects: sensor, air, plate, beam, holder)."""
    if name == "demo":
        det = "PilatusCdTe300k"
        p1, p2 = _px(det, 305.3, 232.8)
        pix = _px(det, 1.0, 1.0)[0]
        return SimulationSpec(
            name="demo", detector=det, wavelength=0.41328,  # 30 keV
            calibration_geometry=(0.125, p1, p2, 0.0042, -0.0031, 0.011),
            rough_start=(0.122, p1 + 4 * pix, p2 - 4 * pix),
            scan_drift=(2.0e-4, 0.3 * pix, -0.25 * pix, 0.0, 0.0, 0.0),
            scan_axis=(0.0, 1.0, 0.0), scan_sense=1,
            offset_axes={"omega": (1.0, 0.0, 0.0), "chi": (0.0, 0.0, 1.0)},
            samples=(SampleModel("lsco", "I 4/m m m", (3.7801, 3.7801, 13.2305, 90, 90, 90),
                                 temperatures=(300.0, 200.0, 100.0), orientation_seed=7),),
            entries=(EntryModel("f1"),
                     EntryModel("f2", det_shift=(0.0, 10 * pix, 8 * pix)),
                     EntryModel("f3", det_shift=(0.0, -9 * pix, -10 * pix),
                                offsets={"omega": -1.5, "chi": 2.0})),
            nframes=360, phi_start=-90.0, phi_step=0.5,
            # in frame units like a 0.1 deg-step scan of a crystal with ~0.06 deg mosaicity
            mosaicity_deg=0.3,
            # a 300k detector and 9 scans: a 201^3 grid (0.065 GB per job) is the quick look
            transform_max_voxels=201 ** 3)
    if name == "tiny":
        det = "Pilatus300k"
        p1, p2 = _px(det, 300.4, 250.6)
        pix = _px(det, 1.0, 1.0)[0]
        return SimulationSpec(
            name="tiny", detector=det, wavelength=0.41328,
            calibration_geometry=(0.12, p1, p2, 0.003, -0.002, 0.01),
            rough_start=(0.118, p1 + 3 * pix, p2 - 3 * pix),
            scan_drift=(1.0e-4, 0.2 * pix, -0.2 * pix, 0.0, 0.0, 0.0),
            scan_axis=(0.0, 1.0, 0.0), scan_sense=1,
            offset_axes={"omega": (1.0, 0.0, 0.0), "chi": (0.0, 0.0, 1.0)},
            samples=(SampleModel("tiny", "I 41/a m d", (5.12, 5.12, 7.43, 90, 90, 90),
                                 temperatures=(300.0, 100.0), orientation_seed=3),),
            entries=(EntryModel("f1"),
                     EntryModel("f2", det_shift=(0.0, 9 * pix, 7 * pix),
                                offsets={"omega": -1.0, "chi": 1.5})),
            nframes=60, phi_start=0.0, phi_step=1.0, mosaicity_deg=0.5,
            transform_max_voxels=121 ** 3)
    if name in ("tiny_hexagonal", "tiny_monoclinic"):
        samples = {
            # a hexagonal cell (orthogonal-axes shortcuts would get B wrong here)
            "tiny_hexagonal": SampleModel("hexa", "P 63/m m c", (5.52, 5.52, 8.83, 90, 90, 120),
                                          temperatures=(300.0, 100.0), orientation_seed=11,
                                          expansion=(7e-6, 7e-6, 1.1e-5, 0, 0, 0)),
            # monoclinic, unique axis b, beta changing with temperature
            "tiny_monoclinic": SampleModel("mono", "C 1 2/c 1", (9.71, 8.87, 5.27, 90, 105.6, 90),
                                           temperatures=(300.0, 100.0), orientation_seed=5,
                                           expansion=(6e-6, 8e-6, 1e-5, 0, 1.5e-4, 0)),
        }
        # 180 degrees of rotation, as a parent scan covers: cell, distance and tilts separate
        return replace(preset("tiny"), name=name, samples=(samples[name],), nframes=180)
    if name == "thick_sensor":
        # a 1 mm CdTe sensor at 87 keV (6-ID-D): spots out to 2theta = 20 deg in the corners,
        # recorded up to 0.8 px further out than where they hit the sensor; the beam near the
        # centre, 0.185 m away; two entries.  The detector does not move after its
        # calibration (no scan drift) and is not turned about the beam (rot3 0, which powder
        # rings cannot see): the calibration's detector can be held fixed
        det = "PilatusCdTe300k"
        p1, p2 = _px(det, 310.3, 243.6)
        pix = _px(det, 1.0, 1.0)[0]
        return SimulationSpec(
            name="thick_sensor", detector=det, wavelength=HC_KEV_ANGSTROM / 87.0,
            calibration_geometry=(0.185, p1, p2, 0.002, -0.0015, 0.0),
            rough_start=(0.182, p1 + 3 * pix, p2 - 3 * pix),
            scan_drift=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            scan_axis=(0.0, 1.0, 0.0), scan_sense=1,
            offset_axes={"omega": (1.0, 0.0, 0.0), "chi": (0.0, 0.0, 1.0)},
            samples=(SampleModel("lsco", "I 4/m m m", (3.7801, 3.7801, 13.2305, 90, 90, 90),
                                 temperatures=(300.0,), orientation_seed=7),),
            entries=(EntryModel("f1"),
                     EntryModel("f2", det_shift=(0.0, 9 * pix, 7 * pix),
                                offsets={"omega": -1.0, "chi": 1.5})),
            nframes=180, phi_start=0.0, phi_step=1.0, mosaicity_deg=0.3,
            sensor={"material": "CdTe", "thickness": 1e-3}, transform_max_voxels=121 ** 3)
    if name == "absorbing_plate":
        # tiny's experiment with the beamline's effects (beamline.py): a 1 mm CdTe sensor (as
        # thick_sensor), air, a plate crystal of mu t = 0.8 with its face (010) (its normal
        # within 60 deg of the beam in every frame), the beam decaying by 10% with a 2%
        # ripple (no monitor), a holder ring with its empty-holder scans; the diffuse
        # satellites strong against a weak background
        base = preset("tiny")
        return replace(base, name="absorbing_plate", detector="PilatusCdTe300k",
                       sensor={"material": "CdTe", "thickness": 1e-3},
                       satellite_amplitude=40.0, background=1.0, air=True,
                       plate={"normal": [0, 1, 0], "thickness": 1.0e-4, "mu": 8000.0},
                       beam={"decay": 0.10, "ripple": 0.02, "ripple_period_frames": 37.0,
                             "monitor": False},
                       holder={"amplitude": 3.0, "ring_q": 0.22, "ring_width": 0.03})
    if name == "pilatus2m":
        # a 2M-class acquisition (bench/live.py: live reduction beside a large detector): the
        # demo's crystal and entries at one temperature, three 60 deg scans of 600 frames of
        # 0.1 deg on a Pilatus CdTe 2M (2.5 Mpixel a frame, the same pixels), the beam near
        # its centre, 0.3 m away
        det = "PilatusCdTe2M"
        p1, p2 = _px(det, 842.3, 731.6)
        pix = _px(det, 1.0, 1.0)[0]
        demo = preset("demo")
        return replace(demo, name="pilatus2m", detector=det,
                       calibration_geometry=(0.3, p1, p2) + demo.calibration_geometry[3:],
                       rough_start=(0.297, p1 + 4 * pix, p2 - 4 * pix),
                       samples=(replace(demo.samples[0], temperatures=(300.0,)),),
                       nframes=600, phi_step=0.1, mosaicity_deg=0.1)
    raise ValueError(f"unknown simulation preset {name!r} (known: {', '.join(PRESETS)})")


PRESETS = ("demo", "tiny", "tiny_hexagonal", "tiny_monoclinic", "thick_sensor", "absorbing_plate",
           "pilatus2m")


# --------------------------------------------------------------------------------------
# Structure-factor model
# --------------------------------------------------------------------------------------
def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def structure_intensity(crystal: Crystal, hkl: np.ndarray, spec: SimulationSpec) -> np.ndarray:
    """|F|^2-like intensity, equal for Laue-equivalent reflections, in (0, 1]:
    log-uniform over `intensity_decades` decades times a Wilson fall-off; 0 if absent."""
    can = crystal.canonical_hkl(hkl).astype(np.int64) + 512
    key = (can[:, 0] * 1024 + can[:, 1]) * 1024 + can[:, 2] + np.int64(spec.seed) * (1 << 31)
    u = (_mix64(key.astype(np.uint64)) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    s2 = 0.25 / crystal.cell.d_spacing(hkl) ** 2  # (sin theta / lambda)^2
    inten = 10.0 ** (-spec.intensity_decades * u) * np.exp(-2.0 * spec.wilson_b * s2)
    return np.where(crystal.is_absent(hkl), 0.0, inten)


def polarization_factor(tth, chi, fraction):
    """pyFAI's polarization factor (same formula as AzimuthalIntegrator.polarization)."""
    return 0.5 * (1.0 + np.cos(tth) ** 2 - fraction * np.cos(2.0 * chi) * np.sin(tth) ** 2)


# --------------------------------------------------------------------------------------
# One scan
# --------------------------------------------------------------------------------------
@dataclass
class ScanTruth:
    geometry: DetectorGeometry
    crystal: Crystal
    U: np.ndarray
    reflections: dict  # column name -> array


def predict_scan_reflections(spec: SimulationSpec, sample: SampleModel, temperature: float,
                             entry: EntryModel):
    """Truth reflections of one scan entry (every in-range reflection on the detector)."""
    geom = spec.true_scan_geometry(entry)
    crystal = sample.crystal_at(temperature)
    U = sample.U_at(temperature)
    UB = U @ crystal.B
    angles = ScanAngles(spec.phi_start, spec.phi_step, spec.nframes)
    scan = ScanGeometry(geom, spec.goniometer(), angles, dict(entry.offsets), UB)
    d_min = spec.wavelength / (2.0 * math.sin(geom.max_two_theta() / 2.0)) * 0.999
    hkl = crystal.reflections_within(d_min)
    hh, rows, cols, z, phi = scan.predict(hkl)
    ny, nx = geom.shape
    ok = np.isfinite(rows) & geom.on_detector(np.nan_to_num(rows, nan=-1), np.nan_to_num(cols, nan=-1))
    hh, rows, cols, z, phi = hh[ok], rows[ok], cols[ok], z[ok], phi[ok]
    R = spec.goniometer().rotation(phi, entry.offsets)
    q = np.einsum("nij,nj->ni", R, hh @ UB.T)
    zeta = lorentz_zeta(q, spec.wavelength, spec.goniometer().offset_rotation(entry.offsets)
                        @ spec.goniometer().axis)
    sigma_phi = np.clip(spec.mosaicity_deg / np.maximum(np.abs(zeta), 1e-3), spec.mosaicity_deg, 3.0)
    sigma_z = sigma_phi / abs(spec.phi_step)
    in_scan = (z + 4 * sigma_z > 0) & (z - 4 * sigma_z < spec.nframes) & (np.abs(zeta) > 0.02)
    hh, rows, cols, z, phi, zeta, sigma_z = (a[in_scan] for a in (hh, rows, cols, z, phi, zeta, sigma_z))
    tth, chi = geom.two_theta_chi(rows, cols)
    inten = structure_intensity(crystal, hh.astype(int), spec)
    counts = spec.bragg_scale * inten * polarization_factor(tth, chi, spec.polarization_fraction) \
        / np.abs(zeta)
    sensor = {}
    if geom.sensor is not None:  # counted with the efficiency, recorded further out
        efficiency = geom.sensor_efficiency(rows, cols)
        counts = counts * efficiency
        rows0, cols0 = geom.with_sensor(None).pixel_from_direction(geom.lab_positions(rows, cols))
        sensor = {"parallax_px": np.hypot(rows - rows0, cols - cols0),
                  "row_without_parallax": rows0, "col_without_parallax": cols0,
                  "efficiency": efficiency}
    gaps = geom.detector_mask()
    ri = np.clip(rows.astype(int), 0, ny - 1)
    ci = np.clip(cols.astype(int), 0, nx - 1)
    # expected background per pixel and frame under the spot (the render_scan formula), and
    # I/sigma of a summation over a box of +-2 sigma in rows, cols and frames (>= 1 frame)
    dirs = geom.lab_positions(rows, cols)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    solid = (dirs @ geom.tilt_matrix)[:, 2] ** 3  # pyFAI's solid angle, 1 at normal incidence
    bg = (spec.background * polarization_factor(tth, chi, spec.polarization_fraction) * solid
          + spec.air_scatter * np.exp(-tth / 0.15) * solid)
    if geom.sensor is not None:
        bg = bg * sensor["efficiency"]
    footprint = (4 * spec.spot_sigma_px) ** 2 * np.maximum(1.0, 4 * sigma_z)
    i_over_sigma = counts / np.sqrt(counts + bg * footprint)
    # distance (pixels) to the nearest gap or detector edge: spots closer are cut

    edge = np.pad(~gaps, 1, constant_values=False)
    dist_bad = distance_transform_edt(edge)[1:-1, 1:-1]
    refl = {
        "h": hh[:, 0].astype(int), "k": hh[:, 1].astype(int), "l": hh[:, 2].astype(int),
        "row": rows, "col": cols, "frame": z, "phi": phi,
        "sigma_row": np.full(len(z), spec.spot_sigma_px), "sigma_col": np.full(len(z), spec.spot_sigma_px),
        "sigma_frame": sigma_z, "counts": counts, "zeta": zeta, "two_theta_deg": np.degrees(tth),
        "in_gap": gaps[ri, ci], "gap_distance_px": dist_bad[ri, ci],
        "background": bg, "i_over_sigma": i_over_sigma, **sensor,
    }
    if spec.air or spec.plate is not None or spec.beam is not None:
        # what the beamline's effects make of `counts` at the reflection's centre (counts,
        # background and i_over_sigma are without them)
        pos = geom.lab_positions(rows, cols)
        if spec.air:
            refl["air_transmission"] = beamline.air_transmission(spec, pos)
        if spec.plate is not None:
            normals = beamline.plate_normals(spec.plate, UB, scan.sample_rotation(z))
            c_out = np.einsum("ni,ni->n", dirs, normals)
            x, w = beamline._rule()
            refl["plate_transmission"] = np.array([
                frames_kernel._plate_transmission_one(float(n[2]), float(c), spec.plate["mu"],
                                                      spec.plate["thickness"], x, w)
                for n, c in zip(normals, c_out)])
        if spec.beam is not None:
            flux = beamline.beam_flux(spec.beam, spec.nframes)
            refl["flux"] = flux[np.clip(np.floor(z).astype(int), 0, spec.nframes - 1)]
    return ScanTruth(geom, crystal, U, refl), scan


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def frame_noise_states(spec: SimulationSpec, sample: SampleModel, temperature: float,
                       entry: EntryModel) -> np.ndarray:
    """The starting state of each frame's random stream (uint64, one per frame of the scan):
    an independent splitmix64 output of (noise seed, scan) for every frame, so that no two
    streams overlap within any practical length; the noise seed is `noise_seed`, else
    `seed`.  (Until issue 81 the default states were one draw apart from frame to frame, so
    a frame's noise repeated a pixel later in the next frame's: χ²/ν of the demo's
    equivalents was 1.43-1.48 where independent noise gives 1.0.)"""
    key = zlib.crc32(f"{sample.name}/{temperature:g}/{entry.name}".encode())
    f = np.arange(spec.nframes, dtype=np.uint64)
    noise_seed = spec.seed % 2 ** 64 if spec.noise_seed is None else spec.noise_seed
    with np.errstate(over="ignore"):
        base = _mix64(_mix64(np.array([noise_seed], dtype=np.uint64)) ^ np.uint64(key))
        return _mix64(base + f * _GOLDEN)


def check_noise_settings(spec: SimulationSpec) -> None:
    """ValueError unless gain is a positive finite number and noise_seed None or an integer
    in [0, 2^64)."""
    gain = spec.gain
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) \
            or gain <= 0:
        raise ValueError(f"the detector gain must be a positive number (counts per photon); "
                         f"got {gain!r}")
    n = spec.noise_seed
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))
                          or not 0 <= int(n) < 2 ** 64):
        raise ValueError(f"the noise seed must be a whole number from 0 to 2^64 - 1; got {n!r}")


def _check_int32(frame_max, spec, sample, T, entry, start: int) -> None:
    """OverflowError if a frame's largest count (frame_max, from frame `start` on) does not
    fit the int32 raw frames."""
    if frame_max.max() >= frames_kernel.INT32_MAX:
        j = int(np.argmax(frame_max))
        raise OverflowError(
            f"scan {sample.name}/{temperature_label(T)}/{entry.name}, frame {start + j}: "
            f"gain {spec.gain:g} makes a pixel {frame_max[j]:.4g} counts, more than the "
            f"int32 raw frames hold (below {frames_kernel.INT32_MAX}); use a smaller gain")


def render_scan(spec: SimulationSpec, sample: SampleModel, temperature: float, entry: EntryModel,
                truth: ScanTruth, scan: ScanGeometry, write_chunk, defects, chunk_frames=16,
                *, empty: bool = False, expected=None) -> dict:
    """Render all frames of a scan, passing (start, int32 array) chunks to write_chunk.

    With any of the spec's beamline effects (beamline.py) the frames are rendered by
    frames_kernel.render_frames_effects; empty: the scan's empty-holder scan (holder and air
    scatter, no crystal, its own noise); expected: a callable (start, float64 array) given
    every chunk's expected photons per pixel (then the effects' kernel is used whatever the
    effects: the same law as the plain kernel, not its frames bit for bit).  Returns
    {"plate_transmission_range": (min, max) over the scan's good pixels and frames} with a
    plate (else {}).

    OverflowError if the gain puts a count at or above 2^31 - 1 (int32 frames cannot hold it,
    and hklflow's default trusted_max takes that value for an overload)."""
    geom = truth.geometry
    ny, nx = geom.shape
    dirs = geom.pixel_directions()
    q_pix = np.ascontiguousarray(q_from_directions(dirs, spec.wavelength))
    ai = geom.to_pyfai(parallax=False)  # (the pixels' solid angles: their own places)
    solid = np.asarray(ai.solidAngleArray(), dtype=np.float64)
    efficiency = 1.0
    if geom.sensor is None:
        pol = np.asarray(ai.polarization(factor=spec.polarization_fraction), dtype=np.float64)
    else:  # where each pixel looks, times the sensor's efficiency there
        rows, cols = geom.pixel_grid()
        efficiency = geom.sensor_efficiency(rows, cols)
        pol = geom.polarization(rows, cols, spec.polarization_fraction) * efficiency
    tth = np.arccos(np.clip(dirs[..., 2], -1, 1))
    pixel_scale = np.ascontiguousarray(solid * pol)
    background = np.ascontiguousarray(spec.background * pixel_scale
                                      + spec.air_scatter * np.exp(-tth / 0.15) * solid
                                      * efficiency)
    UB = truth.U @ truth.crystal.B
    UBinv = np.linalg.inv(UB)
    R = scan.sample_rotation(np.arange(spec.nframes) + 0.5)
    M_frames = np.ascontiguousarray(np.einsum("ij,nkj->nik", UBinv, R))
    T = temperature
    tc = sample.transition_temperature
    sat = spec.satellite_amplitude * min(1.0, max(0.0, (tc - T) / (0.5 * tc)))
    tds = spec.tds_amplitude * T / sample.temperatures[0]
    diffuse = np.array([sat, spec.satellite_sigma_hk, spec.satellite_sigma_l, tds,
                        spec.tds_kappa ** 2, spec.tds_reach])
    # Bragg intensity of every node in a box (absent nodes 0), for the TDS term
    r = truth.reflections
    lim = [int(np.max(np.abs(r[c]))) + 2 if len(r[c]) else 2 for c in ("h", "k", "l")]
    grid = np.stack(np.meshgrid(*[np.arange(-n, n + 1) for n in lim], indexing="ij"), -1).reshape(-1, 3)
    nz = np.any(grid != 0, axis=1)
    table = np.zeros(len(grid))
    table[nz] = structure_intensity(truth.crystal, grid[nz], spec)
    table = np.ascontiguousarray(table.reshape([2 * n + 1 for n in lim]))
    tbl_off = np.array(lim, dtype=np.int64)
    ptr, index = frames_kernel.frame_spot_lists(spec.nframes, r["frame"], r["sigma_frame"])
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    buf = np.empty((chunk_frames, ny, nx), dtype=np.int32)
    frame_max = np.zeros(chunk_frames, dtype=np.float64)
    if empty or expected is not None or beamline.any_effect(spec):
        return _render_with_effects(
            spec, sample, T, entry, truth, scan, write_chunk, defects, chunk_frames, empty,
            dirs=dirs, q_pix=q_pix, solid=solid, efficiency=efficiency, tth=tth,
            pixel_scale=pixel_scale, R=R, M_frames=M_frames, diffuse=diffuse, table=table,
            tbl_off=tbl_off, ptr=ptr, index=index, expected=expected)
    states = frame_noise_states(spec, sample, T, entry)
    for start in range(0, spec.nframes, chunk_frames):
        n = min(chunk_frames, spec.nframes - start)
        out = buf[:n]
        frames_kernel.render_frames(
            start, n, q_pix, pixel_scale, background, defects, spec.hot_value, M_frames,
            np.ascontiguousarray(truth.crystal.B), diffuse, table, tbl_off, ptr, index,
            f64(r["row"]), f64(r["col"]), f64(r["frame"]), f64(r["sigma_row"]),
            f64(r["sigma_col"]), f64(r["sigma_frame"]), f64(r["counts"]), states,
            float(spec.gain), out, frame_max[:n])
        _check_int32(frame_max[:n], spec, sample, T, entry, start)
        write_chunk(start, out)
    return {}


def _render_with_effects(spec, sample, T, entry, truth, scan, write_chunk, defects, chunk_frames,
                         empty, *, dirs, q_pix, solid, efficiency, tth, pixel_scale, R, M_frames,
                         diffuse, table, tbl_off, ptr, index, expected=None) -> dict:
    """render_scan's frames with the beamline's effects (beamline.py), or the empty-holder
    scan (empty): frame_flux * (crystal_scale * (crystal + its background) + other_bg).
    expected: a callable (start, float64 array) given every chunk's expected photons."""
    geom = truth.geometry
    ny, nx = geom.shape
    air = beamline.air_transmission(spec, geom.lab_positions(*geom.pixel_grid()))
    crystal_bg = np.ascontiguousarray(spec.background * pixel_scale)
    other = spec.air_scatter * np.exp(-tth / 0.15) * solid * efficiency
    if spec.holder is not None:
        other = other + beamline.holder_intensity(spec.holder, np.linalg.norm(q_pix, axis=-1),
                                                  pixel_scale)
    other_bg = np.ascontiguousarray(other * air)
    flux = np.ascontiguousarray(beamline.beam_flux(spec.beam, spec.nframes))
    plate = spec.plate if not empty else None
    normals = None
    if plate is not None:
        normals = beamline.plate_normals(plate, truth.U @ truth.crystal.B, R)
    good = defects == 0
    tr = [np.inf, -np.inf]
    r = truth.reflections
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    if empty:  # no crystal: no diffuse, no spots, its own noise
        diffuse = np.zeros_like(diffuse)
        ptr = np.zeros(spec.nframes + 1, dtype=np.int64)
        index = np.zeros(0, dtype=np.int64)
        r = {c: np.zeros(0) for c in ("row", "col", "frame", "sigma_row", "sigma_col",
                                      "sigma_frame", "counts")}
        states = frame_noise_states(spec, sample, T,
                                    replace(entry, name=entry.name + beamline.EMPTY_SUFFIX))
    else:
        states = frame_noise_states(spec, sample, T, entry)
    buf = np.empty((chunk_frames, ny, nx), dtype=np.int32)
    scale = np.empty((chunk_frames, ny, nx), dtype=np.float64)
    frame_max = np.zeros(chunk_frames, dtype=np.float64)
    lam = np.empty((chunk_frames if expected is not None else 0, ny, nx), dtype=np.float64)
    B = np.ascontiguousarray(truth.crystal.B)
    for start in range(0, spec.nframes, chunk_frames):
        n = min(chunk_frames, spec.nframes - start)
        out = buf[:n]
        for j in range(n):
            if empty:
                scale[j] = 0.0
            elif plate is not None:
                A = beamline.plate_transmission_at(plate, normals[start + j], dirs)
                tr = [min(tr[0], float(A[good].min())), max(tr[1], float(A[good].max()))]
                scale[j] = A * air
            else:
                scale[j] = air
        frames_kernel.render_frames_effects(
            start, n, q_pix, pixel_scale, crystal_bg, other_bg, scale[:n], flux, defects,
            spec.hot_value, M_frames, B, diffuse, table, tbl_off, ptr, index,
            f64(r["row"]), f64(r["col"]), f64(r["frame"]), f64(r["sigma_row"]),
            f64(r["sigma_col"]), f64(r["sigma_frame"]), f64(r["counts"]), states,
            float(spec.gain), out, frame_max[:n], lam[:n])
        _check_int32(frame_max[:n], spec, sample, T, entry, start)
        if expected is not None:
            expected(start, lam[:n])
        write_chunk(start, out)
    return {"plate_transmission_range": tuple(tr)} if plate is not None else {}


def sensor_truth(geom: DetectorGeometry) -> dict:
    """What truth.json says of a simulated sensor: material, thickness, mu at the scans'
    wavelength, the model, and the displacement (px) and efficiency at a few 2theta."""
    sensor, lam = geom.sensor, geom.wavelength
    tth = np.radians([0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0])
    px = min(geom.pixel_size)
    return {**sensor.as_dict(), "mu_per_m": sensor.mu(lam), "wavelength": lam,
            "model": "hklflow model/sensor.py (pyFAI's ThinSensor mean depth): a ray at alpha to "
                     "the normal is recorded sin(alpha)/mu (1 - (1 + x) exp(-x)) / (1 - exp(-x)) "
                     "further from the PONI, x = mu t / cos(alpha); efficiency "
                     "1 - exp(-mu t / cos(alpha)); reflections' parallax_px, efficiency, "
                     "row/col_without_parallax per scan",
            "at_two_theta_deg": np.degrees(tth).tolist(),
            "displacement_px_at_normal_detector": (sensor.displacement(
                geom.dist * np.tan(tth), geom.dist, lam) / px).tolist(),
            "efficiency": sensor.efficiency(np.cos(tth), lam).tolist()}


def detector_defects(spec: SimulationSpec, geom: DetectorGeometry) -> tuple[np.ndarray, dict]:
    """uint8 map: 1 module gap, 2 hot pixel, 3 dead pixel (same pixels in every scan)."""
    rng = np.random.default_rng(spec.seed + 17)
    m = geom.detector_mask().astype(np.uint8)
    good = np.flatnonzero(m.ravel() == 0)
    pick = rng.choice(good, spec.hot_pixels + spec.dead_pixels, replace=False)
    m.ravel()[pick[:spec.hot_pixels]] = 2
    m.ravel()[pick[spec.hot_pixels:]] = 3
    ny, nx = m.shape
    where = lambda p: [[int(i // nx), int(i % nx)] for i in p]  # noqa: E731
    return m, {"hot_pixels": where(pick[:spec.hot_pixels]), "dead_pixels": where(pick[spec.hot_pixels:])}


# --------------------------------------------------------------------------------------
# The experiment directory
# --------------------------------------------------------------------------------------
def experiment_config(spec: SimulationSpec) -> dict:
    samples = {}
    for s in spec.samples:
        approx = UnitCell(*s.cell).scaled(1.0 + s.approx_cell_error)
        samples[s.name] = {"space_group": s.space_group,
                           "cell": [round(v, 3) for v in approx.parameters],
                           "parent": {"temperature": float(s.temperatures[0])}}
        if spec.plate is not None and spec.plate_in_config:
            p = spec.plate
            samples[s.name]["shape"] = {"kind": "plate", "normal": [int(v) if float(v).is_integer() else float(v)
                                                   for v in p["normal"]],
                                        "thickness": float(p["thickness"]), "mu": float(p["mu"])}
    d, p1, p2 = spec.rough_start
    detector = spec.detector if spec.detector_orientation == 3 and spec.sensor is None else {
        "name": spec.detector,
        **({"orientation": spec.detector_orientation} if spec.detector_orientation != 3 else {}),
        **({"sensor": dict(spec.sensor)} if spec.sensor is not None else {})}
    return {
        "experiment": spec.name,
        "scans_table": "config/scans.tsv",
        "instrument": {
            "detector": detector,
            "wavelength": spec.wavelength,
            "polarization_fraction": spec.polarization_fraction,
            # (a simulation without air is one in vacuum: the workflow corrects none)
            **({} if spec.air else {"air_path": 0.0}),
            "goniometer": {"scan_axis": list(spec.scan_axis), "scan_sense": spec.scan_sense,
                           "offset_axes": {k: list(v) for k, v in spec.offset_axes.items()}},
        },
        "calibrations": {
            spec.calibrant.lower(): {
                "image": f"raw/calibration/{spec.calibrant}.h5",
                "dataset": RAW_DATASET,
                "calibrant": spec.calibrant,
                "start": {"dist": round(d, 4), "poni1": round(p1, 5), "poni2": round(p2, 5),
                          "rot1": 0.0, "rot2": 0.0, "rot3": 0.0},
            }
        },
        "samples": samples,
        **({"reduction": {"transform": {"max_voxels": spec.transform_max_voxels}}}
           if spec.transform_max_voxels else {}),
    }


FRAME_FORMATS = ("hdf5", "eiger", "cbf")
# the beamline effects' fields and their defaults: left out of truth.json's simulation when
# at the default (truth.json as before they existed)
BEAMLINE_FIELDS = {"air": False, "plate": None, "plate_in_config": True, "beam": None,
                   "holder": None}


def scan_data_path(sample: str, temperature_folder: str, entry: str, frame_format: str) -> str:
    """The scans table's `data` of a scan (relative to the experiment directory)."""
    folder = f"raw/{sample}/{temperature_folder}"
    if frame_format == "hdf5":
        return f"{folder}/{entry}.h5"
    if frame_format == "eiger":
        # the master names the scan: hklflow reads the frames from the data files beside it
        return f"{folder}/{entry}/{entry}_master.h5"
    return f"{folder}/{entry}/{entry}_*.cbf"


def scans_table_rows(spec: SimulationSpec, frame_format: str) -> list[dict]:
    rows = []
    monitor = beamline.monitor_column(spec, frame_format)  # None: no monitor column
    for s in spec.samples:
        for T in s.temperatures:
            for e in spec.entries:
                tl = temperature_label(T)
                data = scan_data_path(s.name, tl, e.name, frame_format)
                row = {"sample": s.name, "temperature": f"{T:g}", "entry": e.name, "data": data,
                       "nframes": spec.nframes, "phi_start": f"{spec.phi_start:g}",
                       "phi_step": f"{spec.phi_step:g}",
                       "det_ddist": f"{e.det_shift[0]:.6g}", "det_dponi1": f"{e.det_shift[1]:.6g}",
                       "det_dponi2": f"{e.det_shift[2]:.6g}"}
                for name in spec.offset_axes:
                    row[name] = f"{e.offsets.get(name, 0.0):g}"
                if monitor is not None:
                    row["monitor"] = monitor
                if spec.holder is None:
                    rows.append(row)
                    continue
                # with a holder: its empty scan, a background row the sample row names
                empty = f"{e.name}{beamline.EMPTY_SUFFIX}"
                rows.append({**row, "role": "sample", "background": empty})
                rows.append({**row, "entry": empty, "role": "background", "background": "",
                             "data": beamline.empty_scan_path(s.name, tl, e.name),
                             **({"monitor": beamline.HDF5_MONITOR_DATASET}
                                if monitor is not None else {})})
    return rows


CONFIG_HEADER = """\
# hklflow experiment configuration: {name}
# Written by `hklflow simulate` (the same file the demo commits in config/).
# Every key is documented in workflow/schemas/config.schema.yaml; conventions (lab frame,
# units, angles) in docs/conventions.md.
"""


def scans_table_line(row: dict) -> str:
    """One line of config/scans.tsv (newline included): the header is the line of a row's keys."""
    return "\t".join(str(v) for v in row.values()) + "\n"


def config_texts(spec: SimulationSpec, frame_format: str, table_rows: bool = True) -> dict[str, str]:
    """The text of config/config.yaml and config/scans.tsv of a simulated experiment
    (table_rows False: the scans table's header line only)."""
    text = CONFIG_HEADER.format(name=spec.name) + yaml.safe_dump(
        experiment_config(spec), sort_keys=False, default_flow_style=None, width=100)
    rows = scans_table_rows(spec, frame_format)
    lines = [scans_table_line({c: c for c in rows[0]})]
    if table_rows:
        lines += [scans_table_line(r) for r in rows]
    return {"config.yaml": text, "scans.tsv": "".join(lines)}


def write_config(spec: SimulationSpec, outdir: Path, frame_format: str, overwrite: bool,
                 table_rows: bool = True) -> None:
    """Write config/; an existing file that differs is kept (and refused) unless overwrite,
    so a user's edited configuration is never lost."""
    cfgdir = outdir / "config"
    texts = config_texts(spec, frame_format, table_rows)
    if not overwrite:
        for name, text in texts.items():
            f = cfgdir / name
            if f.exists() and f.read_text() != text:
                raise FileExistsError(f"{f} exists and differs from the {spec.name!r} simulation's; "
                                      "simulate into another directory (or overwrite with --force)")
    cfgdir.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        write_text_atomically(cfgdir / name, text)


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def scan_frames_writer(spec: SimulationSpec, outdir: Path, frame_format: str,
                       frames_per_file: int = 100):
    """The writer factory (sample, temperature, entry, true geometry) -> writer that puts a
    scan's frames where the scans table says, all at once."""
    monitor = beamline.monitor_values(spec)  # None: none written (beamline.py)

    def make(sample: SampleModel, T: float, entry: EntryModel, geom: DetectorGeometry):
        folder = outdir / "raw" / sample.name / temperature_label(T)
        if frame_format == "hdf5":
            folder.mkdir(parents=True, exist_ok=True)
            return Hdf5StackWriter(folder / f"{entry.name}.h5", spec.nframes, geom.shape,
                                   monitor=monitor, monitor_dataset=beamline.HDF5_MONITOR_DATASET)
        if frame_format == "eiger":
            if monitor is not None:
                raise ValueError("beam: a monitor is written with the hdf5 and cbf frame "
                                 "formats only, not eiger (set beam.monitor false)")
            return EigerScanWriter(folder / entry.name, entry.name, spec, entry, geom,
                                   detector_defects(spec, geom)[0], frames_per_file, atomic=True)
        return CbfFramesWriter(folder / entry.name, entry.name, spec, geom, monitor=monitor)
    return make


def simulate_experiment(spec: SimulationSpec, outdir, frame_format: str = "hdf5",
                        overwrite: bool = False, *, frames_per_file: int = 100,
                        frames_writer=None, table_rows: bool = True) -> dict:
    """Write config/, raw/ and truth.json of a simulated experiment into outdir.

    frames_per_file: frames per data file of the 'eiger' format.  frames_writer: a factory
    (sample, temperature, entry, true geometry) -> writer to send the frames elsewhere (the
    acquisition mode's cache; default: raw/).  table_rows False writes only the scans
    table's header (the acquisition mode appends each row when its scan starts).
    """
    if frame_format not in FRAME_FORMATS:
        raise ValueError(f"frame_format must be one of {', '.join(FRAME_FORMATS)}; "
                         f"got {frame_format!r}")
    check_noise_settings(spec)
    beamline.check_effects(spec, frame_format)
    outdir = Path(outdir)
    t0 = time.monotonic()
    write_config(spec, outdir, frame_format, overwrite, table_rows)
    if frames_writer is None:
        frames_writer = scan_frames_writer(spec, outdir, frame_format, frames_per_file)
    cal = spec.calibration()
    rng = np.random.default_rng(spec.seed)
    powder = simulate_calibrant_image(cal, spec.calibrant, rng,
                                      polarization_fraction=spec.polarization_fraction)
    caldir = outdir / "raw" / "calibration"
    caldir.mkdir(parents=True, exist_ok=True)
    w = Hdf5StackWriter(caldir / f"{spec.calibrant}.h5", 1, cal.shape)
    w(0, powder[None].astype(np.int32))
    w.close()
    log.info("calibrant image written (%.1f s)", time.monotonic() - t0)
    if spec.noise_seed is not None or spec.gain != 1.0:
        log.info("scan frames: noise seed %s, detector gain %g counts per photon",
                 "default" if spec.noise_seed is None else spec.noise_seed, spec.gain)
    defects, defect_truth = detector_defects(spec, cal)
    # the same truth whatever the noise seed: it is not a fact of the experiment
    simulation = {k: v for k, v in asdict(spec).items()
                  if k != "noise_seed" and not (k == "sensor" and v is None)
                  and not (k in BEAMLINE_FIELDS and v == BEAMLINE_FIELDS[k])}
    truth = {
        "simulation": _jsonable(simulation),
        "conventions": "hklflow docs/conventions.md (Q without 2 pi; Busing-Levy B; lab = pyFAI)",
        "detector_gain": {
            "counts_per_photon": spec.gain,
            "frames": "round(gain * Poisson(expected photons)) in the scans' frames (the "
                      "calibrant image counts photons); reflections' counts, background and "
                      "diffuse amplitudes here are expected photons"},
        "calibration_geometry": cal.as_dict(),
        "goniometer": spec.goniometer().as_dict(),
        "detector_defects": defect_truth,
        "diffuse_model": {
            "satellites": {"positions": "(h + 1/2, k + 1/2, l) for integer h, k, l",
                           "amplitude_at_lowest": spec.satellite_amplitude,
                           "sigma_hk_rlu": spec.satellite_sigma_hk, "sigma_l_rlu": spec.satellite_sigma_l,
                           "present_below_K": {s.name: s.transition_temperature for s in spec.samples}},
            "thermal_diffuse": {"form": "A * I_bragg(nearest node) * |Q|^2 / (|dQ|^2 + kappa^2)"
                                        " * exp(-|dh|^2 / (2 reach^2)), A proportional to T",
                                "amplitude": spec.tds_amplitude, "kappa_inv_A": spec.tds_kappa,
                                "reach_rlu": spec.tds_reach},
            "background": {"level": spec.background, "air_scatter": spec.air_scatter},
        },
        "samples": {},
        "scans": {},
    }
    if cal.sensor is not None:
        truth["sensor"] = sensor_truth(cal)
    truth.update(beamline.truth_sections(spec))
    plate_range = None
    nscan = len(spec.samples) * len(spec.entries) * max(len(s.temperatures) for s in spec.samples)
    done = 0
    for sample in spec.samples:
        truth["samples"][sample.name] = {"space_group": sample.space_group, "temperatures": {}}
        for T in sample.temperatures:
            crystal = sample.crystal_at(T)
            U = sample.U_at(T)
            truth["samples"][sample.name]["temperatures"][temperature_label(T)] = {
                "temperature": T, "cell": list(crystal.cell.parameters), "U": U.tolist(),
                "B": crystal.B.tolist(), "UB": (U @ crystal.B).tolist(),
                "satellites_present": bool(T < sample.transition_temperature)}
            for entry in spec.entries:
                st, scan = predict_scan_reflections(spec, sample, T, entry)
                tl = temperature_label(T)
                writer = frames_writer(sample, T, entry, st.geometry)
                stats = render_scan(spec, sample, T, entry, st, scan, writer, defects)
                writer.close()
                if plate_range is None and "plate_transmission_range" in stats:
                    plate_range = stats["plate_transmission_range"]
                empty = {}
                if spec.holder is not None:  # its empty-holder scan (always HDF5)
                    rel = beamline.empty_scan_path(sample.name, tl, entry.name)
                    (outdir / rel).parent.mkdir(parents=True, exist_ok=True)
                    monitor = beamline.monitor_values(spec)  # (the beam's: the same decay)
                    ew = Hdf5StackWriter(outdir / rel, spec.nframes, st.geometry.shape,
                                         monitor=monitor,
                                         monitor_dataset=beamline.HDF5_MONITOR_DATASET)
                    render_scan(spec, sample, T, entry, st, scan, ew, defects, empty=True)
                    ew.close()
                    empty = {"empty_scan": rel, "empty_scan_dataset": RAW_DATASET}
                done += 1
                log.info("scan %s/%s/%s: %d reflections, %d frames (%d/%d, %.1f s)", sample.name,
                         tl, entry.name, len(st.reflections["h"]), spec.nframes, done, nscan,
                         time.monotonic() - t0)
                truth["scans"][f"{sample.name}/{tl}/{entry.name}"] = {
                    "geometry": st.geometry.as_dict(), "offsets": dict(entry.offsets),
                    "det_shift": list(entry.det_shift),
                    "phi_start": spec.phi_start, "phi_step": spec.phi_step, "nframes": spec.nframes,
                    "reflections": _jsonable(st.reflections), **empty}
    if spec.plate is not None:
        truth["plate"] = beamline.plate_truth(spec, plate_range)
    write_text_atomically(outdir / "truth.json", json.dumps(truth, indent=None,
                                                            separators=(",", ":")))
    log.info("simulation %s written to %s in %.1f s", spec.name, outdir, time.monotonic() - t0)
    return truth


def expected_scan(spec: SimulationSpec, sample: SampleModel, temperature: float,
                  entry: EntryModel, *, empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(expected photons, frames) of one scan of the spec, float64 and int32 (nframes, ny,
    nx): what render_scan's frames are drawn from (with the effects' kernel, whatever the
    effects), the scan's empty-holder scan with empty.  For tests and checks: the whole scan
    is held in memory."""
    check_noise_settings(spec)
    beamline.check_effects(spec)
    st, scan = predict_scan_reflections(spec, sample, temperature, entry)
    ny, nx = st.geometry.shape
    lam = np.empty((spec.nframes, ny, nx), dtype=np.float64)
    frames = np.empty((spec.nframes, ny, nx), dtype=np.int32)

    def keep_expected(start, chunk):
        lam[start:start + len(chunk)] = chunk

    def keep_frames(start, chunk):
        frames[start:start + len(chunk)] = chunk

    render_scan(spec, sample, temperature, entry, st, scan, keep_frames,
                detector_defects(spec, spec.calibration())[0], empty=empty,
                expected=keep_expected)
    return lam, frames
