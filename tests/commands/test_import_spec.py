"""`hklflow import spec` (hklflow.commands.import_spec): a QM2-style SPEC record (the
columns and positioners NXRefine's QM2 beamline reads) with its CBF frames becomes rows:
phi start and step from the phi column, NXRefine's chi = 90 - SPEC's chi, theta = th,
temperatures from the scans' folders, monitors from a counter column."""
from __future__ import annotations

import subprocess
import sys

import fabio.cbfimage
import numpy as np
import pytest

from hklflow.base.errors import ConfigError
from hklflow.commands.import_spec import import_spec, parse_numbers
from hklflow.commands.importing import main
from hklflow.model.geometry import DetectorGeometry

SPEC = """#F {path}
#E 1764400000
#D Sun Nov 29 12:00:00 2026
#C qm2  User = tester
#O0 chi  th  phi_m

#S 12  flyscan phi -10 -9 2 0.5
#D Sun Nov 29 12:01:00 2026
#P0 5.0 1.25 0
#N 4
#L phi  sampleT  flyc1  Seconds
-10 300.2 1000 0.5
-9.5 299.8 1010 0.5

#S 13  flyscan phi -10 -9 2 0.5
#D Sun Nov 29 12:02:00 2026
#P0 -10.0 1.25 0
#N 4
#L phi  sampleT  flyc1  Seconds
-10 300.1 990 0.5
-9.5 299.9 995 0.5

#S 14  flyscan phi 0 1 2 0.5
#D Sun Nov 29 13:00:00 2026
#P0 5.0 0.5 0
#N 4
#L phi  sampleT  flyc1  Seconds
0 100.1 1020 0.5
0.5 99.9 1030 0.5
"""


@pytest.fixture()
def qm2(tmp_path):
    """raw/lsco (the SPEC file) and its frames raw/lsco/xtal/TEMPERATURE/lsco_NNN/*.cbf
    (QM2's layout, 2 frames a scan), a PONI."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "lsco.spec").write_text(SPEC.format(path=raw / "lsco.spec"))
    rng = np.random.default_rng(5)
    for n, t in ((12, "300K"), (13, "300K"), (14, "100K")):
        folder = raw / "lsco" / "xtal" / t / f"lsco_{n:03d}"
        folder.mkdir(parents=True)
        for i in range(2):
            fabio.cbfimage.CbfImage(data=rng.poisson(2, (619, 487)).astype(np.int32)).write(
                str(folder / f"lsco_{n:03d}_{i + 1:05d}.cbf"))
    poni = tmp_path / "ceo2.poni"
    DetectorGeometry("Pilatus300k", 0.2, 0.05, 0.04, 0.01, 0.0, 0.0, wavelength=0.41).write_poni(poni)
    return tmp_path, raw / "lsco.spec", poni


def test_spec_scans_become_rows_as_nxrefine_reads_them(qm2, monkeypatch):
    root, spec, poni = qm2
    monkeypatch.chdir(root)
    imp = import_spec(spec, root / "hkl", [12, 13, 14], "raw/lsco/xtal/*/lsco_{scan:03d}/*.cbf",
                      poni, "lsco", monitor="flyc1")
    rows = {(r["temperature"], r["entry"]): r for r in imp.rows}
    assert sorted(rows) == [("100", "f1"), ("300", "f1"), ("300", "f2")]
    r = rows[("300", "f2")]
    assert (r["phi_start"], r["phi_step"], r["nframes"]) == ("-10", "0.5", "2")
    assert (r["chi"], r["theta"], r["omega"]) == ("100", "1.25", "0")  # 90 - (-10)
    assert rows[("100", "f1")]["chi"] == "85"
    assert r["data"] == "../raw/lsco/xtal/300K/lsco_013/lsco_013_0000*.cbf"
    values, where = imp.monitors[r["monitor"]]
    assert values.tolist() == [990.0, 995.0] and where == "lsco.spec #S 13 column flyc1"
    assert imp.config["samples"]["lsco"]["parent"]["temperature"] == 300.0
    assert imp.config["instrument"]["detector"]["name"] == "Pilatus300k"


def test_what_the_spec_file_cannot_say_is_named(qm2, monkeypatch):
    root, spec, poni = qm2
    monkeypatch.chdir(root)
    with pytest.raises(ConfigError, match=r"lsco.spec: no scan #S 15"):
        import_spec(spec, root / "hkl", [12, 15], "raw/lsco/xtal/*/lsco_{scan:03d}/*.cbf", poni,
                    "lsco")
    with pytest.raises(ConfigError, match=r"no file for scan 12"):
        import_spec(spec, root / "hkl", [12], "raw/nowhere/{scan}/*.cbf", poni, "lsco")
    with pytest.raises(ConfigError, match=r"#S 12: no column 'I0' for --monitor \(columns: phi, "
                                          r"sampleT, flyc1, Seconds\)"):
        import_spec(spec, root / "hkl", [12], "raw/lsco/xtal/*/lsco_{scan:03d}/*.cbf", poni,
                    "lsco", monitor="I0")
    assert parse_numbers("12,13, 20-22") == [12, 13, 20, 21, 22]
    with pytest.raises(ConfigError, match="distinct scan numbers"):
        parse_numbers("12,12")


def test_the_command_writes_an_experiment_hklflow_plans(qm2, monkeypatch, capsys):
    root, spec, poni = qm2
    monkeypatch.chdir(root)
    frames = "raw/lsco/xtal/*/lsco_{scan:03d}/*.cbf"
    assert main(["spec", str(spec), "hkl", "--scans", "12-14", "--frames", frames, "--poni",
                 str(poni), "--sample", "lsco", "--monitor", "flyc1"]) == 0
    out = capsys.readouterr().out
    assert "still to fill in (marked FILL_IN): samples.lsco.space_group, samples.lsco.cell" in out
    assert main(["spec", str(spec), "hkl", "--scans", "12-14", "--frames", frames, "--poni",
                 str(poni), "--sample", "lsco", "--monitor", "flyc1", "--space-group",
                 "I 4/m m m", "--cell", "3.8", "3.8", "13.2", "90", "90", "90", "--force"]) == 0
    assert (root / "hkl" / "calibration" / "qm2.poni").is_file()
    r = subprocess.run([sys.executable, "-m", "hklflow", "run", "hkl", "--", "-n"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "ingest_scan" in r.stdout + r.stderr
