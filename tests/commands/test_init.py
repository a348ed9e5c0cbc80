"""`hklflow init DIR` (hklflow.commands.init): a commented config and a scans table for a real
experiment, from the command line, an NXmx master file or a CBF header; placeholders that
load_experiment refuses by name; an existing config kept."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from hklflow.base.errors import ConfigError
from hklflow.commands import cli
from hklflow.commands.init import PLACEHOLDER
from hklflow.planning.config import load_experiment
from hklflow.settings.schema import schema

GIVEN = ["--sample", "lab6", "--space-group", "P m -3 m", "--cell", "4.157", "4.157", "4.157",
          "90", "90", "90", "--temperature", "300", "--calibrant", "CeO2"]
PILATUS_300K = (619, 487)  # rows, cols


def write_nxmx_master(path, *, nframes=900, omega_start=-45.0, omega_step=0.2,
                      shape=PILATUS_300K):
    """A DECTRIS-like NXmx master: omega turns (about NeXus -x, which is lab +L2), phi and
    chi stay put; distance (mm) and beam centre; no data files."""
    with h5py.File(path, "w") as f:
        wavelength = f.create_dataset("entry/instrument/beam/incident_wavelength",
                                      data=np.float32(0.7293))
        wavelength.attrs["units"] = "angstrom"
        gonio = f.create_group("entry/sample/goniometer")
        omega = gonio.create_dataset(
            "omega", data=(omega_start + omega_step * np.arange(nframes)).astype(np.float32))
        omega.attrs.update(units="degree", vector=[-1.0, 0.0, 0.0])
        gonio.create_dataset("omega_increment", data=np.float32(omega_step))
        gonio.create_dataset("omega_range_total", data=np.float32(omega_step * nframes))
        for still in ("phi", "chi"):
            gonio.create_dataset(still, data=np.zeros(nframes, np.float32))
            gonio.create_dataset(f"{still}_increment", data=np.float32(0))
        det = f.create_group("entry/instrument/detector")
        det.create_dataset("detector_distance", data=180.0).attrs["units"] = "mm"
        det.create_dataset("beam_center_x", data=250.0).attrs["units"] = "pixel"
        det.create_dataset("beam_center_y", data=300.0).attrs["units"] = "pixel"
        det.create_dataset("description", data=b"Dectris Pilatus 300K")
        specific = det.create_group("detectorSpecific")
        specific["nimages"], specific["ntrigger"] = nframes, 1
        specific["y_pixels_in_detector"], specific["x_pixels_in_detector"] = shape


def write_cbf_scan(folder, count=3, start=12.5, step=0.25):
    """`count` Pilatus miniCBF frames, written with fabio, their headers' angles those of
    frames of one scan."""
    import fabio.cbfimage

    folder.mkdir(parents=True)
    for i in range(count):
        header = "\r\n".join([
            "# Detector: PILATUS 300K, S/N 3-0101", "# Pixel_size 172e-6 m x 172e-6 m",
            "# Wavelength 0.6199 A", "# Detector_distance 0.21000 m",
            "# Beam_xy (243.50, 310.00) pixels", f"# Start_angle {start + i * step:.4f} deg.",
            f"# Angle_increment {step:.4f} deg."])
        image = fabio.cbfimage.CbfImage(
            data=np.zeros(PILATUS_300K, np.int32),
            header={"_array_data.header_convention": "PILATUS_1.2",
                    "_array_data.header_contents": header})
        image.write(str(folder / f"scan1_{i + 1:05d}.cbf"))


def table_rows(expdir):
    lines = [ln for ln in (expdir / "config/scans.tsv").read_text().splitlines()
             if not ln.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def config_of(expdir) -> dict:
    return yaml.safe_load((expdir / "config/config.yaml").read_text())


def test_init_with_the_values_given_and_a_master_makes_an_experiment_load_experiment_accepts(
        tmp_path, capsys):
    expdir = tmp_path / "exp"
    (expdir / "raw").mkdir(parents=True)
    write_nxmx_master(expdir / "raw/f1_master.h5")
    (expdir / "raw/ceo2.cbf").write_bytes(b"")  # (init checks it exists; nothing reads it)
    status = cli.main(["init", str(expdir), "--detector", "Pilatus300k", "--master",
                       str(expdir / "raw/f1_master.h5"), "--calibration-image",
                       str(expdir / "raw/ceo2.cbf"), *GIVEN])
    assert status == 0
    assert "still to fill in" not in capsys.readouterr().out
    assert PLACEHOLDER not in (expdir / "config/config.yaml").read_text()
    assert PLACEHOLDER not in (expdir / "config/scans.tsv").read_text()
    exp = load_experiment(expdir / "config/config.yaml", base_dir=expdir)
    assert exp.instrument.detector.name == "Pilatus300k"
    assert exp.instrument.wavelength == pytest.approx(0.7293)
    assert exp.instrument.goniometer.scan_axis == (0.0, 1.0, 0.0)  # NeXus -x: lab L2
    (scan,) = exp.scans
    assert (scan.sample, scan.temperature, scan.entry) == ("lab6", 300.0, "f1")
    assert scan.data == "raw/f1_master.h5"  # inside the experiment: relative
    assert (scan.nframes, scan.angles.start, scan.angles.step) == (900, -45.0, 0.2)
    assert exp.calibrations["ceo2"].image == "raw/ceo2.cbf"
    start = exp.raw["calibrations"]["ceo2"]["start"]
    assert start["dist"] == pytest.approx(0.18)  # mm in the file
    assert (start["poni1"], start["poni2"]) == pytest.approx((300 * 172e-6, 250 * 172e-6))
    assert exp.raw["live"]["scan_axis_name"] == "omega"


def _described_keys(node: dict, value, path: str = ""):
    """(dotted key, description) of every key of the config that the schema describes."""
    if not isinstance(value, dict):
        return
    properties, named = node.get("properties", {}), node.get("additionalProperties")
    for key, item in value.items():
        sub = properties.get(key, named if isinstance(named, dict) else {})
        dotted = f"{path}.{key}" if path else key
        if sub.get("description"):
            yield dotted, sub["description"]
        yield from _described_keys(sub, item, dotted)


def test_every_key_is_written_under_its_schema_description_and_the_defaults_are_the_schemas(
        tmp_path):
    from hklflow.commands.init import InitRequest, init_experiment

    init_experiment(InitRequest(directory=str(tmp_path / "exp"), detector="Eiger2_4M"))
    text = (tmp_path / "exp/config/config.yaml").read_text()
    config = yaml.safe_load(text)
    comments = " ".join(" ".join(ln.strip().lstrip("#").split()) for ln in text.splitlines()
                        if ln.strip().startswith("#"))
    described = dict(_described_keys(schema(), config))
    assert len(described) > 100  # every section, reduction's too
    for key, description in described.items():
        assert " ".join(description.split()) in comments, key
    # a comment right above each key: e.g. the peak search's sigma_strong
    lines = text.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.strip().startswith("sigma_strong:"))
    assert lines[at - 1].strip().startswith("# Standard deviations above the local mean")
    defaults = schema()["properties"]["reduction"]["properties"]["find_peaks"]["properties"]
    assert config["reduction"]["find_peaks"]["window"] == defaults["window"]["default"]
    assert config["instrument"]["polarization_fraction"] == 0.99


def test_what_init_cannot_know_is_a_placeholder_that_load_experiment_refuses_by_name(
        tmp_path, capsys):
    expdir = tmp_path / "exp"
    status = cli.main(["init", str(expdir), "--detector", "Pilatus300k", "--wavelength", "0.7"])
    assert status == 0
    out = capsys.readouterr().out
    for key in ("samples.sample.space_group", "samples.sample.cell",
                "calibrations.powder.image", "instrument.goniometer.scan_axis"):
        assert key in out
    with pytest.raises(ConfigError) as refused:
        load_experiment(expdir / "config/config.yaml", base_dir=expdir)
    message = str(refused.value)
    for key in ("samples.sample.space_group", "samples.sample.cell",
                "calibrations.powder.image", "calibrations.powder.calibrant",
                "calibrations.powder.start.dist", "samples.sample.parent.temperature"):
        assert f"field '{key}'" in message and PLACEHOLDER in message
    assert "instrument.wavelength" not in message  # given
    # once the config is filled in, the table's placeholders are refused by name
    config = config_of(expdir)
    config["instrument"]["goniometer"]["scan_axis"] = [0, 1, 0]
    config["calibrations"]["powder"].update(image="ceo2.tif", calibrant="CeO2",
                                            start={"dist": 0.2, "poni1": 0.05, "poni2": 0.04})
    config["samples"]["sample"].update(space_group=225, cell=[5.4, 5.4, 5.4, 90, 90, 90],
                                       parent={"temperature": 300})
    (expdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as refused:
        load_experiment(expdir / "config/config.yaml", base_dir=expdir)
    for column in ("nframes", "phi_start", "phi_step", "temperature"):
        assert f"field '{column}': still {PLACEHOLDER}" in str(refused.value)


def test_a_cbf_header_gives_wavelength_angles_distance_and_the_scans_frames(tmp_path):
    from hklflow.commands.init import InitRequest, init_experiment

    write_cbf_scan(tmp_path / "raw/scan1", count=3, start=12.5, step=0.25)
    expdir = tmp_path / "exp"
    result = init_experiment(InitRequest(
        directory=str(expdir), detector="Pilatus300k",
        cbf=str(tmp_path / "raw/scan1/scan1_00002.cbf"),  # any frame names the scan
        sample="s1", temperature=80.0))
    config = config_of(expdir)
    assert config["instrument"]["wavelength"] == pytest.approx(0.6199)
    assert config["calibrations"]["powder"]["start"]["dist"] == pytest.approx(0.21)
    assert config["calibrations"]["powder"]["start"]["poni1"] == pytest.approx(310 * 172e-6)
    assert config["calibrations"]["powder"]["start"]["poni2"] == pytest.approx(243.5 * 172e-6)
    (row,) = table_rows(expdir)
    assert row["data"] == str(tmp_path / "raw/scan1/scan1_*.cbf")  # outside: absolute
    assert (row["nframes"], row["phi_start"], row["phi_step"]) == ("3", "12.5", "0.25")
    assert (row["sample"], row["temperature"], row["entry"]) == ("s1", "80", "f1")
    assert "config/scans.tsv: nframes" not in result.to_fill_in


def test_an_unknown_detector_is_refused_naming_close_pyfai_names(tmp_path, capsys):
    status = cli.main(["init", str(tmp_path / "exp"), "--detector", "Eiger2_4MX"])
    assert status == 1
    err = capsys.readouterr().err
    assert "'Eiger2_4MX'" in err and "Eiger2_4M" in err.split("close ones:")[1]
    assert not (tmp_path / "exp/config").exists()


def test_a_master_of_another_detectors_shape_is_refused(tmp_path):
    from hklflow.commands.init import InitRequest, init_experiment

    write_nxmx_master(tmp_path / "f1_master.h5", shape=(2167, 2070))
    with pytest.raises(ConfigError, match=r"2167 x 2070 .* Pilatus300k.s are 619 x 487.*Eiger4M"):
        init_experiment(InitRequest(directory=str(tmp_path / "exp"), detector="Pilatus300k",
                                    master=str(tmp_path / "f1_master.h5")))


def test_an_existing_config_is_never_overwritten_unless_forced(tmp_path, capsys):
    expdir = tmp_path / "exp"
    (expdir / "config").mkdir(parents=True)
    mine = "experiment: mine  # edited by hand\n"
    (expdir / "config/config.yaml").write_text(mine)
    assert cli.main(["init", str(expdir), "--detector", "Pilatus300k"]) == 1
    err = capsys.readouterr().err
    assert str(expdir / "config/config.yaml") in err and "--force" in err
    assert (expdir / "config/config.yaml").read_text() == mine
    assert not (expdir / "config/scans.tsv").exists()
    assert cli.main(["init", str(expdir), "--detector", "Pilatus300k", "--force"]) == 0
    assert config_of(expdir)["experiment"] == "exp"


# --------------------------------------------------------------------------------------
# A whole experiment: several scans, named by their paths
# --------------------------------------------------------------------------------------
COLUMNS = ("sample", "temperature", "entry", "data", "nframes", "phi_start", "phi_step")


def _simulated(tmp_path, frame_format: str):
    """The tiny experiment's raw files (`hklflow simulate --preset tiny --format ...`) and
    its own scans table's rows, without its config: what init must find again."""
    from hklflow.simulation.experiment import preset, simulate_experiment

    expdir = tmp_path / "exp"
    simulate_experiment(preset("tiny"), expdir, frame_format=frame_format)
    truth = table_rows(expdir)
    shutil.rmtree(expdir / "config")
    return expdir, sorted(({c: row[c] for c in COLUMNS} for row in truth),
                          key=lambda r: (r["sample"], float(r["temperature"]), r["entry"]))


def _same_rows(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert {c: g[c] for c in ("sample", "entry")} == {c: e[c] for c in ("sample", "entry")}
        for c in ("temperature", "nframes", "phi_start", "phi_step"):
            assert float(g[c]) == float(e[c]), (c, g, e)


def _filled_in(expdir, **values):
    """The config with its FILL_INs replaced (dotted key -> value)."""
    config = config_of(expdir)
    for dotted, value in values.items():
        *parents, key = dotted.split(".")
        node = config
        for part in parents:
            node = node[part]
        assert node[key] == {PLACEHOLDER: node[key][PLACEHOLDER]}, dotted  # (a FILL_IN)
        node[key] = value
    (expdir / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_init_of_a_directory_of_eiger_scans_writes_a_row_per_scan_named_by_its_path(
        tmp_path, capsys, monkeypatch):
    """Every master a glob finds is a row (its data files left out), its sample, temperature
    and entry from its path (SAMPLE/TK/ENTRY/ENTRY_master.h5, a layout init knows), the rest
    from the master; the masters' pixel mask is the experiment's mask; once the FILL_INs
    (nothing says them) are filled, load_experiment takes the config, mask and all."""
    from hklflow.raw.images import user_mask

    expdir, expected = _simulated(tmp_path, "eiger")
    status = cli.main(["init", str(expdir), "--detector", "Pilatus300k", "--master",
                       str(expdir / "raw/*/*/*/*.h5")])
    assert status == 0
    out = capsys.readouterr().out
    assert "4 scans, named by their paths ({sample}/{temperature}K/{entry}/{entry}_master.h5)" \
        in out
    # f2's offsets are said, not written: their axes' directions and order are not in the file
    assert "chi (1.5 deg in f2_master.h5)" in out and "omega (-1 deg in f2_master.h5)" in out
    rows = table_rows(expdir)
    _same_rows(rows, expected)
    assert [r["data"] for r in rows] == [f"raw/tiny/{t}/{e}/{e}_master.h5"
                                         for t in ("100K", "300K") for e in ("f1", "f2")]
    config = config_of(expdir)
    detector = config["instrument"]["detector"]
    assert detector["mask_file"] == "raw/tiny/100K/f1/f1_master.h5"
    assert detector["mask_dataset"] == "/entry/instrument/detector/pixel_mask"
    assert config["live"]["discover"] == "raw/{sample}/{temperature}K/{entry}/{entry}_master.h5"
    parent = config["samples"]["tiny"]["parent"]["temperature"]
    assert "one of 100, 300" in parent[PLACEHOLDER]  # two temperatures: asked for
    for key in ("instrument.goniometer.scan_axis", "samples.tiny.space_group",
                "samples.tiny.parent.temperature", "calibrations.powder.image"):
        assert key in out
    with pytest.raises(ConfigError, match="samples.tiny.parent.temperature"):
        load_experiment(expdir / "config/config.yaml", base_dir=expdir)
    _filled_in(expdir, **{"instrument.goniometer.scan_axis": [0.0, 1.0, 0.0],
                          "calibrations.powder.image": "raw/calibration/CeO2.h5",
                          "calibrations.powder.calibrant": "CeO2",
                          "samples.tiny.space_group": "I 41/a m d",
                          "samples.tiny.cell": [5.171, 5.171, 7.504, 90, 90, 90],
                          "samples.tiny.parent.temperature": 300.0})
    exp = load_experiment(expdir / "config/config.yaml", base_dir=expdir)
    assert sorted((s.sample, s.temperature, s.entry) for s in exp.scans) == [
        ("tiny", t, e) for t in (100.0, 300.0) for e in ("f1", "f2")]
    monkeypatch.chdir(expdir)  # (the workflow's working directory)
    mask = user_mask(exp.instrument.detector, (619, 487))
    with h5py.File(expdir / "raw/tiny/300K/f2/f2_master.h5", "r") as f:
        dead = f["entry/instrument/detector/pixel_mask"][()] != 0
    assert dead.any() and np.array_equal(mask, dead)


def test_init_of_cbf_scans_takes_any_of_their_frames_and_the_names_given(tmp_path, capsys):
    """A CBF scan is its frame files, however many of them are named (each scan once); with
    --sample and --temperature and no pattern, the entries are numbered."""
    expdir, expected = _simulated(tmp_path, "cbf")
    assert cli.main(["init", str(expdir), "--detector", "Pilatus300k", "--cbf",
                     str(expdir / "raw/**/*.cbf"), "--parent-temperature", "300"]) == 0
    rows = table_rows(expdir)
    _same_rows(rows, expected)
    assert rows[0]["data"] == "raw/tiny/100K/f1/f1_*.cbf"
    config = config_of(expdir)
    assert config["instrument"]["detector"]["mask_file"] is None  # (no mask in a CBF header)
    assert config["samples"]["tiny"]["parent"]["temperature"] == 300
    assert config["live"]["discover"] == "raw/{sample}/{temperature}K/{entry}/{entry}_*.cbf"
    firsts = sorted(str(p) for p in expdir.glob("raw/tiny/*/*/*_00001.cbf"))
    assert cli.main(["init", str(expdir), "--force", "--cbf", *firsts, "--sample", "s1",
                     "--temperature", "20"]) == 0
    capsys.readouterr()
    rows = table_rows(expdir)
    assert [(r["sample"], r["temperature"], r["entry"]) for r in rows] == [
        ("s1", "20", f"f{i}") for i in (1, 2, 3, 4)]
    assert [r["data"] for r in rows] == [f"raw/tiny/{t}/{e}/{e}_*.cbf"
                                         for t in ("100K", "300K") for e in ("f1", "f2")]
    assert config_of(expdir)["samples"]["s1"]["parent"]["temperature"] == 20
    assert config_of(expdir)["live"]["discover"] is None


def test_a_path_pattern_names_the_scans_or_is_refused_naming_a_file_it_does_not_match(
        tmp_path, capsys):
    from hklflow.commands.init import InitRequest, init_experiment

    folder = tmp_path / "beamtime"
    for sample, t, entry in (("lab6", "80", "a1"), ("lab6", "80", "a2"), ("si", "295.5", "a1")):
        (folder / sample / f"T{t}").mkdir(parents=True, exist_ok=True)
        write_nxmx_master(folder / sample / f"T{t}" / f"{sample}_{entry}_master.h5", nframes=10)
    pattern = "{sample}/T{temperature}/{sample}_{entry}_master.h5"
    expdir = tmp_path / "exp"  # (the raw data outside it: absolute paths, no live.discover)
    result = init_experiment(InitRequest(directory=str(expdir), detector="Pilatus300k",
                                         master=(str(folder / "*/*/*_master.h5"),),
                                         pattern=pattern))
    assert result.pattern == pattern
    rows = table_rows(expdir)
    assert [(r["sample"], r["temperature"], r["entry"]) for r in rows] == [
        ("lab6", "80", "a1"), ("lab6", "80", "a2"), ("si", "295.5", "a1")]
    assert rows[2]["data"] == str(folder / "si/T295.5/si_a1_master.h5")
    config = config_of(expdir)
    assert config["samples"]["lab6"]["parent"]["temperature"] == 80
    assert config["samples"]["si"]["parent"]["temperature"] == 295.5
    assert config["live"]["discover"] is None
    write_nxmx_master(folder / "si/other_master.h5", nframes=10)
    with pytest.raises(ConfigError, match=r"other_master.h5 does not match it"):
        init_experiment(InitRequest(directory=str(expdir), detector="Pilatus300k",
                                    master=(str(folder / "*/*/*_master.h5"),
                                            str(folder / "si/other_master.h5")),
                                    pattern=pattern), force=True)
    with pytest.raises(ConfigError, match="not --sample as well"):
        init_experiment(InitRequest(directory=str(expdir), sample="x", pattern=pattern,
                                    master=(str(folder / "*/*/*_master.h5"),)), force=True)
    assert cli.main(["init", str(expdir), "--force", "--master",
                     str(folder / "lab6/T80/*_master.h5"), "--entry", "f1"]) == 1
    assert "--entry f1 names one scan's entry" in capsys.readouterr().err


def test_init_suggests_the_common_scan_axes_and_names_the_installed_schema(tmp_path):
    from hklflow.commands.init import InitRequest, init_experiment
    from hklflow.settings.schema import schema_path

    init_experiment(InitRequest(directory=str(tmp_path / "exp"), detector="Pilatus300k"))
    text = (tmp_path / "exp/config/config.yaml").read_text()
    lines = text.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.strip().startswith("scan_axis:"))
    above = "\n".join(lines[at - 10:at])
    for axis in ("[0, 1, 0]: horizontal, across the beam", "[1, 0, 0]: vertical"):
        assert axis in above
    assert Path(schema_path()).is_file() and f"#   {schema_path()}" in lines[:6]
    table = (tmp_path / "exp/config/scans.tsv").read_text()
    assert schema_path("scans.schema.yaml") in table and "EIGER master" in table
