"""Scans found by their raw files (config live.discover, hklflow.live.discover): the rows
found in simulated Eiger, CBF and HDF5 experiments are those of the simulation's own scans
table, each value from the file where it carries it and from live.scan_defaults otherwise."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from hklflow.errors import ConfigError
from hklflow.growing import CBF_BINARY_MARKER
from hklflow.live.discover import DiscoveryPattern, discover, discovered_rows
from hklflow.live.table import row_id, user_rows
from hklflow.simulation.experiment import preset, simulate_experiment

# the tiny experiment with fewer frames: the files' metadata is the same, made in seconds
SPEC = replace(preset("tiny"), nframes=6)
OFFSETS = list(SPEC.offset_axes)
PATTERNS = {"hdf5": "raw/{sample}/{temperature}K/{entry}.h5",
            "eiger": "raw/{sample}/{temperature}K/{entry}/{entry}_master.h5",
            "cbf": "raw/{sample}/{temperature}K/{entry}/{entry}_*.cbf"}
COMPARED = ("sample", "temperature", "entry", "data", "nframes", "phi_start", "phi_step")


def _simulated(tmp_path_factory, frame_format: str) -> Path:
    out = tmp_path_factory.mktemp(frame_format)
    simulate_experiment(SPEC, out, frame_format)
    return out


@pytest.fixture(scope="module")
def eiger_experiment(tmp_path_factory) -> Path:
    return _simulated(tmp_path_factory, "eiger")


@pytest.fixture(scope="module")
def cbf_experiment(tmp_path_factory) -> Path:
    return _simulated(tmp_path_factory, "cbf")


@pytest.fixture(scope="module")
def hdf5_experiment(tmp_path_factory) -> Path:
    return _simulated(tmp_path_factory, "hdf5")


def _table(expdir: Path) -> dict:
    return {row_id(r): r for r in user_rows(expdir, "config/scans.tsv", OFFSETS)}


def _compared(rows, columns=COMPARED) -> dict:
    return {row_id(r): {c: r[c] for c in columns} for r in rows}


def test_eiger_scans_take_frames_angles_and_offsets_from_their_master(eiger_experiment):
    table = _table(eiger_experiment)
    # the config's values lose to the master's
    found = discover(eiger_experiment, {"discover": PATTERNS["eiger"], "scan_defaults": {
        "nframes": 999, "phi_start": 45.0, "offsets": {"omega": 7.0}}}, OFFSETS, set())
    assert found.not_ready == []
    assert _compared(found.rows, COMPARED + tuple(OFFSETS)) == _compared(
        table.values(), COMPARED + tuple(OFFSETS))
    assert any(r["omega"] != 0 for r in found.rows)  # f2's offsets, not only zeros
    from_master = ("nframes", "phi_start", "phi_step", *OFFSETS)
    for sid, sources in found.sources.items():
        assert {c: sources[c] for c in from_master} == dict.fromkeys(from_master, "file"), sid
        assert sources["sample"] == sources["data"] == "path"
        assert sources["det_ddist"] == "default"
    # shaped as the scans table's rows: every column, in the same types
    some = found.rows[0]
    assert set(some) == set(table[row_id(some)])
    assert {c: type(v) for c, v in some.items() if c in COMPARED} == {
        c: type(v) for c, v in table[row_id(some)].items() if c in COMPARED}


def test_known_scans_are_not_found_again(eiger_experiment):
    table = _table(eiger_experiment)
    known = {sid for sid in table if "/300K/" in sid}
    rows, messages = discovered_rows(eiger_experiment, {"discover": PATTERNS["eiger"]},
                                     OFFSETS, known)
    assert messages == []
    assert {row_id(r) for r in rows} == set(table) - known != set()
    assert discovered_rows(eiger_experiment, {"discover": PATTERNS["eiger"]}, OFFSETS,
                           set(table)) == ([], [])


def test_cbf_scans_take_their_angles_from_the_header_and_the_frame_count_from_the_config(
        cbf_experiment):
    live = {"discover": PATTERNS["cbf"],
            "scan_defaults": {"nframes": SPEC.nframes, "phi_start": 45.0, "det_ddist": 0.001,
                              "offsets": {"chi": 0.5}}}
    found = discover(cbf_experiment, live, OFFSETS, set(), samples={"tiny"})
    assert found.not_ready == []
    assert _compared(found.rows) == _compared(_table(cbf_experiment).values())
    assert all(r["data"].endswith("_*.cbf") for r in found.rows)  # the glob of its frames
    for r in found.rows:
        assert (r["det_ddist"], r["chi"], r["omega"]) == (0.001, 0.5, 0.0)
        sources = found.sources[row_id(r)]
        assert (sources["phi_start"], sources["phi_step"]) == ("file", "file")
        assert (sources["nframes"], sources["det_ddist"], sources["chi"]) == ("config",) * 3
        assert sources["omega"] == "default"


def test_a_scan_without_a_frame_count_is_reported_not_guessed(cbf_experiment, hdf5_experiment):
    rows, messages = discovered_rows(cbf_experiment, {"discover": PATTERNS["cbf"]}, OFFSETS,
                                     set())
    assert rows == [] and len(messages) == len(_table(cbf_experiment))
    assert "raw/tiny/100K/f1/f1_*.cbf: no frame count" in messages[0]
    assert messages[0].endswith("set live.scan_defaults.nframes")
    # plain HDF5 files say neither the frame count nor (without a goniometer) the angles
    rows, messages = discovered_rows(hdf5_experiment, {"discover": PATTERNS["hdf5"]}, OFFSETS,
                                     set())
    assert rows == []
    assert messages[0].startswith("raw/tiny/100K/f1.h5: no frame count")
    assert "live.scan_defaults.phi_start and live.scan_defaults.phi_step" in messages[0]


def test_plain_hdf5_scans_take_what_their_files_lack_from_the_config(hdf5_experiment):
    live = {"discover": PATTERNS["hdf5"], "scan_defaults": {
        "nframes": SPEC.nframes, "phi_start": SPEC.phi_start, "phi_step": SPEC.phi_step}}
    found = discover(hdf5_experiment, live, OFFSETS, set())
    assert found.not_ready == []
    assert _compared(found.rows) == _compared(_table(hdf5_experiment).values())
    assert all(s["phi_step"] == "config" and s["omega"] == "default"
               for s in found.sources.values())


def _write_stack(path: Path, phi: list[float], omega: float | None = None) -> None:
    """An HDF5 scan file as the acquisition's SWMR writer makes it: frames, and the angles
    of those written so far in an NXmx goniometer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("entry/data/data", data=np.zeros((len(phi), 4, 5), np.int32),
                         maxshape=(None, 4, 5), chunks=(1, 4, 5))
        gonio = f.create_group("entry/sample/goniometer")
        gonio.create_dataset("phi", data=np.array(phi), maxshape=(None,), chunks=(16,))
        gonio["phi"].attrs["units"] = "deg"
        if omega is not None:
            gonio.create_dataset("omega", data=omega)


def test_an_hdf5_file_growing_gives_its_angles_once_it_has_two_frames(tmp_path):
    live = {"discover": PATTERNS["hdf5"], "scan_defaults": {"nframes": 3, "phi_step": 9.0,
                                                            "offsets": {"chi": 2.0}}}
    path = tmp_path / "raw" / "s1" / "250K" / "e1.h5"
    _write_stack(path, [10.0], omega=-2.0)
    assert discovered_rows(tmp_path, live, OFFSETS, set()) == ([], [])  # not yet, no message
    _write_stack(path, [10.0, 10.5, 11.0], omega=-2.0)
    found = discover(tmp_path, live, OFFSETS, set())
    assert found.not_ready == []
    (row,) = found.rows
    assert {c: row[c] for c in (*COMPARED, "omega", "chi")} == {
        "sample": "s1", "temperature": 250.0, "entry": "e1", "data": "raw/s1/250K/e1.h5",
        "nframes": 3, "phi_start": 10.0, "phi_step": 0.5, "omega": -2.0, "chi": 2.0}
    sources = found.sources["s1/250K/e1"]
    assert [sources[c] for c in ("nframes", "phi_start", "phi_step", "omega", "chi")] == [
        "config", "file", "file", "file", "config"]
    # samples of the config only
    (message,) = discovered_rows(tmp_path, live, OFFSETS, set(), samples={"tiny"})[1]
    assert message.startswith("raw/s1/250K/e1.h5: sample 's1' is not a sample of the config")


def _write_cbf(path: Path, header: str, binary: bytes = b"\0" * 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"###CBF: VERSION 1.5\n_array_data.header_contents\n;\n"
                     + header.encode() + b"\n;\n--CIF-BINARY-FORMAT-SECTION--\n"
                     + CBF_BINARY_MARKER + binary)


def test_cbf_files_being_written_or_matched_by_another_scans_glob(tmp_path):
    live = {"discover": "raw/{sample}/{temperature}K/{entry}_*.cbf",
            "scan_defaults": {"nframes": 2}}
    folder = tmp_path / "raw" / "s" / "80.5K"
    header = "# Start_angle -30.0000 deg.\n# Angle_increment 0.2500 deg."
    for n in (1, 2):
        _write_cbf(folder / f"a_2_{n:05d}.cbf", header)
    # a first frame whose header is still being written: not yet, no message
    (folder / "b_00001.cbf").write_bytes(b"###CBF: VERSION 1.5\n_array_data.header_contents\n")
    found = discover(tmp_path, live, OFFSETS, set())
    assert found.not_ready == []
    assert _compared(found.rows) == {"s/80.5K/a_2": {
        "sample": "s", "temperature": 80.5, "entry": "a_2", "data": "raw/s/80.5K/a_2_*.cbf",
        "nframes": 2, "phi_start": -30.0, "phi_step": 0.25}}
    # a_*.cbf would take a_2's frames too
    _write_cbf(folder / "a_00001.cbf", header)
    rows, messages = discovered_rows(tmp_path, live, OFFSETS, set())
    assert [row_id(r) for r in rows] == ["s/80.5K/a_2"]
    assert messages == [messages[0]] and messages[0].startswith(
        "raw/s/80.5K/a_*.cbf: also matches raw/s/80.5K/a_2_00001.cbf")
    # a header without the angles: they come from the config, or the scan is reported
    _write_cbf(folder / "b_00001.cbf", "# Exposure_time 0.1 s")
    rows, messages = discovered_rows(tmp_path, live, OFFSETS, {"s/80.5K/a", "s/80.5K/a_2"})
    assert rows == [] and messages == [
        "raw/s/80.5K/b_*.cbf: no scan angles (no Start_angle and Angle_increment in the header "
        "of raw/s/80.5K/b_00001.cbf): set live.scan_defaults.phi_start and "
        "live.scan_defaults.phi_step"]


def test_a_repeated_field_must_be_the_same_text():
    pattern = DiscoveryPattern.parse(PATTERNS["eiger"])
    assert (pattern.layout, pattern.glob) == ("eiger", "raw/*/*K/*/*_master.h5")
    assert pattern.match("raw/s/300K/f1/f1_master.h5") == {
        "sample": "s", "temperature": "300", "entry": "f1"}
    assert pattern.match("raw/s/300K/f1/f2_master.h5") is None
    assert pattern.match("raw/s/hot/f1/f1_master.h5") is None  # not a temperature


@pytest.mark.parametrize("text, expected", [
    ("raw/{sample}/{temperature}K/scan.h5", "lacks {entry}"),
    ("raw/{temperature}K/{entry}.h5", "lacks {sample}"),
    ("raw/{sample}/{entry}.h5", "lacks {temperature}"),
    ("raw/{sample}/{temperature}K/{entry}_{run}.h5", "unknown field {run}"),
    ("raw/{sample}/{temperature}K/{entry}/{entry}_00001.cbf", "one '*'"),
    ("raw/{sample}/{temperature}K/{entry}_*.h5", "expected no '*'"),
    ("raw/{sample}/{temperature}K/{entry}/*.tif", "CBF frame files"),
    ("/data/{sample}/{temperature}K/{entry}.h5", "relative to the experiment directory"),
    ("", "expected a path pattern"),
])
def test_an_unusable_pattern_is_a_config_error_naming_live_discover(tmp_path, text, expected):
    with pytest.raises(ConfigError, match="live.discover") as err:
        discover(tmp_path, {"discover": text or " "}, OFFSETS, set())
    assert expected in str(err.value)


def test_scan_defaults_offsets_must_be_offset_axes(tmp_path):
    live = {"discover": PATTERNS["hdf5"], "scan_defaults": {"offsets": {"kappa": 1.0}}}
    with pytest.raises(ConfigError, match=r"live.scan_defaults.offsets.*kappa.*omega, chi"):
        discover(tmp_path, live, OFFSETS, set())


def test_no_pattern_finds_nothing(tmp_path):
    assert discovered_rows(tmp_path, {"discover": None}, OFFSETS, set()) == ([], [])
