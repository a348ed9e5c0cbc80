"""Issue 86: a watched temperature is final only when all its planned scans are complete.  A
scan the watcher knows of (the user's table, live.discover) but has not yet included
(fewer than live.first_preview_degrees landed) makes its temperature a preview: its merge
says so and its PDFs wait (live/waiting.json, planning.config.waiting_scans)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hklflow.live.state import LiveState, ScanState
from hklflow.live.table import user_rows, write_live_files
from hklflow.live.watch import Watcher
from hklflow.pictures.preview import preview_label
from hklflow.planning.config import LIVE_WAITING, load_experiment, waiting_scans
from hklflow.planning.live_files import provisional_grid, provisional_orientation
from hklflow.planning.jobs import JobSettings

from conftest import REPO

LIVE = {"first_preview_degrees": 20, "preview_every_degrees": 10, "preview_every_seconds": 30, "reorient_voxels": 0.25, "preview_share": 0.5,
        "poll_seconds": 2, "stall_seconds": 300, "finish_stalled": False, "preview_pdf": False}


class _Log:
    def info(self, *a):
        pass

    warning = error = exception = info


def _watched(expdir: Path, landed_f2: int):
    """A watcher of the tiny experiment: 300K f1 complete, f2 with landed_f2 frames."""
    w = Watcher(expdir, [], _Log())
    w.live = dict(LIVE)
    rows = {row_id: r for r in user_rows(expdir, "config/scans.tsv", w.settings.offset_names)
            for row_id in [f"tiny/{int(r['temperature'])}K/{r['entry']}"]}
    w.state = LiveState()
    for sid, landed in (("tiny/300K/f1", 60), ("tiny/300K/f2", landed_f2)):
        scan = ScanState(sid, rows[sid], int(rows[sid]["nframes"]), float(rows[sid]["phi_step"]))
        scan.landed = min(landed, scan.planned)
        w.state.scans[sid] = scan
    return w


def _live_experiment(expdir: Path):
    return load_experiment([expdir / "config/config.yaml", expdir / "live/config.yaml"],
                           base_dir=expdir)


def test_a_temperature_with_a_scan_not_yet_included_is_a_preview_and_its_pdfs_wait(tiny_copy):
    w = _watched(tiny_copy, landed_f2=5)  # f2: 5 deg < first_preview_degrees
    rows, markers = w.live_rows(now=0.0)
    assert [(r["entry"], r["planned_frames"]) for r in rows] == [("f1", 0)]  # f1 complete
    waiting = w.waiting_records(rows)
    assert waiting == [{"scan": "tiny/300K/f2", "frames": 0, "planned": 60}]
    assert write_live_files(tiny_copy, rows, markers, w.settings.offset_names, waiting)
    exp = _live_experiment(tiny_copy)
    assert exp.waiting_of("tiny", "300K") == tuple(waiting)
    assert "300K" in exp.temperatures_of("tiny") and exp.pdf_temperatures_of("tiny") == []
    merge = json.loads(JobSettings(exp).merge_entries("transform", "tiny", "300K"))
    assert merge["waiting"] == waiting
    # what merge_entries adds to the volume's notes (symmetrize copies them): a preview
    assert preview_label({"waiting": {"landed": merge["waiting"]}}) == \
        "PREVIEW: f2 0% of its frames"
    row = next(ln for ln in (REPO / "docs/bad-inputs.md").read_text().splitlines()
               if "test_a_temperature_with_a_scan_not_yet_included" in ln)
    assert all(words in row for words in ("live/waiting.json", "PREVIEW: f2 0% of its frames",
                                          "waiting for f2", "its PDFs are not planned"))

    # f2 included: nothing waits, the file goes, and the settings are the batch ones
    w = _watched(tiny_copy, landed_f2=60)
    rows, markers = w.live_rows(now=0.0)
    assert w.waiting_records(rows) == []
    assert write_live_files(tiny_copy, rows, markers, w.settings.offset_names,
                            w.waiting_records(rows))
    assert not (tiny_copy / LIVE_WAITING).exists()
    exp = _live_experiment(tiny_copy)
    assert exp.waiting == () and "300K" in exp.pdf_temperatures_of("tiny")
    batch = load_experiment(tiny_copy / "config/config.yaml", base_dir=tiny_copy)
    assert JobSettings(exp).merge_entries("transform", "tiny", "300K") == \
        JobSettings(batch).merge_entries("transform", "tiny", "300K")


def test_a_batch_table_never_reads_the_waiting_file(tiny_copy):
    (tiny_copy / "live").mkdir()
    (tiny_copy / LIVE_WAITING).write_text('[{"scan": "tiny/300K/f2", "frames": 0, "planned": 60}]')
    assert waiting_scans("config/scans.tsv", tiny_copy) == ()
    exp = load_experiment(tiny_copy / "config/config.yaml", base_dir=tiny_copy)
    assert exp.waiting == () and "waiting" not in JobSettings(exp).merge_entries("transform")


def test_a_dry_run_plans_no_pdf_of_a_temperature_that_waits_for_a_scan(tiny_copy):
    """snakemake -n tells the truth: with f2 waiting, 300K is a preview: its merge is planned
    (unscaled, not symmetrised) and none of its PDFs, its volumes made with its provisional
    orientation (live/orientation/tiny/300K.nxs: a copy of the refined one the first preview
    makes, then the one the watcher hands it) on its provisional grid (live/grid/tiny.json,
    likewise).  The same table with nothing waiting plans the PDFs, with the refined
    orientation, on the sample's grid."""
    from conftest import job_counts, run_snakemake

    w = _watched(tiny_copy, landed_f2=5)
    rows, markers = w.live_rows(now=0.0)
    args = ["--configfile", str(tiny_copy / "config/config.yaml"),
            str(tiny_copy / "live/config.yaml"), "-n", "-p", "--cores", "1"]
    provisional = tiny_copy / provisional_orientation("tiny", "300K")
    grid = tiny_copy / provisional_grid("tiny")
    counts, commands = {}, {}
    for waiting, handed in ((w.waiting_records(rows), False), (w.waiting_records(rows), True),
                            ([], True)):
        provisional.parent.mkdir(parents=True, exist_ok=True)
        provisional.write_bytes(b"") if handed else provisional.unlink(missing_ok=True)
        grid.parent.mkdir(parents=True, exist_ok=True)
        grid.write_bytes(b"") if handed else grid.unlink(missing_ok=True)
        write_live_files(tiny_copy, rows, markers, w.settings.offset_names, waiting)
        r = run_snakemake(tiny_copy, *args)
        assert r.returncode == 0, r.stderr
        counts[bool(waiting), handed] = job_counts(r.stdout)
        commands[bool(waiting), handed] = r.stdout
    for key in counts:
        assert counts[key].get("merge_entries"), key
    # a preview: f1, complete, transformed in blocks; the temperature complete: whole, as batch
    assert counts[True, True].get("transform_block") and "transform_frames" not in counts[True, True]
    assert counts[False, True].get("transform_frames") and "transform_block" not in counts[False, True]
    refined = "--orientation results/tiny/300K/orientation.nxs --grid results/tiny/grid.json"
    for handed in (False, True):
        assert "results/tiny/300K/orientation.nxs --grid" not in commands[True, handed]
        assert "--grid results/tiny/grid.json" not in commands[True, handed]
        assert ("--orientation live/orientation/tiny/300K.nxs --grid live/grid/tiny.json"
                in commands[True, handed])
    assert counts[True, False].get("provisional_orientation") == 1
    assert counts[True, False].get("provisional_grid") == 1
    # complete: the refined orientation and the sample's grid, whatever the watcher left
    assert refined in commands[False, True]
    assert "live/orientation" not in commands[False, True]
    assert "live/grid" not in commands[False, True]
    pdf_rules = {rule for rule in counts[False, True] if "pdf" in rule}
    assert pdf_rules and not pdf_rules & set(counts[True, True])
    # a preview leaves out the scale fit (its merges unscaled, and say so) and the
    # symmetrisation, which only the final results need; the final results have both
    for handed in (False, True):
        assert not {"scale_entries", "symmetrize"} & set(counts[True, handed])
        assert "--unscaled-preview" in commands[True, handed]
        assert " --preview" in commands[True, handed]  # (no statistics of equivalents)
    assert counts[False, True].get("scale_entries") and counts[False, True].get("symmetrize")
    assert "--unscaled-preview" not in commands[False, True]
    assert " --preview" not in commands[False, True]
    # the SLURM profile's job groups hold a preview's blocks too: snakemake refuses to plan a
    # group that depends on itself through a rule outside it ("Error in group ...")
    groups = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())["groups"]
    write_live_files(tiny_copy, rows, markers, w.settings.offset_names, w.waiting_records(rows))
    r = run_snakemake(tiny_copy, *args, "--groups", *groups)
    assert r.returncode == 0 and counts[True, True] == job_counts(r.stdout), \
        r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.slow
def test_a_watched_temperature_whose_f2_has_not_started_is_a_preview_without_pdfs(tiny_copy):
    """Through the watcher: 300K's f1 complete, its f2 a row of the table whose file is not
    there yet.  The merged volumes say PREVIEW and unscaled; neither a symmetrised volume nor
    a PDF is made (only the final results need them)."""
    import subprocess
    import sys

    from hklflow.files.volume import read_volume_header

    table = tiny_copy / "config/scans.tsv"
    table.write_text("".join(ln for ln in table.read_text().splitlines(keepends=True)
                             if "\t100\t" not in ln))
    (tiny_copy / "raw/tiny/300K/f2.h5").rename(tiny_copy / "f2.h5.later")
    r = subprocess.run([sys.executable, "-m", "hklflow", "watch", str(tiny_copy), "--once",
                        "--cores", "2"], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tiny_copy / LIVE_WAITING).read_text()) == \
        [{"scan": "tiny/300K/f2", "frames": 0, "planned": 60}]
    volumes = sorted((tiny_copy / "results/tiny/300K").glob("*.nxs"))
    made = [p for p in volumes if "symmetrized" in p.name or p.stem in ("transform",
                                                                         "masked_transform")]
    assert made, volumes
    assert not [p for p in volumes if "symmetrized" in p.name]
    for path in made:
        notes = read_volume_header(path).notes
        assert preview_label(notes) == "PREVIEW: f2 0% of its frames"
        assert notes["scaling"].startswith("left out of previews")
    assert not [p for p in (tiny_copy / "results").rglob("*pdf*") if p.is_file()]


@pytest.mark.slow
def test_previews_are_made_again_with_a_new_provisional_orientation_or_grid(tiny_copy,
                                                                            monkeypatch):
    """Two previews of tiny/300K (f1 in two blocks), then a new provisional orientation handed
    over: the next run makes f1's blocks' masks and volumes again (Snakemake alone would not:
    the provisional file is an ancient input, and the blocks are downstream of the refinement,
    which runs anyway, so it does not check them).  Then a new grid: their volumes again.
    Then a changed setting of the blocks' rules: every block made again."""
    from conftest import job_counts, run_snakemake

    from hklflow.files.grid import read_grid_file, write_grid_file
    from hklflow.model.grid import Axis, Grid

    w = _watched(tiny_copy, landed_f2=0)
    args = ["--configfile", str(tiny_copy / "config/config.yaml"),
            str(tiny_copy / "live/config.yaml"), "--cores", "2", "results/tiny/300K/transform.nxs"]

    def preview(f1, f2, *more):
        for sid, n in (("tiny/300K/f1", f1), ("tiny/300K/f2", f2)):
            w.state.scans[sid].landed = n
        rows, markers = w.live_rows(now=0.0)
        write_live_files(tiny_copy, rows, markers, w.settings.offset_names, w.waiting_records(rows))
        r = run_snakemake(tiny_copy, *args, *more)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout + r.stderr, w.preview_temperatures(rows)

    preview(25, 0)
    _, previews = preview(60, 0)
    f1_blocks = sorted(p.name for p in (tiny_copy / "results/tiny/300K/f1/blocks").iterdir())
    assert len(f1_blocks) == 2
    monkeypatch.setattr("hklflow.live.watch.orientation_move", lambda *a: 1.0)
    assert w.hand_orientations(previews) == {"tiny/300K": {"moved_voxels": 1.0, "handed": True}}
    out, _ = preview(60, 25, "-n", "-p")
    counts = job_counts(out)
    # f1's two blocks and f2's first
    assert counts["mask_block"] == counts["transform_block"] == 3, counts
    assert all(f"results/tiny/300K/f1/blocks/{b}/transform.nxs" in out for b in f1_blocks)
    # define_grid makes another grid: handed over, the volumes made again on it
    preview(60, 25)
    grid = read_grid_file(tiny_copy / "results/tiny/grid.json")
    write_grid_file(tiny_copy / "results/tiny/grid.json",
                    Grid(Axis(grid.h.start - 1, grid.h.step, grid.h.n + round(2 / grid.h.step)),
                         grid.k, grid.l), {})
    assert w.hand_grids(previews) == ["tiny"]
    counts = job_counts(preview(60, 25, "-n")[0])
    assert counts["transform_block"] == 3 and counts["sum_chunks"] == 2, counts
    # a setting of the blocks' rules changed (reduction.mask.radius_px): every preview of the
    # temperature made again, its blocks' peak search too; a change of live: none
    _, previews = preview(60, 25)
    assert w.forget_changed_previews(previews) == []  # (what they were made from)
    config = tiny_copy / "config/config.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["live"] = {"poll_seconds": 3}
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert w.forget_changed_previews(previews) == []
    radius = w.settings.raw["reduction"]["mask"]["radius_px"]
    cfg.setdefault("reduction", {}).setdefault("mask", {})["radius_px"] = radius + 1
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert w.forget_changed_previews(previews) == ["tiny/300K/f1", "tiny/300K/f2"]
    counts = job_counts(preview(60, 25, "-n")[0])
    assert counts["find_peaks_block"] == counts["mask_block"] == counts["transform_block"] == 3
