"""hklflow.planning.disk: the disk the results will take, foreseen from the config and scans
table before any job, what of it is there already, and the refusal when it would not fit,
tested with the free space given (no small device needed).  The refusal through Snakemake:
tests/workflow/test_bad_input.py; the estimate against a real run: tests/workflow/
test_workflow.py and bench/disk.py."""
from __future__ import annotations

import pytest
import yaml

from hklflow.files import model_inputs, outputs
from hklflow.files.outputs import fill
from hklflow.planning import disk
from hklflow.planning.config import load_experiment

TABLE = """sample\ttemperature\tentry\tdata\tnframes\tphi_start\tphi_step
tetra\t300\tf1\traw/f1.h5\t360\t0\t0.5
tetra\t300\tf2\traw/f2.h5\t60\t0\t0.5
tetra\t100\tf1\traw/g1.h5\t360\t0\t0.5
"""
CONFIG = {
    "experiment": "disk",
    "scans_table": "config/scans.tsv",
    "instrument": {"detector": "PilatusCdTe300k", "wavelength": 0.41328,
                   "goniometer": {"scan_axis": [0.0, 1.0, 0.0], "scan_sense": 1}},
    "calibrations": {"ceo2": {"image": "raw/CeO2.h5", "calibrant": "CeO2",
                              "start": {"dist": 0.12, "poni1": 0.05, "poni2": 0.04,
                                        "rot1": 0.0, "rot2": 0.0, "rot3": 0.0}}},
    "samples": {"tetra": {"space_group": "I 4/m m m", "cell": [3.8, 3.8, 13.2, 90, 90, 90],
                          "parent": {"temperature": 300}}},
    "reduction": {"transform": {"max_voxels": 1_000_000}},
}


def experiment(tmp_path, monkeypatch, **changes):
    """An experiment directory (config and scans table; no raw data: nothing reads them),
    the current directory; changes: dotted config keys -> values."""
    cfg = yaml.safe_load(yaml.safe_dump(CONFIG))
    for dotted, value in changes.items():
        *path, key = dotted.split(".")
        node = cfg
        for p in path:
            node = node.setdefault(p, {})
        node[key] = value
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "scans.tsv").write_text(TABLE)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    return load_experiment("config/config.yaml")


def nothing_there(path):
    return None


def paths(foreseen, group):
    return {f.path for f in foreseen.files if f.group == group}


def test_every_volume_and_pdf_of_the_plan_is_foreseen(tmp_path, monkeypatch):
    exp = experiment(tmp_path, monkeypatch)
    f = disk.foresee(exp, free=1e15, size_of=nothing_there)
    volumes = paths(f, "volumes")
    for t, entries in (("300K", ("f1", "f2")), ("100K", ("f1",))):
        for kind in ("transform", "masked_transform"):
            for e in entries:
                assert fill(outputs.ENTRY_VOLUME, sample="tetra", temperature=t, entry=e,
                            kind=kind) in volumes
            for pattern in (outputs.MERGED_VOLUME, outputs.SYMMETRIZED_VOLUME):
                assert fill(pattern, sample="tetra", temperature=t, kind=kind) in volumes
    assert len(volumes) == 2 * 3 + 2 * 2 * 2
    assert paths(f, "PDFs") == {fill(p, sample="tetra", temperature=t, pdf="pdf")
                                for p in (outputs.TOTAL_PDF, outputs.DELTA_PDF)
                                for t in ("300K", "100K")}
    assert not paths(f, "model inputs") and f.by_group["model inputs"] == 0
    assert f.total == pytest.approx(sum(f.by_group.values()))
    assert f.missing == pytest.approx(f.total) and f.present == 0 and f.temporary == 0


def test_volumes_scale_with_the_grid_and_the_rotation_swept(tmp_path, monkeypatch):
    """The grid at its bound; an entry's volume the share of half a turn it sweeps; a
    symmetrised one the whole reach."""
    exp = experiment(tmp_path, monkeypatch)
    size = {f.path: f.size for f in disk.foresee(exp, free=0, size_of=nothing_there).files}
    at = dict(sample="tetra", temperature="300K", kind="transform")
    long, short = (size[fill(outputs.ENTRY_VOLUME, entry=e, **at)] for e in ("f1", "f2"))
    fixed = disk.H5_FILE_BYTES
    assert short - fixed == pytest.approx((long - fixed) / 6)  # 30 deg against 180
    assert size[fill(outputs.MERGED_VOLUME, **at)] == pytest.approx(long)
    finer = experiment(tmp_path, monkeypatch, **{"reduction.transform.max_voxels": 8_000_000})
    size8 = {f.path: f.size for f in disk.foresee(finer, free=0, size_of=nothing_there).files}
    for path in (fill(outputs.SYMMETRIZED_VOLUME, **at), fill(outputs.TOTAL_PDF, **at)):
        assert size8[path] == pytest.approx(8 * size[path], rel=0.05)
    bare = experiment(tmp_path, monkeypatch, **{"reduction.transform.variance": False,
                                                "reduction.transform.half_sets": False,
                                                "reduction.scaling.enabled": False})
    size_bare = {f.path: f.size for f in disk.foresee(bare, free=0, size_of=nothing_there).files}
    path = fill(outputs.MERGED_VOLUME, **at)
    assert size_bare[path] < 0.6 * size[path]  # three arrays of five, no half set


def test_model_inputs_are_foreseen_of_the_volumes_asked_for(tmp_path, monkeypatch):
    exp = experiment(tmp_path, monkeypatch, **{"output.model_inputs": ["yell", "rmc_discord"]})
    f = disk.foresee(exp, free=1e15, size_of=nothing_there)
    stems = {"masked_transform_symmetrized"}  # the default: the diffuse scattering
    expected = {f"{fill(outputs.MODEL_INPUTS, sample='tetra', temperature=t)}/{name}"
                for t in ("300K", "100K") for v in stems
                for p in ("yell", "rmc_discord") for name in model_inputs.file_names(p, v)}
    assert paths(f, "model inputs") == expected
    # each program's module says what its files take per measured voxel
    assert f.by_group["model inputs"] == pytest.approx(2 * sum(
        disk.model_input_bytes(exp, p) for p in ("yell", "rmc_discord")))
    both = experiment(tmp_path, monkeypatch, **{
        "output.model_inputs": ["yell"],
        "output.model_input_volumes": ["transform", "masked_transform_symmetrized"]})
    got = paths(disk.foresee(both, free=1e15, size_of=nothing_there), "model inputs")
    assert {p.split("/")[-2] for p in got} == {"transform_yell", "masked_transform_symmetrized_yell"}


def test_results_there_are_replaced_in_place_and_not_written_again(tmp_path, monkeypatch):
    exp = experiment(tmp_path, monkeypatch)
    planned = disk.foresee(exp, free=0, size_of=nothing_there).files
    there = {f.path: 1234.0 for f in planned[::2]}
    f = disk.foresee(exp, free=1e15, size_of=there.get)
    assert f.present == pytest.approx(1234.0 * len(there))
    assert f.missing == pytest.approx(sum(p.size for p in planned if p.path not in there))
    assert f.need == pytest.approx(f.missing)
    assert "still to write" in f.line()


def test_refused_only_when_the_results_would_not_fit(tmp_path, monkeypatch):
    exp = experiment(tmp_path, monkeypatch)
    need = disk.foresee(exp, free=0, size_of=nothing_there).need
    roomy = disk.foresee(exp, free=need * 1.01, size_of=nothing_there)
    assert roomy.fits and roomy.refusal() is None
    assert roomy.line().startswith(disk.LINE_START) and "would not fit" not in roomy.line()
    tight = disk.foresee(exp, free=need * 0.99, size_of=nothing_there)
    assert not tight.fits
    why = tight.refusal()
    assert why.startswith("the results would not fit: about ")
    for words in (disk._size(tight.total), disk._size(tight.free), "output.disk_check: false",
                  "results/", "volumes "):
        assert words in why, words
    assert "they would not fit: a run stops before any job" in tight.line()
    # the escape hatch: said, not refused
    hatch = experiment(tmp_path, monkeypatch, **{"output.disk_check": False})
    off = disk.foresee(hatch, free=need * 0.99, size_of=nothing_there)
    assert off.refusal() is None and "running anyway (output.disk_check: false)" in off.line()


def test_transform_parts_count_while_an_entry_is_cut_into_several_jobs(tmp_path, monkeypatch):
    one = experiment(tmp_path, monkeypatch)
    assert disk.foresee(one, free=0, size_of=nothing_there).temporary == 0
    cut = experiment(tmp_path, monkeypatch, **{"reduction.transform.frames_per_job": 100})
    f = disk.foresee(cut, free=0, size_of=nothing_there)
    parts = disk.temporary_parts(cut)
    assert [p.path.split("/")[2:4] for p in parts] == [["300K", "f1"], ["100K", "f1"]]  # 360 frames
    assert f.temporary == pytest.approx(sum(p.size for p in parts)) and f.need > f.missing
    assert "while the transform's temporary parts exist" in f.line()
    # an entry whose volume is there is summed again only when its transform reruns
    done = disk.foresee(cut, free=0, size_of={parts[0].path: 1.0}.get)
    assert done.temporary == pytest.approx(parts[1].size)


def test_free_space_is_asked_of_the_nearest_folder_there(tmp_path, monkeypatch):
    exp = experiment(tmp_path, monkeypatch)
    free, asked = disk.free_space("results")
    assert asked == str(tmp_path) and free > 0
    assert disk.foresee(exp).device == str(tmp_path)  # (no results/ yet)
    (tmp_path / "results").mkdir()
    assert disk.foresee(exp).device == "results/"
