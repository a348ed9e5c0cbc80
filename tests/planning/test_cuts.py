"""output.cuts (hklflow.planning.cuts, rules cut and cut_temperature_series): the cuts
checked when the config is read, each spec's command line what `hklflow cut` takes, and a
plan that makes every cut at every temperature and a line's series picture; the two rules
run on volumes that are there."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from hklflow.files import outputs
from hklflow.files.cut import read_cut
from hklflow.files.outputs import fill
from hklflow.files.volume import write_volume
from hklflow.planning.config import ConfigError, load_experiment
from hklflow.planning.cuts import cut_arguments, cuts_of
from hklflow.simulation.experiment import config_texts, preset
from hklflow.steps.cut import parser

from conftest import job_counts, run_snakemake
from experiment_helpers import edit_config
from volume_helpers import lattice_volume, small_grid

CUTS = [{"name": "hhl", "plane": [[1, 1, 0], [0, 0, 1]]},
        {"name": "rod110", "line": [1, 1, 0], "origin": [0, 0, 2], "length": 4, "width": 0.02,
         "volume": "transform"}]


@pytest.fixture
def experiment_dir(tmp_path):
    (tmp_path / "config").mkdir()
    for name, text in config_texts(preset("tiny"), "hdf5").items():
        (tmp_path / "config" / name).write_text(text)
    return tmp_path


def with_cuts(d, cuts, **more):
    def change(cfg):
        cfg.setdefault("output", {})["cuts"] = {"tiny": cuts}
        for key, value in more.items():
            cfg.setdefault("reduction", {}).setdefault(key, {}).update(value)
    edit_config(d, change)
    return load_experiment(d / "config" / "config.yaml", base_dir=d)


def test_cuts_resolved_and_their_command_lines(experiment_dir):
    exp = with_cuts(experiment_dir, CUTS)
    hhl, rod = cuts_of(exp)["tiny"]
    assert hhl["volume"] == "transform_symmetrized" and rod["volume"] == "transform"
    args = parser().parse_args(["v.nxs", *cut_arguments(hhl)])
    np.testing.assert_array_equal(args.plane, [[1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(args.origin, [0, 0, 0])
    assert args.line is None and args.width is None and args.length is None
    args = parser().parse_args(["v.nxs", *cut_arguments(rod)])
    np.testing.assert_array_equal(args.line, [1, 1, 0])
    np.testing.assert_array_equal(args.origin, [0, 0, 2])
    assert args.length == 4 and args.width == 0.02
    normal = {"name": "hk1", "normal": [0, 0, 1], "origin": [0, 0, 1], "range_u": [-1, 1],
              "range_v": [-2, 2], "step": [0.1]}
    args = parser().parse_args(["v.nxs", *cut_arguments(normal)])
    assert args.range_u == [-1, 1] and args.range_v == [-2, 2] and args.step == [0.1]
    # without symmetrisation the merged transform
    exp = with_cuts(experiment_dir, CUTS[:1], merge={"symmetrize": False})
    assert cuts_of(exp)["tiny"][0]["volume"] == "transform"


@pytest.mark.parametrize("cuts, words", [
    ([{"name": "a", "line": [1, 0, 0], "plane": [[1, 0, 0], [0, 1, 0]]}],
     "exactly one of line, plane and normal"),
    ([{"name": "a"}], "exactly one of line, plane and normal, got none"),
    ([{"name": "a", "line": [1, 0, 0]}, {"name": "a", "normal": [0, 0, 1]}], "a second cut"),
    ([{"name": "mask", "line": [1, 0, 0]}], "names a scan entry's file"),
    ([{"name": "a", "line": [0, 0, 0]}], "zero vector"),
    ([{"name": "a", "line": [1, 0, 0], "range_u": [0, 1]}], "not for a line"),
    ([{"name": "a", "line": [1, 0, 0], "length": 2, "range": [0, 1]}], "length and range"),
    ([{"name": "a", "normal": [0, 0, 1], "range_u": [0, 1]}], "range_u without range_v"),
    ([{"name": "a", "plane": [[1, 0, 0], [0, 1, 0]], "step": [1, 1, 1]}], "output.cuts.tiny"),
    ([{"name": "a", "line": [1, 0]}], "output.cuts.tiny.0.line"),
    ([{"name": "a", "line": [1, 0, 0], "volume": "masked_transform_symmetrized"}],
     "is not made by this config"),
])
def test_a_cut_that_cannot_be_made_is_refused_naming_its_field(experiment_dir, cuts, words):
    more = {"merge": {"symmetrize": False}} if "volume" in cuts[0] else {}
    with pytest.raises(ConfigError) as refused:
        with_cuts(experiment_dir, cuts, **more)
    assert words in str(refused.value) and "output.cuts" in str(refused.value)


def test_a_cut_of_a_sample_not_in_the_config_is_refused(experiment_dir):
    def change(cfg):
        cfg["output"] = {"cuts": {"other": CUTS}}
    edit_config(experiment_dir, change)
    with pytest.raises(ConfigError, match="no sample 'other' in samples"):
        load_experiment(experiment_dir / "config" / "config.yaml", base_dir=experiment_dir)


def test_the_plan_makes_every_cut_at_every_temperature(tiny_copy):
    with_cuts(tiny_copy, CUTS)
    r = run_snakemake(tiny_copy, "-n", "--cores", "1", "-p")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = job_counts(out)
    assert counts["cut"] == 4  # two cuts, two temperatures
    assert counts["cut_temperature_series"] == 1  # the line's
    assert "hklflow cut results/tiny/300K/transform_symmetrized.nxs --plane '1 1 0' '0 0 1'" in out
    assert "--line '1 1 0' --origin '0 0 2' --length 4 --width 0.02" in out


def test_the_rules_run_on_volumes_there(tiny_copy):
    """Rules cut and cut_temperature_series alone (--allowed-rules), on merged volumes
    written in place of the reduction's."""
    with_cuts(tiny_copy, CUTS[1:])
    for t in ("100K", "300K"):
        path = tiny_copy / fill(outputs.VOLUME, sample="tiny", temperature=t, volume="transform")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_volume(path, lattice_volume(small_grid((17, 17, 9), (0.25, 0.25, 0.5)),
                                          f"tiny/{t}"), {})
    target = fill(outputs.CUT_SERIES_PNG, sample="tiny", cut="rod110")
    r = run_snakemake(tiny_copy, "--cores", "1", "--allowed-rules", "cut",
                      "cut_temperature_series", "--", target)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert (tiny_copy / target).stat().st_size > 10_000
    for t in ("100K", "300K"):
        back = read_cut(tiny_copy / fill(outputs.CUT, sample="tiny", temperature=t, cut="rod110"))
        assert back.title == f"tiny {t}: cut rod110"
        np.testing.assert_array_equal(back.directions, [[1, 1, 0]])
        assert back.coords[0][0] == pytest.approx(-2) and back.coords[0][-1] == pytest.approx(2)
    shutil.rmtree(tiny_copy / "results")
