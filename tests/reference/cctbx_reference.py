"""cctbx answers for the tests: run as ``python tests/reference/cctbx_reference.py``.

cctbx-base cannot share a process with scipy (``import scipy.linalg`` then ``from cctbx
import sgtbx`` segfaults; the other order breaks scipy's LAPACK), so the tests run this
module in a separate process: it reads ONE JSON request from stdin and writes ONE JSON
answer to stdout.  Nothing here imports hklflow, numpy or scipy; cctbx is imported in
main() only.  Errors exit non-zero with a traceback on stderr.

Request (both keys optional)::

    {"unit_cells":   {"cells": [[a, b, c, alpha, beta, gamma], ...],   # A, degrees
                      "hkl":   [[h, k, l], ...]},
     "space_groups": {"symbols": ["P 1 21/c 1", "Hall: -P 2ybc", ...],  # space_group_info()
                      "hkl":     [[h, k, l], ...],                      # optional
                      "volume":  1000.0}}                               # optional

Answer::

    {"cctbx_version": "2025.11",
     "unit_cells": [{"reciprocal_metric": 3x3 G* (1/A^2, no 2 pi; from the 6-tuple
                                          (a*a*, b*b*, c*c*, a*b*, a*c*, b*c*) of
                                          uc.reciprocal_metrical_matrix()),
                     "reciprocal_parameters": [a*, b*, c*, alpha*, beta*, gamma*],
                     "volume": V (A^3),
                     "d": [uc.d(hkl) for each hkl]}, ...],          # one per cell, in order
     "space_groups": [{"symbol": the request's symbol,
                       "lookup_symbol": "P 1 21/c 1", "hall": " -P 2ybc", "number": 14,
                       "crystal_system": "Monoclinic",        # group.crystal_system()
                       "unique_axis": "b",                    # monoclinic only, else null: axis
                                                              # of the 2-fold / mirror normal
                       "laue_group": "2/m",                   # group.laue_group_type()
                       "centring": "P",                       # conventional_centring_type_symbol()
                       "order_z": 4, "order_p": 4,            # all ops / ops without centring
                       "compatible_cell": [6 numbers],        # any_compatible_unit_cell(volume)
                       "laue_rotations": [R, ...],            # distinct integer 3x3 rotation
                                                              # parts of build_derived_laue_group()
                       "laue_rotations_hkl": ["h,k,l", ...],  # r().as_hkl() of each R (same order)
                       "operators": [[r, t, t_den], ...],     # every op of the group (centring
                                                              # included): r = r().num() 3x3 (rot
                                                              # den is 1), t = t().num(), t_den
                       "sys_absent": "0110..."}, ...]}        # group.is_sys_absent(hkl) per hkl

Convention of the matrices: R = r().num() read row by row acts on fractional coordinates
as column vectors (x' = R x) and on Miller indices as ROW vectors, h' = h R -- which is
exactly what ``r().as_hkl()`` prints (for -y,x-y,z of P 3, num = ((0,-1,0),(1,-1,0),(0,0,1))
and as_hkl = "k,-h-k,l" = (h,k,l) R).  The tests check this against the strings.
"""
import json
import sys


def _unit_cells(req):
    from cctbx import uctbx
    from cctbx.array_family import flex

    hkl = flex.miller_index([tuple(int(v) for v in h) for h in req.get("hkl", [])])
    out = []
    for cell in req["cells"]:
        uc = uctbx.unit_cell([float(v) for v in cell])
        g11, g22, g33, g12, g13, g23 = uc.reciprocal_metrical_matrix()
        out.append({
            "reciprocal_metric": [[g11, g12, g13], [g12, g22, g23], [g13, g23, g33]],
            "reciprocal_parameters": list(uc.reciprocal_parameters()),
            "volume": uc.volume(),
            "d": list(uc.d(hkl)) if len(hkl) else [],
        })
    return out


def _space_groups(req):
    from cctbx import sgtbx
    from cctbx.array_family import flex

    hkl = flex.miller_index([tuple(int(v) for v in h) for h in req.get("hkl", [])])
    volume = float(req.get("volume", 1000.0))
    out = []
    for symbol in req["symbols"]:
        sgi = sgtbx.space_group_info(symbol=symbol)
        g = sgi.group()
        laue, laue_hkl = [], []
        for op in g.build_derived_laue_group():
            r = op.r()
            assert r.den() == 1, (symbol, op.as_xyz())
            R = [list(r.num()[0:3]), list(r.num()[3:6]), list(r.num()[6:9])]
            if R not in laue:
                laue.append(R)
                laue_hkl.append(r.as_hkl())
        unique_axis = None
        if g.crystal_system() == "Monoclinic":
            axes = {tuple(op.r().info().ev()) for op in g if abs(op.r().info().type()) == 2}
            assert len(axes) == 1, (symbol, axes)
            unique_axis = {(1, 0, 0): "a", (0, 1, 0): "b", (0, 0, 1): "c"}.get(axes.pop())
        ops = []
        for op in g:
            assert op.r().den() == 1, (symbol, op.as_xyz())
            r = op.r().num()
            ops.append([[list(r[0:3]), list(r[3:6]), list(r[6:9])], list(op.t().num()),
                        op.t().den()])
        out.append({
            "symbol": symbol,
            "lookup_symbol": sgi.type().lookup_symbol(),
            "hall": sgi.type().hall_symbol(),
            "number": sgi.type().number(),
            "crystal_system": g.crystal_system(),
            "unique_axis": unique_axis,
            "laue_group": g.laue_group_type(),
            "centring": g.conventional_centring_type_symbol(),
            "order_z": g.order_z(),
            "order_p": g.order_p(),
            "compatible_cell": list(sgi.any_compatible_unit_cell(volume=volume).parameters()),
            "laue_rotations": laue,
            "laue_rotations_hkl": laue_hkl,
            "operators": ops,
            "sys_absent": "".join("1" if a else "0" for a in g.is_sys_absent(hkl))
            if len(hkl) else "",
        })
    return out


def main():
    request = json.load(sys.stdin)
    answer = {}
    try:
        from importlib.metadata import version

        answer["cctbx_version"] = version("cctbx-base")
    except Exception:  # version is informative only
        answer["cctbx_version"] = None
    if "unit_cells" in request:
        answer["unit_cells"] = _unit_cells(request["unit_cells"])
    if "space_groups" in request:
        answer["space_groups"] = _space_groups(request["space_groups"])
    json.dump(answer, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
