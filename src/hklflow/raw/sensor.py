"""The sensor a scan's raw files name: NXmx's sensor_material and sensor_thickness in the
/entry/instrument/detector of an HDF5 file (an EIGER master), a Pilatus CBF header's
"# Silicon sensor, thickness 0.000450 m" line (files.nxmx, files.cbf_header).  `hklflow
ingest_scan` compares it with instrument.detector.sensor and warns where they differ;
`hklflow init` writes it into the config it makes."""
from __future__ import annotations

from dataclasses import dataclass

import h5py

from ..base.errors import RawDataError
from ..files import nxmx
from ..files.cbf_header import read_cbf_header
from ..files.h5 import open_h5
from ..model.sensor import Sensor, material_name
from .rawfiles import matching_files


@dataclass(frozen=True)
class NamedSensor:
    """A sensor as a raw file names it: the material as written, the thickness (m), where
    (the file and its field) and, when hklflow knows the material, the Sensor."""

    material: str
    thickness: float
    where: str

    @property
    def sensor(self) -> Sensor | None:
        name = material_name(self.material)
        if name is None or not 0 < self.thickness < 0.1:
            return None
        return Sensor(name, self.thickness)

    def describe(self) -> str:
        return f"{self.material}, {self.thickness * 1e6:g} um thick ({self.where})"


def named_sensor(data: str, base_dir=".") -> NamedSensor | None:
    """The sensor the first raw file of a scan names (`data` as the scans table gives it),
    None where it names none.  RawDataError where the file gives one that cannot be read
    (a thickness without a length unit); OSError where the file cannot be opened."""
    files = matching_files(data, base_dir)
    if not files:
        return None
    first = files[0]
    if h5py.is_hdf5(first):
        with open_h5(first) as f:
            found = nxmx.sensor(f, first)
        where = f"{first}: {nxmx.DETECTOR}/sensor_material, sensor_thickness"
    else:
        try:
            header = read_cbf_header(first)
        except ValueError:  # (not a CBF file: TIFF, EDF frames name no sensor)
            return None
        found = header.sensor()
        where = f"{first}: CBF header"
    if found is None:
        return None
    material, thickness = found
    if not material:
        raise RawDataError(f"{where}: a sensor thickness without a material")
    return NamedSensor(material, float(thickness), where)
