"""Linear attenuation coefficients of materials from xraydb (Elam, Ravel and Sieber's
tables): air between sample and detector, a sample given by its formula and density."""
from __future__ import annotations

import functools

from ..sensor import energy_kev

# dry air at 20 C and 1 atm (xraydb's 'air' material), g/cm^3
AIR = "air"


@functools.lru_cache(maxsize=64)
def linear_attenuation(material: str, wavelength: float, density: float | None = None) -> float:
    """mu (1/m) of a material (xraydb's known names such as 'air', or a chemical formula with
    its density in g/cm^3) at a wavelength (Angstrom), photoabsorption and scattering
    together (the beam's total attenuation)."""
    import xraydb  # (imported when asked: it loads SQLAlchemy)

    energy_ev = 1000.0 * energy_kev(wavelength)
    try:
        per_cm = xraydb.material_mu(material, energy_ev, density=density, kind="total")
    except Exception as exc:  # xraydb raises bare Warnings/ValueErrors for unknown names
        raise ValueError(f"xraydb knows no material {material!r}"
                         f"{'' if density is None else f' of density {density} g/cm^3'}: "
                         f"{exc}") from None
    return 100.0 * float(per_cm)
