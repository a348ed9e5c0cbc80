"""Scans found by their raw files (config live.discover, hklflow.live.discover): the rows
found in simulated Eiger, CBF and HDF5 experiments are those of the simulation's own scans
table, each value from the file where it carries it and from live.scan_defaults otherwise;
the detector shifts from an Eiger master's or a CBF header's direct beam, measured from the
calibration the scan uses."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from hklflow.base.errors import ConfigError
from hklflow.files.calibration import write_version_file
from hklflow.live.discover import SHIFT_COLUMNS, DiscoveryPattern, discover, discovered_rows
from hklflow.live.growing import CBF_BINARY_MARKER
from hklflow.live.table import row_id, user_rows
from hklflow.model.geometry import DetectorGeometry, shifts_from_direct_beam
from hklflow.planning.config import load_settings
from hklflow.simulation.experiment import preset, simulate_experiment

# the tiny experiment with fewer frames: the files' metadata is the same, made in seconds
SPEC = replace(preset("tiny"), nframes=6)
OFFSETS = list(SPEC.offset_axes)
PATTERNS = {"hdf5": "raw/{sample}/{temperature}K/{entry}.h5",
            "eiger": "raw/{sample}/{temperature}K/{entry}/{entry}_master.h5",
            "cbf": "raw/{sample}/{temperature}K/{entry}/{entry}_*.cbf"}
COMPARED = ("sample", "temperature", "entry", "data", "nframes", "phi_start", "phi_step")
CALIBRATION = "ceo2"  # the simulated experiment's calibration


def _calibrate(expdir: Path, geometry: DetectorGeometry) -> None:
    """results/calibration/ceo2 as calibrate_powder leaves it, with the given geometry (the
    simulated one: what the powder calibration finds, to its precision)."""
    folder = expdir / "results" / "calibration" / CALIBRATION
    folder.mkdir(parents=True, exist_ok=True)
    geometry.write_poni(folder / "geometry.poni")
    write_version_file(folder / "version.json", CALIBRATION, "v001", folder / "geometry.poni")


def _simulated(tmp_path_factory, frame_format: str, spec=SPEC) -> Path:
    out = tmp_path_factory.mktemp(frame_format)
    simulate_experiment(spec, out, frame_format)
    _calibrate(out, spec.calibration())
    return out


def _config(expdir: Path) -> dict:
    return load_settings([str(expdir / "config" / "config.yaml")]).raw


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
        "nframes": 999, "phi_start": 45.0, "offsets": {"omega": 7.0}}}, OFFSETS, set(),
        config=_config(eiger_experiment))
    assert found.not_ready == []
    assert _compared(found.rows, COMPARED + tuple(OFFSETS)) == _compared(
        table.values(), COMPARED + tuple(OFFSETS))
    assert any(r["omega"] != 0 for r in found.rows)  # f2's offsets, not only zeros
    from_master = ("nframes", "phi_start", "phi_step", *OFFSETS)
    for sid, sources in found.sources.items():
        assert {c: sources[c] for c in from_master} == dict.fromkeys(from_master, "file"), sid
        assert sources["sample"] == sources["data"] == "path"
        assert [sources[c] for c in SHIFT_COLUMNS] == ["file"] * 3
        assert sources["monitor"] == sources["calibration"] == "default"
    # shaped as the scans table's rows: every column, in the same types
    some = found.rows[0]
    assert set(some) == set(table[row_id(some)])
    assert {c: type(v) for c, v in some.items() if c in COMPARED} == {
        c: type(v) for c, v in table[row_id(some)].items() if c in COMPARED}


def test_known_scans_are_not_found_again(eiger_experiment):
    table = _table(eiger_experiment)
    known = {sid for sid in table if "/300K/" in sid}
    config = _config(eiger_experiment)
    rows, messages = discovered_rows(eiger_experiment, {"discover": PATTERNS["eiger"]},
                                     OFFSETS, known, config=config)
    assert messages == []
    assert {row_id(r) for r in rows} == set(table) - known != set()
    assert discovered_rows(eiger_experiment, {"discover": PATTERNS["eiger"]}, OFFSETS,
                           set(table), config=config) == ([], [])


def test_cbf_scans_take_their_angles_from_the_header_and_the_frame_count_from_the_config(
        cbf_experiment):
    live = {"discover": PATTERNS["cbf"],
            "scan_defaults": {"nframes": SPEC.nframes, "phi_start": 45.0, "det_ddist": 0.001,
                              "offsets": {"chi": 0.5}}}
    found = discover(cbf_experiment, live, OFFSETS, set(), samples={"tiny"},
                     config=_config(cbf_experiment))
    assert found.not_ready == []
    assert _compared(found.rows) == _compared(_table(cbf_experiment).values())
    assert all(r["data"].endswith("_*.cbf") for r in found.rows)  # the glob of its frames
    for r in found.rows:
        # a shift live.scan_defaults gives wins over the header's detector position
        assert (r["det_ddist"], r["chi"], r["omega"]) == (0.001, 0.5, 0.0)
        sources = found.sources[row_id(r)]
        assert (sources["phi_start"], sources["phi_step"]) == ("file", "file")
        assert (sources["nframes"], sources["det_ddist"], sources["chi"]) == ("config",) * 3
        assert (sources["det_dponi1"], sources["det_dponi2"]) == ("file", "file")
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


# --------------------------------------------------------------------------------------
# The detector shifts from the file's direct beam
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame_format", ["eiger", "cbf"])
def test_a_moved_detector_gets_the_scans_table_s_shifts_from_its_file(
        frame_format, eiger_experiment, cbf_experiment):
    expdir = {"eiger": eiger_experiment, "cbf": cbf_experiment}[frame_format]
    # the tiny calibration is tilted: its direct beam is pixels away from its PONI, so a
    # file's beam centre read as a PONI would put the detector there
    cal = SPEC.calibration()
    beam_row, beam_col = cal.direct_beam_pixel()
    assert abs(beam_row - cal.poni1 / cal.pixel_size[0]) > 1.0
    assert abs(beam_col - cal.poni2 / cal.pixel_size[1]) > 1.0
    live = {"discover": PATTERNS[frame_format], "scan_defaults": {"nframes": SPEC.nframes}}
    found = discover(expdir, live, OFFSETS, set(), config=_config(expdir))
    assert found.not_ready == [] and found.waiting_for == set()
    table = _table(expdir)
    assert sorted(row_id(r) for r in found.rows) == sorted(table)
    for r in found.rows:
        sid = row_id(r)
        assert [r[c] for c in SHIFT_COLUMNS] == pytest.approx(
            [table[sid][c] for c in SHIFT_COLUMNS], abs=1e-8), sid
        assert [found.sources[sid][c] for c in SHIFT_COLUMNS] == ["file"] * 3
        assert found.relative_to[sid] == f"{CALIBRATION} v001"
    assert {r["entry"]: r["det_dponi1"] > 1e-3 for r in found.rows} == {"f1": False, "f2": True}


def test_the_shifts_follow_the_frames_layout_of_another_detector_orientation(tmp_path_factory):
    # orientation 2: rows run down, so the direct beam's row counts from the top edge
    spec = replace(SPEC, detector_orientation=2,
                   samples=tuple(replace(s, temperatures=s.temperatures[:1]) for s in SPEC.samples))
    expdir = _simulated(tmp_path_factory, "cbf", spec)
    found = discover(expdir, {"discover": PATTERNS["cbf"], "scan_defaults": {"nframes": 6}},
                     OFFSETS, set(), config=_config(expdir))
    assert found.not_ready == [] and len(found.rows) == 2
    table = _table(expdir)
    for r in found.rows:
        assert [r[c] for c in SHIFT_COLUMNS] == pytest.approx(
            [table[row_id(r)][c] for c in SHIFT_COLUMNS], abs=1e-8)


def test_a_cbf_header_gives_the_direct_beam_as_pyfai_computes_it(cbf_experiment):
    import re

    import fabio

    # f2 as the beamline knows it: the calibration moved by the entry's shift (the true
    # geometry's small drift is for the refinement to find)
    known = SPEC.calibration().shifted(*SPEC.entries[1].det_shift)
    f2d = known.to_pyfai().getFit2D()  # Fit2D's: direct beam (px) and distance to it (mm)
    first = cbf_experiment / "raw" / "tiny" / "300K" / "f2" / "f2_00001.cbf"
    head = fabio.open(str(first)).header["_array_data.header_contents"]
    fast, slow = map(float, re.search(r"# Beam_xy \((\S+), (\S+)\) pixels", head).groups())
    distance = float(re.search(r"# Detector_distance (\S+) m", head).group(1))
    # orientation 3: pyFAI's centerX/Y (pixels along poni2/poni1) are the frame's col/row
    assert (fast, slow) == pytest.approx((f2d["centerX"], f2d["centerY"]), abs=1e-4)
    assert distance == pytest.approx(f2d["directDist"] * 1e-3, abs=1e-8)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4])
def test_shifts_from_the_direct_beam_undo_a_detector_move(orientation):
    cal = replace(SPEC.calibration(), orientation=orientation, rot1=0.02, rot2=-0.015, rot3=0.3)
    for shift in [(0.0, 0.0, 0.0), (0.012, -0.0031, 0.0047)]:
        moved = cal.shifted(*shift)
        row, col = moved.direct_beam_pixel()
        distance = float(np.linalg.norm(moved.lab_positions(row, col)))
        assert shifts_from_direct_beam(cal, distance, row, col) == pytest.approx(shift, abs=1e-12)
        if orientation == 3:  # pyFAI's Fit2D view of the same detector
            f2d = moved.to_pyfai().getFit2D()
            assert (distance, row, col) == pytest.approx(
                (f2d["directDist"] * 1e-3, f2d["centerY"], f2d["centerX"]), abs=1e-9)


def test_shifts_that_live_scan_defaults_gives_win_over_the_file(eiger_experiment):
    table = _table(eiger_experiment)
    found = discover(eiger_experiment, {"discover": PATTERNS["eiger"],
                                        "scan_defaults": {"det_dponi1": 0.002}},
                     OFFSETS, set(), config=_config(eiger_experiment))
    assert found.not_ready == []
    for r in found.rows:
        sid = row_id(r)
        assert r["det_dponi1"] == 0.002 and found.sources[sid]["det_dponi1"] == "config"
        for c in ("det_ddist", "det_dponi2"):
            assert r[c] == pytest.approx(table[sid][c], abs=1e-8)
            assert found.sources[sid][c] == "file"


def test_a_scan_waits_for_its_calibration_unless_the_config_gives_its_shifts(
        eiger_experiment, tmp_path):
    expdir = tmp_path / "experiment"
    shutil.copytree(eiger_experiment, expdir, ignore=shutil.ignore_patterns("results"))
    config = _config(expdir)
    live = {"discover": PATTERNS["eiger"]}
    found = discover(expdir, live, OFFSETS, set(), config=config)
    assert found.rows == [] and found.waiting_for == {CALIBRATION}
    assert len(found.not_ready) == len(_table(expdir))
    assert found.not_ready[0].startswith(
        "raw/tiny/100K/f1/f1_master.h5: waiting for calibration ceo2 "
        "(results/calibration/ceo2/geometry.poni is not made yet)")
    # a calibration being made again (its PONI is not the one its version file names)
    _calibrate(expdir, SPEC.calibration())
    poni = expdir / "results" / "calibration" / CALIBRATION / "geometry.poni"
    poni.write_text(poni.read_text()[:40])
    assert discover(expdir, live, OFFSETS, set(), config=config).waiting_for == {CALIBRATION}
    # shifts the config gives need no calibration
    live["scan_defaults"] = dict.fromkeys(SHIFT_COLUMNS, 0.0)
    found = discover(expdir, live, OFFSETS, set(), config=config)
    assert found.not_ready == [] and len(found.rows) == len(_table(expdir))
    assert found.waiting_for == set() and found.relative_to == {}
    assert all(found.sources[row_id(r)]["det_ddist"] == "config" for r in found.rows)
    # without the config, a file's detector position is measured from nothing: reported
    rows, messages = discovered_rows(expdir, {"discover": PATTERNS["eiger"]}, OFFSETS, set())
    assert rows == [] and "the config's calibrations were not given" in messages[0]


def _write_detector(path: Path, **fields) -> None:
    """An NXmx detector group in an HDF5 scan file: name -> (value, units)."""
    with h5py.File(path, "a") as f:
        det = f.require_group("entry/instrument/detector")
        for name, (value, units) in fields.items():
            det[name] = value
            det[name].attrs["units"] = units


def test_a_detector_position_in_other_units_incomplete_or_of_another_detector(tmp_path,
                                                                             eiger_experiment):
    config = _config(eiger_experiment)
    _calibrate(tmp_path, SPEC.calibration())
    live = {"discover": PATTERNS["hdf5"], "scan_defaults": {"nframes": 3}}
    path = tmp_path / "raw" / "s1" / "250K" / "e1.h5"
    cal = SPEC.calibration()
    moved = cal.shifted(0.01, 0.002, -0.001)
    row, col = moved.direct_beam_pixel()
    distance = float(np.linalg.norm(moved.lab_positions(row, col)))
    p1, p2 = cal.pixel_size
    # lengths in mm, the beam centre as a length on the detector
    _write_stack(path, [0.0, 1.0])
    _write_detector(path, distance=(distance * 1e3, "mm"), beam_center_x=(col * p2 * 1e3, "mm"),
                    beam_center_y=(row * p1, "m"), x_pixel_size=(p2 * 1e6, "um"),
                    y_pixel_size=(p1, "m"))
    (r,), messages = discovered_rows(tmp_path, live, OFFSETS, set(), config=config)
    assert messages == []
    assert [r[c] for c in SHIFT_COLUMNS] == pytest.approx([0.01, 0.002, -0.001], abs=1e-9)
    # a beam centre without its distance: reported, unless the config gives the shifts
    _write_stack(path, [0.0, 1.0])
    _write_detector(path, beam_center_x=(col, "pixel"), beam_center_y=(row, "pixel"))
    rows, (message,) = discovered_rows(tmp_path, live, OFFSETS, set(), config=config)
    assert rows == [] and "gives beam_center_x, beam_center_y but no distance" in message
    assert message.endswith("set live.scan_defaults.det_ddist, det_dponi1, det_dponi2")
    given = dict(live, scan_defaults=dict(live["scan_defaults"], **dict.fromkeys(SHIFT_COLUMNS, 0.0)))
    assert discovered_rows(tmp_path, given, OFFSETS, set(), config=config)[1] == []
    # pixels of another size than the detector's: the beam centre cannot be placed
    _write_stack(path, [0.0, 1.0])
    _write_detector(path, detector_distance=(distance, "m"), beam_center_x=(col, "pixels"),
                    beam_center_y=(row, "pixels"), x_pixel_size=(75e-6, "m"),
                    y_pixel_size=(75e-6, "m"))
    rows, (message,) = discovered_rows(tmp_path, live, OFFSETS, set(), config=config)
    assert rows == [] and "the slow pixel size is 7.5e-05 m, the detector's" in message


# --------------------------------------------------------------------------------------
# The watcher: a calibration the discovered scans wait for is made
# --------------------------------------------------------------------------------------
class _Log:
    def info(self, *a):
        pass

    warning = error = exception = info


def test_the_watcher_has_the_calibration_made_that_discovered_scans_wait_for(
        eiger_experiment, tmp_path):
    import yaml

    from hklflow.live.watch import Watcher

    expdir = tmp_path / "experiment"
    shutil.copytree(eiger_experiment, expdir, ignore=shutil.ignore_patterns("results"))
    table = _table(expdir)
    scans = expdir / "config" / "scans.tsv"
    scans.write_text(scans.read_text().splitlines()[0] + "\n")  # no rows: found by their files
    config_file = expdir / "config" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["live"] = {"discover": PATTERNS["eiger"]}
    config_file.write_text(yaml.safe_dump(config))
    runs = []
    watcher = Watcher(expdir, [], _Log())

    def run_workflow(rows):  # the run's calibrate_powder job
        runs.append((rows, (expdir / "live" / "scans.tsv").read_text()))
        _calibrate(expdir, SPEC.calibration())
        return 0

    watcher.run_workflow = run_workflow
    watcher.look()
    assert watcher.state.scans == {} and watcher.waiting_calibrations == {CALIBRATION}
    assert "waiting for calibration ceo2" in watcher.table_error
    watcher.loop(once=True)
    # one run, on the empty live table (its plan: the calibrations)
    assert [rows for rows, _ in runs] == [[]]
    assert [ln for ln in runs[0][1].splitlines() if not ln.startswith("#")][1:] == []
    watcher.look()
    assert sorted(watcher.state.scans) == sorted(table)
    assert watcher.waiting_calibrations == set()
    for sid, scan in watcher.state.scans.items():
        assert [scan.row[c] for c in SHIFT_COLUMNS] == pytest.approx(
            [table[sid][c] for c in SHIFT_COLUMNS], abs=1e-8)


# --------------------------------------------------------------------------------------
# End to end: the moved entry of a discovered scan indexes
# --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_s_discovered_moved_entry_indexes_with_the_parent(tmp_path):
    """tiny's f2 (detector moved by 9 and 7 pixels) found by its Eiger master, ingested with
    the shifts from the master, indexes with f1 as the batch run does (with the shifts of
    live.scan_defaults, all 0, it did not: a cell 5% off, 77% indexed, rms 4.7 px)."""
    from contextlib import chdir

    from hklflow.files.orientation import read_orientation_file
    from hklflow.live.table import write_live_files
    from hklflow.planning.config import load_experiment
    from hklflow.planning.jobs import JobSettings
    from hklflow.steps import find_peaks, index_parent, ingest_scan

    spec = preset("tiny")
    spec = replace(spec, samples=tuple(replace(s, temperatures=s.temperatures[:1])
                                       for s in spec.samples))
    root = tmp_path / "experiment"
    simulate_experiment(spec, root, "eiger")
    _calibrate(root, spec.calibration())
    found = discover(root, {"discover": PATTERNS["eiger"]}, OFFSETS, set(),
                     config=_config(root))
    assert found.not_ready == [] and len(found.rows) == 2
    write_live_files(root, found.rows, {}, OFFSETS)
    jobs = JobSettings(load_experiment([root / "config" / "config.yaml",
                                        root / "live" / "config.yaml"], base_dir=root))
    cal = root / "results" / "calibration" / CALIBRATION
    d = root / "results" / "tiny" / "300K"
    with chdir(root):
        for e in ("f1", "f2"):
            assert ingest_scan.main(["--settings", jobs.ingest_scan("tiny", "300K", e),
                                     "--poni", str(cal / "geometry.poni"),
                                     "--version", str(cal / "version.json"),
                                     "--out", f"{d}/{e}/scan.nxs"]) == 0
            assert find_peaks.main(["--settings", jobs.find_peaks(), "--scan", f"{d}/{e}/scan.nxs",
                                    "--out", f"{d}/{e}/peaks.nxs", "--png", f"{d}/{e}/peaks.png"]) == 0
        assert index_parent.main(["--settings", jobs.index_parent("tiny"),
                                  "--scans", f"{d}/f1/scan.nxs", f"{d}/f2/scan.nxs",
                                  "--peaks", f"{d}/f1/peaks.nxs", f"{d}/f2/peaks.nxs",
                                  "--out", f"{d}/orientation.nxs",
                                  "--png", f"{d}/orientation.png"]) == 0
    record = read_orientation_file(d / "orientation.nxs")
    stats = record.statistics
    assert stats["fraction_indexed"] > 0.95 and stats["rms_px"] < 0.5, stats
    assert record.cell[0] == pytest.approx(spec.samples[0].cell[0], rel=2e-3)
