"""Step delta_pdf: the 3D-DeltaPDF of a sample at one temperature - every allowed Bragg
reflection of its symmetrised volume punched out and the hole filled by Laplace (or Matern)
interpolation, then tapered and Fourier transformed (hklflow.algorithms.pdf.volume.delta_pdf) - with
the punched and filled volumes, the outcome of every reflection, and pictures of its planes."""
from __future__ import annotations

from ..algorithms.pdf.fill import OUTCOMES
from ..algorithms.pdf.volume import delta_pdf, even_along_axes, volume_noise
from ..base.memory import check_room, pdf_bytes
from ..files.pdf import PDFWriter
from ..files.provenance import provenance
from ..files.volume import read_volume_header
from ..pictures.pdf import plot_pdf
from ..pictures.preview import landed_notes, preview_label
from ..pictures.slices import cell_of
from ..settings.params import PDFParams, SampleParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("delta_pdf", __doc__)
    p.add_settings()
    p.add_threads()
    p.add_input("--input", "the symmetrised (or merged) volume")
    p.add_output("--out", "pdf.nxs to write")
    p.add_output("--png", "picture to write")
    return p


def run(args, log) -> None:
    s = args.settings
    params = settings_part(s, PDFParams)
    sample = settings_part(s, SampleParams)
    volume = read_volume_header(args.input)
    cell = cell_of(volume) or sample.unit_cell()
    crystal = sample.crystal(cell)
    title = f"{volume.title}: 3D-DeltaPDF"
    check_room(pdf_bytes(volume.grid.size, delta=True, sigma=params.errors),
               f"the 3D-DeltaPDF of {volume.grid.size:,} voxels",
               "reduction.pdf.errors: false (no sigma), or a coarser grid", log)
    with PDFWriter(args.out) as out:
        # the filled and punched volumes go into the file first: the FFT reads the filled
        # one back, so it and the spectrum are never in memory together
        pdf, fill = delta_pdf(args.input, volume.grid, crystal, params, title,
                              workers=args.threads, log=log, even=even_along_axes(volume.notes),
                              store_filled=lambda f: out.write_volumes(volume.grid, cell,
                                                                       f.filled, f.region),
                              noise=volume_noise(args.input, volume.grid, volume.notes)
                              if params.errors else None)
        pdf.notes["input"] = str(args.input)
        pdf.notes.update(landed_notes(volume.notes))  # a preview's: for the PDF series
        counts = fill.counts
        log.info("%s: %d positions punched: %s; %d voxels solved in %d batches%s, %.1f s",
                 args.input, len(fill.positions),
                 ", ".join(f"{k} {v}" for k, v in counts.items()), fill.unknowns,
                 fill.batches, f" ({fill.mirrored} more from their mirror images: the volume "
                 "is even)" if fill.mirrored else "", fill.seconds)
        # (a fact the user expects at the edge of what was measured: in the log and the
        # file's notes, not among the run's warnings; a failed solve is worth one)
        if counts.get("no_data"):
            log.info("%d reflections no data (nothing measured around them): their holes stay "
                     "empty (0 in the transform)", counts["no_data"])
        if counts.get("solver_failed"):
            log.warning("%d reflections solver failed: their holes stay empty (0 in the "
                        "transform)", counts["solver_failed"])
        log.info("taper to q_max %.3f 1/A (%s; reach %.3f, inside the grid %.3f); %.1f%% of "
                 "the voxels inside q_max unmeasured after the fill (0 in the transform); "
                 "%s in %.1f s", pdf.notes["q_max"], pdf.notes["q_max_source"],
                 pdf.notes["q_reach"], pdf.notes["q_inside_grid"],
                 100 * pdf.notes["unmeasured_within_q_max"], pdf.notes["fft"],
                 pdf.notes["fft_seconds"])
        for warning in pdf.notes.get("warnings", ()):
            log.warning("%s", warning)
        out.write_pdf(pdf, dict(volume.sample),
                      provenance("hklflow delta_pdf", s, inputs=[args.input]),
                      positions=fill.positions, outcome=fill.outcome, outcome_names=OUTCOMES)
    plot_pdf(pdf, params.slices, args.png,
             f"{title}\n{len(fill.positions)} reflections: "
             + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v)
             + f"; taper zero at {pdf.notes['q_max']:.2f} 1/A", log=log,
             preview=preview_label(pdf.notes))


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
