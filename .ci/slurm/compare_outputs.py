#!/usr/bin/env python3
"""Compare every output file of two runs of the workflow (e.g. local and through SLURM).

    compare_outputs.py RUN_A RUN_B [--subdir results] [--rtol 0] [--atol 0]

Walks RUN_A/results and RUN_B/results (whatever files the workflow wrote there) and compares
each pair by content, ignoring only provenance, which differs by construction:

* HDF5/NeXus (.nxs .h5 .hdf5 .nx5 .nxs.h5): the same groups, datasets, links and attributes;
  datasets of the same dtype and shape with equal values; external and soft links by target.
  The provenance note (an NXnote holding JSON) is parsed and compared like a JSON file.
* JSON: the same keys and values.
* PONI and other text: the same lines, '#' comment lines of .poni files left out (pyFAI
  writes the date there).
* PNG: the same decoded pixels (not bytes: encoders may add metadata).
* anything else: the same bytes.

Ignored everywhere (dataset, attribute or JSON key names): when and where it ran
(file_name, file_time, file_update_time, date, time, created, host, user, platform,
working_directory, argv), the raw files' place on the file system (raw_file_ctime_ns,
raw_file_inode: a copied experiment's differ) and wall times (seconds, *_seconds).  Digests ("sha256:...") of
files that embed those times differ too: differing digests are counted, not failed.
Strings are compared after replacing the absolute paths of the two run directories by <RUN>,
wall times quoted in free text ("..., 0.065 s") by <T>, and dropping the '#' lines of PONI
text stored in a dataset.

Numbers: integers, booleans and strings must be equal; floating-point values are compared
exactly by default (same code, same inputs, one thread per job: the runs should agree bit for
bit); --rtol/--atol allow a tolerance (|a - b| <= atol + rtol |b|, NaN equal to NaN) for
workflows whose parallel sums may reorder.  The summary gives the largest absolute and
relative differences seen.  Exit status 0 when everything agrees, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HDF5_SUFFIXES = (".nxs", ".h5", ".hdf5", ".nx5")
IGNORED_NAMES = {"file_name", "file_time", "file_update_time", "date", "time", "created", "host",
                 "user", "platform", "working_directory", "argv",
                 # where the raw files sit on the file system (a copied experiment's differ;
                 # their size, mtime and content hashes are compared)
                 "raw_file_ctime_ns", "raw_file_inode"}
DIGEST = re.compile(r"^sha256(\[[^\]]*\])?:[0-9a-f]{64}$")
WALL_TIME = re.compile(r"\b\d+(\.\d+)?(e-?\d+)? ?(s|sec|seconds)\b")


def ignored_name(name: str) -> bool:
    return name in IGNORED_NAMES or name == "seconds" or name.endswith("_seconds")


PROVENANCE_LINE = "# provenance: "  # a text table's provenance (files.orientation)


@dataclass
class Stats:
    files: dict = field(default_factory=dict)      # kind -> count
    identical_bytes: int = 0
    values: int = 0                                  # datasets/attributes/JSON leaves compared
    floats: int = 0                                  # of which floating point
    max_abs: float = 0.0
    max_rel: float = 0.0
    ignored: int = 0                                 # provenance items left out
    digests_differing: int = 0
    differences: list = field(default_factory=list)  # (file, what)


class Comparer:
    def __init__(self, root_a: Path, root_b: Path, rtol: float, atol: float, stats: Stats):
        self.roots = [str(root_a.resolve()), str(root_b.resolve()),
                      str(root_a.absolute()), str(root_b.absolute())]
        self.rtol, self.atol, self.st = rtol, atol, stats
        self.file = ""

    # --- helpers -----------------------------------------------------------------------------
    def diff(self, where: str, what: str):
        self.st.differences.append((self.file, f"{where}: {what}"))

    def norm_str(self, s: str) -> str:
        for r in sorted(self.roots, key=len, reverse=True):
            s = s.replace(r, "<RUN>")
        if "\n" in s and "poni_version" in s:     # a PONI file's text: its comments hold the date
            s = "\n".join(x for x in s.splitlines() if not x.lstrip().startswith("#"))
        # wall times quoted in free text ("2 refined, 0.065 s")
        return WALL_TIME.sub("<T> s", s)

    def floats(self, where: str, a: np.ndarray, b: np.ndarray):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        self.st.floats += 1
        if np.array_equal(a, b, equal_nan=True):
            return
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        if not np.array_equal(nan_a, nan_b):
            self.diff(where, "NaN in different places")
            return
        ok = ~nan_a
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            d = np.abs(a[ok] - b[ok])
            inf_mismatch = ~np.isfinite(d) & (a[ok] != b[ok])
            d = np.where(np.isfinite(d), d, 0.0)
            rel = np.where(b[ok] != 0, d / np.abs(b[ok]), np.where(d > 0, np.inf, 0.0))
        if inf_mismatch.any():
            self.diff(where, "infinities differ")
            return
        max_abs = float(d.max()) if d.size else 0.0
        max_rel = float(rel.max()) if rel.size else 0.0
        self.st.max_abs = max(self.st.max_abs, max_abs)
        self.st.max_rel = max(self.st.max_rel, max_rel)
        if not np.all(d <= self.atol + self.rtol * np.abs(b[ok])):
            self.diff(where, f"values differ: max |a-b| = {max_abs:.3g}, max rel = {max_rel:.3g} "
                             f"({int(np.count_nonzero(d))} of {d.size} elements)")

    def value(self, where: str, a, b):
        """Compare two leaf values (numpy arrays/scalars, Python scalars, strings)."""
        self.st.values += 1
        if isinstance(a, bytes):
            a = a.decode("utf-8", "replace")
        if isinstance(b, bytes):
            b = b.decode("utf-8", "replace")
        if isinstance(a, str) or isinstance(b, str):
            if not (isinstance(a, str) and isinstance(b, str)):
                self.diff(where, f"types differ: {type(a).__name__} / {type(b).__name__}")
                return
            if DIGEST.match(a) and DIGEST.match(b):
                if a != b:
                    self.st.digests_differing += 1
                return
            if a.lstrip().startswith(("{", "[")):
                try:
                    ja, jb = json.loads(a), json.loads(b)
                except ValueError:
                    pass
                else:
                    self.json(where, ja, jb)
                    return
            if self.norm_str(a) != self.norm_str(b):
                self.diff(where, f"strings differ: {self.norm_str(a)[:80]!r} / {self.norm_str(b)[:80]!r}")
            return
        if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
            if a != b:
                self.diff(where, f"{a!r} / {b!r}")
            return
        aa, bb = np.asarray(a), np.asarray(b)
        if aa.shape != bb.shape:
            self.diff(where, f"shapes differ: {aa.shape} / {bb.shape}")
            return
        if aa.dtype.kind in "OUS" or bb.dtype.kind in "OUS":
            fa, fb = aa.ravel().tolist(), bb.ravel().tolist()
            for i, (x, y) in enumerate(zip(fa, fb)):
                self.st.values -= 1          # counted by the recursive call
                self.value(f"{where}[{i}]" if len(fa) > 1 else where, x, y)
            return
        if aa.dtype.kind in "fc" or bb.dtype.kind in "fc":
            if aa.dtype.kind == "c" or bb.dtype.kind == "c":
                self.floats(where + ".real", aa.real, bb.real)
                self.floats(where + ".imag", aa.imag, bb.imag)
            else:
                self.floats(where, aa, bb)
            return
        if aa.dtype.names or bb.dtype.names:           # compound: field by field
            if aa.dtype.names != bb.dtype.names:
                self.diff(where, "compound fields differ")
                return
            for n in aa.dtype.names:
                self.value(f"{where}.{n}", aa[n], bb[n])
            return
        if not np.array_equal(aa, bb):
            self.diff(where, f"values differ ({int(np.count_nonzero(aa != bb))} of {aa.size} elements)")

    def json(self, where: str, a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            ka = {self.norm_str(k): k for k in a}
            kb = {self.norm_str(k): k for k in b}
            for k in sorted(set(ka) | set(kb)):
                if ignored_name(k):
                    self.st.ignored += 1
                    continue
                if k not in ka or k not in kb:
                    self.diff(f"{where}.{k}", "only in " + ("B" if k not in ka else "A"))
                    continue
                self.json(f"{where}.{k}", a[ka[k]], b[kb[k]])
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                self.diff(where, f"list lengths differ: {len(a)} / {len(b)}")
                return
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in a + b) and a:
                self.st.values += 1
                self.floats(where, np.array(a, dtype=float), np.array(b, dtype=float))
                return
            for i, (x, y) in enumerate(zip(a, b)):
                self.json(f"{where}[{i}]", x, y)
        elif isinstance(a, float) or isinstance(b, float):
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
                    and not isinstance(a, bool) and not isinstance(b, bool):
                self.st.values += 1
                self.floats(where, np.array(a, dtype=float), np.array(b, dtype=float))
            else:
                self.value(where, a, b)
        else:
            self.value(where, a, b)

    # --- file kinds ------------------------------------------------------------------------------
    def hdf5(self, pa: Path, pb: Path):
        import h5py
        import hdf5plugin  # noqa: F401  (compressed datasets)

        with h5py.File(pa, "r") as fa, h5py.File(pb, "r") as fb:
            self.h5_attrs("/", fa, fb)
            self.h5_group("/", fa, fb)

    def h5_attrs(self, where, oa, ob):
        ka, kb = set(oa.attrs), set(ob.attrs)
        for k in sorted(ka | kb):
            if ignored_name(k):
                self.st.ignored += 1
                continue
            if k not in ka or k not in kb:
                self.diff(f"{where}@{k}", "attribute only in " + ("B" if k not in ka else "A"))
                continue
            self.value(f"{where}@{k}", oa.attrs[k], ob.attrs[k])

    def h5_group(self, where, ga, gb):
        import h5py

        na, nb = set(ga), set(gb)
        for n in sorted(na - nb):
            self.diff(where + n, "only in A")
        for n in sorted(nb - na):
            self.diff(where + n, "only in B")
        for n in sorted(na & nb):
            path = where + n
            if ignored_name(n):
                self.st.ignored += 1
                continue
            la, lb = ga.get(n, getlink=True), gb.get(n, getlink=True)
            if type(la) is not type(lb):
                self.diff(path, f"link kinds differ: {type(la).__name__} / {type(lb).__name__}")
                continue
            if isinstance(la, h5py.ExternalLink):
                self.st.values += 1
                if (self.norm_str(la.filename), la.path) != (self.norm_str(lb.filename), lb.path):
                    self.diff(path, f"external links differ: {la.filename}:{la.path} / {lb.filename}:{lb.path}")
                continue
            if isinstance(la, h5py.SoftLink):
                self.st.values += 1
                if la.path != lb.path:
                    self.diff(path, f"soft links differ: {la.path} / {lb.path}")
                continue
            oa, ob = ga[n], gb[n]
            if isinstance(oa, h5py.Group) != isinstance(ob, h5py.Group):
                self.diff(path, "group in one file, dataset in the other")
                continue
            self.h5_attrs(path, oa, ob)
            if isinstance(oa, h5py.Group):
                self.h5_group(path + "/", oa, ob)
                continue
            if oa.shape != ob.shape:
                self.diff(path, f"shapes differ: {oa.shape} / {ob.shape}")
                continue
            if oa.dtype != ob.dtype and not (oa.dtype.kind in "OSU" and ob.dtype.kind in "OSU"):
                self.diff(path, f"dtypes differ: {oa.dtype} / {ob.dtype}")
                continue
            if oa.is_virtual or ob.is_virtual:
                sa = [(self.norm_str(s.file_name), s.dset_name) for s in oa.virtual_sources()]
                sb = [(self.norm_str(s.file_name), s.dset_name) for s in ob.virtual_sources()]
                self.st.values += 1
                if sa != sb:
                    self.diff(path, "virtual dataset sources differ")
                continue
            self.value(path, oa[()], ob[()])

    def text(self, pa: Path, pb: Path, drop_comments: bool):
        la = pa.read_text(errors="replace").splitlines()
        lb = pb.read_text(errors="replace").splitlines()
        if drop_comments:
            self.st.ignored += sum(1 for x in la if x.lstrip().startswith("#"))
            la = [x for x in la if not x.lstrip().startswith("#")]
            lb = [x for x in lb if not x.lstrip().startswith("#")]
        # a table's provenance comment ('# provenance: {JSON}'): compared like the JSON note
        pa_, pb_ = ([x for x in lines if x.startswith(PROVENANCE_LINE)] for lines in (la, lb))
        if pa_ or pb_:
            if len(pa_) != len(pb_):
                self.diff("provenance", f"{len(pa_)} / {len(pb_)} provenance lines")
            for x, y in zip(pa_, pb_):
                try:
                    self.json("provenance", json.loads(x[len(PROVENANCE_LINE):]),
                              json.loads(y[len(PROVENANCE_LINE):]))
                except ValueError as exc:
                    self.diff("provenance", f"not JSON: {exc}")
            la = [x for x in la if not x.startswith(PROVENANCE_LINE)]
            lb = [x for x in lb if not x.startswith(PROVENANCE_LINE)]
        self.st.values += 1
        la = [self.norm_str(x) for x in la]
        lb = [self.norm_str(x) for x in lb]
        if la != lb:
            n = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
            self.diff(f"line {n + 1}", f"{(la[n] if n < len(la) else '<end>')[:80]!r} / "
                                       f"{(lb[n] if n < len(lb) else '<end>')[:80]!r}")

    def png(self, pa: Path, pb: Path):
        from matplotlib import image

        self.st.values += 1
        a, b = image.imread(str(pa)), image.imread(str(pb))
        if a.shape != b.shape:
            self.diff("pixels", f"image sizes differ: {a.shape} / {b.shape}")
        elif not np.array_equal(a, b):
            n = int(np.count_nonzero(np.any(a != b, axis=-1) if a.ndim == 3 else a != b))
            self.diff("pixels", f"{n} of {a.shape[0] * a.shape[1]} pixels differ")

    def compare_file(self, rel: str, pa: Path, pb: Path) -> str:
        self.file = rel
        before = len(self.st.differences)
        name = pa.name.lower()
        if pa.read_bytes() == pb.read_bytes():
            self.st.identical_bytes += 1
        if name.endswith(HDF5_SUFFIXES):
            kind = "hdf5"
            try:
                self.hdf5(pa, pb)
            except OSError as exc:
                self.diff("file", f"not readable as HDF5: {exc}")
        elif name.endswith(".json"):
            kind = "json"
            try:
                self.json("", json.loads(pa.read_text()), json.loads(pb.read_text()))
            except ValueError as exc:
                self.diff("file", f"not JSON: {exc}")
        elif name.endswith(".poni"):
            kind = "poni"
            self.text(pa, pb, drop_comments=True)
        elif name.endswith(".png"):
            kind = "png"
            self.png(pa, pb)
        elif name.endswith((".txt", ".tsv", ".csv", ".yaml", ".yml", ".log", ".md")):
            kind = "text"
            self.text(pa, pb, drop_comments=False)
        else:
            kind = "bytes"
            self.st.values += 1
            if pa.read_bytes() != pb.read_bytes():
                self.diff("bytes", "files differ")
        self.st.files[kind] = self.st.files.get(kind, 0) + 1
        return "OK  " if len(self.st.differences) == before else "DIFF"


def list_files(root: Path) -> set[str]:
    # hidden files are temporaries of an interrupted write (nexus.write_atomic's .NAME.*.tmp)
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--subdir", default="results", help="folder of outputs in each run (default: results)")
    ap.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for floats (default 0: exact)")
    ap.add_argument("--atol", type=float, default=0.0, help="absolute tolerance for floats (default 0: exact)")
    ap.add_argument("--quiet", action="store_true", help="print only differences and the summary")
    args = ap.parse_args(argv)

    ra, rb = args.run_a / args.subdir, args.run_b / args.subdir
    for r in (ra, rb):
        if not r.is_dir():
            print(f"compare_outputs: {r} is not a folder", file=sys.stderr)
            return 1
    fa, fb = list_files(ra), list_files(rb)
    st = Stats()
    cmp = Comparer(args.run_a, args.run_b, args.rtol, args.atol, st)
    for rel in sorted(fa - fb):
        st.differences.append((rel, f"only in {args.run_a}"))
    for rel in sorted(fb - fa):
        st.differences.append((rel, f"only in {args.run_b}"))
    common = sorted(fa & fb)
    if not common:
        st.differences.append(("", "no output files to compare"))
    for rel in common:
        verdict = cmp.compare_file(rel, ra / rel, rb / rel)
        if not args.quiet or verdict != "OK  ":
            print(f"  {verdict} {args.subdir}/{rel}")

    tol = "exact" if args.rtol == 0 and args.atol == 0 else f"rtol={args.rtol:g}, atol={args.atol:g}"
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(st.files.items()))
    print(f"== compared {len(common)} files under {args.subdir}/ ({kinds}); "
          f"{st.identical_bytes} byte-identical")
    print(f"== {st.values} values compared ({st.floats} floating-point, {tol}): "
          f"max |a-b| = {st.max_abs:.3g}, max relative = {st.max_rel:.3g}")
    print(f"== ignored as provenance: {st.ignored} items (host, time, paths, argv, wall times); "
          f"{st.digests_differing} digests of time-stamped files differed")
    if st.differences:
        print(f"== {len(st.differences)} DIFFERENCES:")
        for rel, what in st.differences[:200]:
            print(f"   {args.subdir}/{rel}: {what}")
        if len(st.differences) > 200:
            print(f"   ... and {len(st.differences) - 200} more")
        return 1
    print("== outputs equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
