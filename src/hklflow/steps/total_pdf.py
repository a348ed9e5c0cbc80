"""Step total_pdf: the total PDF of a sample at one temperature - the Fourier transform of
its symmetrised volume as measured (Bragg peaks included), tapered by a spherical Tukey
window in |Q| (hklflow.algorithms.pdf.volume.total_pdf) - with pictures of its planes."""
from __future__ import annotations

from ..algorithms.pdf.volume import even_along_axes, total_pdf, volume_noise
from ..base.memory import check_room, pdf_bytes
from ..files.pdf import write_pdf
from ..files.provenance import provenance
from ..files.volume import read_volume_header
from ..pictures.pdf import plot_pdf
from ..pictures.preview import landed_notes, preview_label
from ..pictures.slices import cell_of
from ..settings.params import SampleParams, TotalPDFParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("total_pdf", __doc__)
    p.add_settings()
    p.add_threads()
    p.add_input("--input", "the symmetrised (or merged) volume")
    p.add_output("--out", "total_pdf.nxs to write")
    p.add_output("--png", "picture to write")
    return p


def run(args, log) -> None:
    s = args.settings
    params = settings_part(s, TotalPDFParams)
    volume = read_volume_header(args.input)
    cell = cell_of(volume) or settings_part(s, SampleParams).unit_cell()
    title = f"{volume.title}: total PDF"
    check_room(pdf_bytes(volume.grid.size, delta=False, sigma=params.errors),
               f"the total PDF of {volume.grid.size:,} voxels",
               "reduction.pdf.errors: false (no sigma), or a coarser grid", log)
    pdf = total_pdf(args.input, volume.grid, cell, params.q_max, title, workers=args.threads,
                    subtract_mean=params.subtract_mean, even=even_along_axes(volume.notes),
                    noise=volume_noise(args.input, volume.grid, volume.notes) if params.errors
                    else None, log=log)
    pdf.notes["input"] = str(args.input)
    pdf.notes.update(landed_notes(volume.notes))  # a preview's: for the PDF series
    log.info("%s: taper to q_max %.3f 1/A (%s; reach %.3f, inside the grid %.3f); %.1f%% of "
             "the voxels inside q_max unmeasured (0 in the transform); %s, %s, in %.1f s",
             args.input, pdf.notes["q_max"], pdf.notes["q_max_source"], pdf.notes["q_reach"],
             pdf.notes["q_inside_grid"], 100 * pdf.notes["unmeasured_within_q_max"],
             pdf.notes["fft"], "x".join(map(str, pdf.values.shape)), pdf.notes["fft_seconds"])
    for warning in pdf.notes.get("warnings", ()):
        log.warning("%s", warning)
    write_pdf(args.out, pdf, dict(volume.sample),
              provenance("hklflow total_pdf", s, inputs=[args.input]))
    plot_pdf(pdf, params.slices, args.png,
             f"{title} (taper flat to {pdf.notes['q_max'] / 2:.2f}, zero at "
             f"{pdf.notes['q_max']:.2f} 1/A)", log=log, preview=preview_label(pdf.notes))


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
