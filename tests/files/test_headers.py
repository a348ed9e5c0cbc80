"""The one reader of CBF headers (hklflow.files.cbf_header) and of NXmx metadata
(hklflow.files.nxmx): a Pilatus header reads as fabio's PilatusHeader reads it, compressed or
not; files that are no CBF, or not whole yet, say so; NXmx values in the units their files
name."""
from __future__ import annotations

import bz2
import gzip
import math

import h5py
import numpy as np
import pytest

from hklflow.base.errors import RawDataError
from hklflow.files import cbf_header, nxmx
from hklflow.files.cbf_header import CBF_BINARY_MARKER, read_cbf_header

PILATUS_LINES = [
    "# Detector: PILATUS 300K, S/N 3-0101", "# 2012-02-21T16:43:50.328",
    "# Pixel_size 172e-6 m x 172e-6 m", "# Silicon sensor, thickness 0.000320 m",
    "# Exposure_time 0.0970000 s", "# Exposure_period 0.1000000 s", "# Tau = 383.8e-09 s",
    "# Count_cutoff 1048575 counts", "# Threshold_setting: 6342 eV",
    "# Gain_setting: low gain (vrf = -0.200)", "# N_excluded_pixels = 0",
    "# Excluded_pixels: badpix_mask.tif", "# Wavelength 0.6199 A",
    "# Detector_distance 0.21000 m", "# Beam_xy (243.50, 310.00) pixels", "# Flux 2.3e+11",
    "# Filter_transmission 1.0000", "# Start_angle 12.5000 deg.",
    "# Angle_increment 0.2500 deg.", "# Detector_2theta 0.0000 deg.",
    "# Polarization 0.990", "# Alpha 0.0000 deg.", "# Kappa 0.0000 deg.", "# Phi 12.5000 deg.",
    "# Chi 0.0000 deg.", "# Oscillation_axis X, CW", "# N_oscillations 1"]


def write_pilatus_cbf(path, lines=PILATUS_LINES, shape=(6, 5)):
    import fabio.cbfimage

    fabio.cbfimage.CbfImage(
        data=np.arange(shape[0] * shape[1], dtype=np.int32).reshape(shape),
        header={"_array_data.header_convention": "PILATUS_1.2",
                "_array_data.header_contents": "\r\n".join(lines)}).write(str(path))
    return path


def fabio_split(lines) -> dict:
    """fabio's PilatusHeader._parse, on the word lists of our reader."""
    from fabio.cbfimage import PilatusHeader

    parsed = {}
    for words in lines:
        for key, spec in PilatusHeader.KEYWORDS.items():
            if len(words) <= spec.key_index or words[spec.key_index] != key:
                continue
            if isinstance(spec.value_indices, slice):
                parsed[key] = " ".join(spec.types(w) for w in words[spec.value_indices])
            elif len(spec.value_indices) == 1:
                parsed[key] = spec.types[0](words[spec.value_indices[0]])
            else:
                parsed[key] = tuple(t(words[i]) for t, i in zip(spec.types, spec.value_indices))
    return parsed


def test_a_pilatus_header_gives_the_fields_fabios_pilatus_header_gives(tmp_path):
    import fabio
    from fabio.cbfimage import PilatusHeader

    path = write_pilatus_cbf(tmp_path / "f_00001.cbf")
    header = read_cbf_header(path)
    image = fabio.open(str(path))
    theirs = PilatusHeader(image.header["_array_data.header_contents"])._dict
    assert fabio_split(header.lines) == dict(theirs)
    assert {"Wavelength", "Beam_xy", "Pixel_size", "Start_angle", "Flux"} <= set(theirs)
    # the quantities hklflow reads, and a field's number, as fabio reads them
    assert header.quantity("Wavelength") == ((theirs["Wavelength"],), "Wavelength")
    assert header.quantity("Beam_xy")[0] == theirs["Beam_xy"]
    assert header.quantity("Pixel_size")[0] == theirs["Pixel_size"]
    for name in ("Start_angle", "Angle_increment", "Detector_distance"):
        assert header.quantity(name)[0] == (theirs[name],)
    assert header.number("flux") == theirs["Flux"]  # (field names: case aside)
    assert header.number("Phi_increment") is None
    assert header.fields()["Exposure_period"] == ("0.1000000", "s")
    # the Detector line as written, commas kept (fabio drops them)
    assert header.text_after("Detector") == "PILATUS 300K, S/N 3-0101"
    assert theirs["Detector"] == "PILATUS 300K S/N 3-0101"
    assert "2012-02-21T16" not in header.numeric_fields()  # (the time stamp line)
    # the binary section's MIME header and where its data start
    shape = (int(header.binary["x-binary-size-second-dimension"]),
             int(header.binary["x-binary-size-fastest-dimension"]))
    assert shape == image.data.shape == (6, 5)
    content = path.read_bytes()
    assert header.data_start == content.find(CBF_BINARY_MARKER) + len(CBF_BINARY_MARKER)


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress], ids=["gz", "bz2"])
def test_compressed_cbf_files_read_as_plain_ones(tmp_path, compress):
    plain = write_pilatus_cbf(tmp_path / "f_00001.cbf")
    suffix = ".gz" if compress is gzip.compress else ".bz2"
    packed = tmp_path / f"f_00001.cbf{suffix}"
    packed.write_bytes(compress(plain.read_bytes()))
    assert read_cbf_header(packed).lines == read_cbf_header(plain).lines


def test_units_other_than_those_expected_are_no_quantity_and_bad_numbers_an_error(tmp_path):
    path = write_pilatus_cbf(tmp_path / "f.cbf", [
        "# Wavelength 0.62 nm", "# Start_angle 3 rad", "# Angle_increment x deg.",
        "# Detector_distance 210 mm", "# Beam_xy (1, 2) mm", "# Flux n/a"])
    header = read_cbf_header(path, shown="raw/f.cbf")
    for name in ("Wavelength", "Start_angle", "Detector_distance", "Beam_xy"):
        assert header.quantity(name) is None
    expected = r"raw/f.cbf: header line '# Angle_increment x deg.': expected a number of degrees"
    with pytest.raises(cbf_header.CbfHeaderError, match=expected):
        header.quantity("Angle_increment")
    with pytest.raises(ValueError, match="raw/f.cbf: header line '# Flux n/a': expected a "
                                         "number after Flux"):
        header.number("Flux")


def test_files_that_are_no_cbf_or_not_whole_say_so(tmp_path):
    whole = write_pilatus_cbf(tmp_path / "whole.cbf").read_bytes()
    marker = whole.find(CBF_BINARY_MARKER)
    cases = {"tif": b"II*\0" + b"\0" * 100, "empty": b"", "start": b"###C",
             "header": whole[:whole.find(b"--CIF-BINARY-FORMAT-SECTION--") - 10]}
    for name, content in cases.items():
        (tmp_path / f"{name}.cbf").write_bytes(content)
    expected = r"tif.cbf: not a CBF file \(it does not start with ###CBF\)"
    with pytest.raises(cbf_header.NotCbfError, match=expected) as raised:
        read_cbf_header(tmp_path / "tif.cbf")
    assert not isinstance(raised.value, cbf_header.CbfHeaderUnfinished)
    for name in ("empty", "start"):  # shorter than ###CBF: not one (yet), being written
        with pytest.raises(cbf_header.NotCbfError) as raised:
            read_cbf_header(tmp_path / f"{name}.cbf")
        assert isinstance(raised.value, cbf_header.CbfHeaderUnfinished)
    with pytest.raises(cbf_header.CbfHeaderUnfinished, match="without its binary section"):
        read_cbf_header(tmp_path / "header.cbf")
    # ended in the binary section's MIME header: its '#' lines are all there, no data yet
    (tmp_path / "mime.cbf").write_bytes(whole[:marker])
    mime = read_cbf_header(tmp_path / "mime.cbf")
    assert mime.lines == read_cbf_header(tmp_path / "whole.cbf").lines
    assert mime.data_start is None and mime.number("Flux") == 2.3e11
    long = tmp_path / "long.cbf"
    long.write_bytes(b"###CBF: VERSION 1.5\n" + b"# Flux 1\n" * 200_000)
    with pytest.raises(cbf_header.CbfHeaderTooLong, match="no binary section marker in its first"):
        read_cbf_header(long)
    error = cbf_header.CbfHeaderError  # (callers catch either)
    assert issubclass(error, RawDataError) and issubclass(error, ValueError)


# --------------------------------------------------------------------------------------
# NXmx
# --------------------------------------------------------------------------------------
def write_master(path, **detector):
    with h5py.File(path, "w") as f:
        f["entry/instrument/beam/incident_wavelength"] = 0.07
        f["entry/instrument/beam/incident_wavelength"].attrs["units"] = "nm"
        gonio = f.create_group("entry/sample/goniometer")
        gonio["omega"] = np.radians(10.0 + 0.5 * np.arange(4))
        gonio["omega"].attrs.update(units="rad", vector=[-1.0, 0.0, 0.0])
        gonio["phi"] = np.full(4, 30.0)
        gonio["phi_increment"] = 0.0
        gonio["omega_range_total"] = 2.0
        det = f.create_group("entry/instrument/detector")
        for name, (value, units) in detector.items():
            det[name] = value
            det[name].attrs["units"] = units
        specific = det.create_group("detectorSpecific")
        specific["nimages"], specific["ntrigger"] = 4, 3
        specific["y_pixels_in_detector"], specific["x_pixels_in_detector"] = 619, 487
        f["entry/sample/temperature"] = 300.0
        f["entry/sample/temperature"].attrs["units"] = "C"
    return path


def test_nxmx_values_come_in_the_units_their_files_name(tmp_path):
    path = write_master(tmp_path / "m.h5", distance=(210.0, "mm"),
                        detector_distance=(0.3, "m"), beam_center_x=(0.0172, "m"),
                        beam_center_y=(50.0, "pixels"), x_pixel_size=(172.0, "um"),
                        y_pixel_size=(0.172, "mm"))
    with h5py.File(path, "r") as f:
        assert nxmx.wavelength(f, "m.h5") == pytest.approx(0.7)
        axes = nxmx.goniometer_axes(f, "m.h5")
        assert sorted(axes) == ["omega", "phi"]
        omega = axes["omega"]
        assert omega.angles == pytest.approx([10.0, 10.5, 11.0, 11.5])
        assert omega.step == pytest.approx(0.5) and not omega.from_increment
        assert omega.vector == (-1.0, 0.0, 0.0)
        assert axes["phi"].step == 0.0 and axes["phi"].from_increment
        first = nxmx.goniometer_axis(f[nxmx.GONIOMETER], "omega", "m.h5", count=1)
        assert len(first.angles) == 1 and first.step is None  # (a file still growing)
        det = f[nxmx.DETECTOR]
        assert nxmx.detector_distance(det, "m.h5") == (pytest.approx(0.21), "distance")
        assert nxmx.pixel_size(det, "m.h5") == pytest.approx((172e-6, 172e-6))
        assert nxmx.beam_centre(det, "m.h5") == pytest.approx((50.0, 100.0))
        assert nxmx.eiger_frame_count(f, "m.h5") == 12
        assert nxmx.eiger_frame_shape(f, "m.h5") == (619, 487)
        assert nxmx.temperature(f, "m.h5") is None  # (not in kelvin)


def test_nxmx_units_not_known_are_errors_naming_the_dataset(tmp_path):
    path = write_master(tmp_path / "m.h5", detector_distance=(9.0, "furlong"),
                        beam_center_x=(1.0, "mm"), beam_center_y=(2.0, "mm"))
    with h5py.File(path, "r") as f:
        det = f[nxmx.DETECTOR]
        with pytest.raises(RawDataError, match=r"m.h5: /entry/instrument/detector/"
                                               r"detector_distance is in 'furlong': expected "
                                               r"m or mm"):
            nxmx.detector_distance(det, "m.h5")
        with pytest.raises(RawDataError, match=r"beam_center_y is in 'mm': expected pixels \(or "
                                               r"a length, with x_pixel_size and y_pixel_size"):
            nxmx.beam_centre(det, "m.h5")
    with h5py.File(path, "a") as f:
        f["entry/sample/goniometer/omega_increment"] = math.nan
    with h5py.File(path, "r") as f, pytest.raises(RawDataError, match="omega_increment: "
                                                                      "expected a finite number"):
        nxmx.goniometer_axes(f, "m.h5")


# --------------------------------------------------------------------------------------
# The sensor a raw file names (issue 80)
# --------------------------------------------------------------------------------------
def test_a_pilatus_header_names_its_sensor(tmp_path):
    header = read_cbf_header(write_pilatus_cbf(tmp_path / "si.cbf"))
    assert header.sensor() == ("Silicon", pytest.approx(320e-6))
    cdte = [line if "sensor" not in line else "# CdTe sensor, thickness 0.001000 m"
            for line in PILATUS_LINES]
    assert read_cbf_header(write_pilatus_cbf(tmp_path / "cdte.cbf", cdte)).sensor() == (
        "CdTe", pytest.approx(1e-3))
    none = [line for line in PILATUS_LINES if "sensor" not in line]
    assert read_cbf_header(write_pilatus_cbf(tmp_path / "none.cbf", none)).sensor() is None
    other_unit = [line if "sensor" not in line else "# Silicon sensor, thickness 450 um"
                  for line in PILATUS_LINES]
    assert read_cbf_header(write_pilatus_cbf(tmp_path / "um.cbf", other_unit)).sensor() is None


def test_an_nxmx_master_names_its_sensor_in_its_units(tmp_path):
    path = write_master(tmp_path / "m.h5", sensor_thickness=(450.0, "um"))
    with h5py.File(path, "a") as f:
        assert nxmx.sensor(f, "m.h5") is None  # (no material)
        f[nxmx.DETECTOR]["sensor_material"] = "Si"
    with h5py.File(path, "r") as f:
        assert nxmx.sensor(f, "m.h5") == ("Si", pytest.approx(450e-6))
    bad = write_master(tmp_path / "bad.h5", sensor_thickness=(1.0, "furlong"))
    with h5py.File(bad, "a") as f:
        f[nxmx.DETECTOR]["sensor_material"] = "CdTe"
        with pytest.raises(RawDataError, match="sensor_thickness is in 'furlong'"):
            nxmx.sensor(f, "bad.h5")
