"""The 3D-DeltaPDF as NXRefine computes it (nxreduce.py: hole_mask, punch_and_fill, fft_taper,
total_pdf, delta_pdf), on a volume array[l, k, h] of a regular grid (hklflow.model.grid) whose
unmeasured voxels are NaN:

* punch: every Bragg reflection (and any extra position) is cut out of the volume, the voxels
  within `radius` of it (an ellipsoid in voxels);
* fill: the holes are filled by Laplace (harmonic) interpolation from the measured voxels
  around them, or by Matern interpolation, (L + eps^2 I)^m u = 0 (NXRefine uses the Julia
  package LaplaceInterpolation.jl, matern_3d_grid, default m = 1, eps = 0: pure Laplace);
  here scipy.sparse assembles the systems of many holes into one block-diagonal matrix per
  batch, and conjugate gradients solve each hole's block to its own tolerance;
* taper: a spherical Tukey window in |Q|, flat to q_max/2, zero from q_max;
* FFT: NXRefine's real(fftshift(fftn(fftshift(data[:-1, :-1, :-1])))) / N, float32.

Q is in 1/Angstrom in the 2 pi convention (|Q| = 2 pi / d), as in NXRefine.  |Q| of a point
h (r.l.u.) is 2 pi sqrt(h G* h) with G* the reciprocal metric, right for every cell;
NXRefine sums the squares of h a*, k b*, l c*, which is right for orthogonal cells only.

Differences from NXRefine, on purpose:

* the hole is the set of voxel centres within `radius` of the position in |Q| (tilted for
  non-orthogonal cells), not NXRefine's axis-aligned ellipsoid of rint(radius / voxel)
  voxels per axis;
* the fill region of a position also takes the unmeasured voxels within twice the radius (a
  detector-space Bragg mask leaves NaN holes larger than the punch), and regions that
  touch are solved together; NXRefine fills one cube per reflection and adds the fills of
  overlapping cubes;
* NaN voxels never serve as data: links to them are dropped (graph Laplacian); NXRefine's
  volumes hold 0 there;
* the fill is not symmetrised afterwards: the input is symmetric and every equivalent
  reflection is punched, so the fill is symmetric wherever the operators map the 7-point
  stencil onto itself (all but the 3- and 6-fold axes, which NXRefine leaves unsymmetrised
  too);
* the taper is 0 beyond q_max (NXRefine puts taper.min() there, a tiny positive number).

Modules, in the order they build on each other: q_grid (|Q| of the voxels, passes over a
volume slab by slab or over its octant), fill (punch and fill), taper (the Tukey taper and
the volume's statistics under it) and fft (the PDF).  hklflow.algorithms.pdf.volume calls them on a
merged volume.
"""
