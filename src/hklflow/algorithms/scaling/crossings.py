"""Where and when a voxel of an entry's volume was measured: the (up to) two crossings of
its centre through the Ewald sphere within the entry's rotation, each with the pixel it
lands on, its scan angle, the incident and scattered directions in the sample frame, and
its share of the voxel's pixel-frames.

A voxel's sum holds the pixel-frames of both crossings.  Both cross with the same Lorentz
factor (the two solutions are mirror images about the plane of the axis and the beam), so
the pixel-frames a crossing puts into a voxel go as the inverse of the Q volume one pixel
covers there: 1 / its solid angle (geometry.DetectorGeometry.solid_angle), and 0 where the
pixel is off the detector, masked or outside the scan's frames.  A voxel whose centre
crosses nowhere on the detector (one at the edge of what a pixel reached, measured by a
corner of it) takes the crossings within the scan's frames wherever they land: `exact`
says which voxels did not need that.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...model.geometry import BEAM_DIRECTION, ScanGeometry
from .kernels import ewald_crossings, sample_directions


@dataclass(frozen=True)
class Crossings:
    """Arrays of the two crossings of n voxels: (2, n) or (2, n, 3)."""

    phi: np.ndarray  # scan angle, deg (0 where not measured)
    share: np.ndarray  # the crossing's share of the voxel's pixel-frames; 0: not measured
    rows: np.ndarray  # continuous pixel coordinates (0 where not measured)
    cols: np.ndarray
    incident: np.ndarray  # unit vectors in the sample frame (scan angle 0, no offsets)
    scattered: np.ndarray
    exact: np.ndarray  # (n,) the shares from pixels on the detector (else within the frames)

    def subset(self, keep) -> "Crossings":
        """The crossings of the voxels `keep` (a mask or indices)."""
        return Crossings(*(getattr(self, f)[:, keep] for f in
                           ("phi", "share", "rows", "cols", "incident", "scattered")),
                         self.exact[keep])

    @property
    def measured(self) -> np.ndarray:
        """(n,) whether some crossing of the voxel is measured."""
        return self.share.sum(axis=0) > 0


def _predicted(scan: ScanGeometry, hkl, compiled: bool):
    """(rows, cols, z, phi), each (2n,), of both solutions: ScanGeometry.predict, or the
    same from the compiled kernel (the directions' pixels from the detector's own mapping)."""
    if not compiled:
        return scan.predict(hkl)[1:]
    n = len(hkl)
    phi, lab = np.empty((2, n)), np.empty((2, n, 3))
    gon = scan.goniometer
    ewald_crossings(hkl, np.asarray(scan.UB, dtype=float), gon.axis, float(gon.scan_sense),
                    gon.offset_rotation(scan.offsets), scan.detector.wavelength,
                    min(scan.angles.start, scan.angles.end), phi, lab)
    rows, cols = scan.detector.pixel_from_direction(lab.reshape(-1, 3))
    phi = phi.reshape(-1)
    return rows, cols, scan.angles.frame(phi), phi


def crossings(scan: ScanGeometry, pixel_mask: np.ndarray | None, hkl,
              compiled: bool = True) -> Crossings:
    """The crossings of voxel centres hkl (n, 3) in the entry `scan` (with its UB);
    pixel_mask: True where a pixel is not used (files.mask.read_pixel_mask), or None;
    compiled: the Ewald crossings and sample-frame directions from the compiled kernels
    (else from the geometry's numpy forms, their reference)."""
    hkl = np.ascontiguousarray(hkl, dtype=float).reshape(-1, 3)
    n = len(hkl)
    rows, cols, z, phi = _predicted(scan, hkl, compiled)
    det = scan.detector
    in_frames = np.isfinite(rows) & np.isfinite(cols) & np.isfinite(z)
    in_frames &= (z >= 0) & (z < scan.angles.nframes)
    rows = np.where(in_frames, rows, 0.0)
    cols = np.where(in_frames, cols, 0.0)
    ok = in_frames & det.on_detector(rows, cols)
    if pixel_mask is not None:
        r = np.clip(rows.astype(np.int64), 0, pixel_mask.shape[0] - 1)
        c = np.clip(cols.astype(np.int64), 0, pixel_mask.shape[1] - 1)
        ok &= ~pixel_mask[r, c]
    exact = ok[:n] | ok[n:]
    ok |= in_frames & ~np.concatenate([exact, exact])
    share = np.where(ok, 1.0 / det.solid_angle(rows, cols), 0.0)
    total = share[:n] + share[n:]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(ok, share / np.concatenate([total, total]), 0.0)
    phi = np.where(ok, phi, 0.0)
    incident, scattered = _sample_directions(scan, hkl, phi, compiled)

    def pair(a):
        return a.reshape((2, n) + a.shape[1:])

    return Crossings(pair(phi), pair(share), pair(rows), pair(cols), pair(incident),
                     pair(scattered), exact)


def _sample_directions(scan: ScanGeometry, hkl, phi, compiled: bool):
    """The incident and scattered directions (2n, 3) in the sample frame of voxel centres
    hkl (n, 3) at the scan angles phi (2n,) of both crossings: R(phi)^-1 of the lab's
    incident beam, and that plus lambda UB h, normalised."""
    gon, n, wavelength = scan.goniometer, len(hkl), scan.detector.wavelength
    if compiled:
        incident, scattered = np.empty((2, n, 3)), np.empty((2, n, 3))
        sample_directions(hkl, np.asarray(scan.UB, dtype=float), gon.axis,
                          float(gon.scan_sense), gon.offset_rotation(scan.offsets),
                          wavelength, phi.reshape(2, n), incident, scattered)
        return incident.reshape(-1, 3), scattered.reshape(-1, 3)
    incident = gon.rotate(np.broadcast_to(BEAM_DIRECTION, (2 * n, 3)), phi, scan.offsets,
                          inverse=True)
    q_sample = np.concatenate([hkl, hkl]) @ np.asarray(scan.UB, dtype=float).T
    scattered = incident + q_sample * wavelength
    return incident, scattered / np.linalg.norm(scattered, axis=1, keepdims=True)
