"""The shape of the import graph of src/hklflow, read from the source (no import): no cycle,
and no arrow that climbs a floor.  Floors, bottom up: the codec (bitshuffle-LZ4 chunks) and
the errors; the models and file modules (files/); the frame reader (frames) and the domain
algorithms; the steps and the command line."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "hklflow").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every hklflow module each module imports, at module level or inside a function (a
    function-level import is a dependency too)."""
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                subs = [f"{prefix}.{a.name}" for a in node.names if f"{prefix}.{a.name}" in mods]
                found = subs if len(subs) == len(node.names) else [prefix, *subs]
            else:
                continue
            for target in found:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target not in (name, "hklflow"):
                    targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


GRAPH = imports(modules())

# The floors, top to bottom (docs/map.md says why each room exists).  A module may import
# its own floor and the floors below it, never one above.
FLOORS = (
    ("commands", ("hklflow.commands", "hklflow.live", "hklflow.simulation", "hklflow.__main__")),
    ("planning", ("hklflow.planning",)),
    ("steps", ("hklflow.steps",)),
    ("pictures", ("hklflow.pictures",)),
    ("algorithms", ("hklflow.algorithms",)),
    ("raw data", ("hklflow.raw",)),
    ("files", ("hklflow.files",)),
    ("model and settings", ("hklflow.model", "hklflow.settings")),
    ("codec and base", ("hklflow.codec", "hklflow.base")),
)


def floor_of(module: str) -> int | None:
    for i, (_, packages) in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return i
    return None


def climbing_arrows(graph) -> list[tuple[str, str]]:
    return sorted((m, t) for m, targets in graph.items() for t in targets
                  if floor_of(m) is not None and floor_of(t) is not None
                  and floor_of(t) < floor_of(m))


def test_the_import_graph_has_no_cycle():
    assert cycles(GRAPH) == []


def test_every_module_is_on_a_floor():
    assert [m for m in GRAPH if m != "hklflow" and floor_of(m) is None] == []


def test_no_import_climbs_a_floor():
    assert climbing_arrows(GRAPH) == []


def test_the_checks_see_an_arrow_a_cycle_and_a_climb():
    """The graph is read right: a known arrow is there, a made-up loop is a cycle, and a
    made-up arrow from the files up to the steps climbs."""
    assert "hklflow.algorithms.transform.pixels" in GRAPH["hklflow.algorithms.transform.driver"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert climbing_arrows({"hklflow.files.scan": {"hklflow.steps.ingest_scan"},
                            "hklflow.steps.ingest_scan": {"hklflow.files.scan"}}) == [
        ("hklflow.files.scan", "hklflow.steps.ingest_scan")]


def numba_importers() -> set[str]:
    """The modules that import numba (at module level or in a function)."""
    found = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "numba" or n.startswith("numba.") for n in names):
                found.add(name)
    return found


def is_kernel_module(module: str) -> bool:
    """The compiled loops of a concern live in its `kernels` module (or `*_kernels`,
    `*_kernel`), apart from the Python that drives them, so that reading the driver's code or
    a file needs no numba.  Two exceptions by nature: the compiled codec path (chosen after a
    self-test against the library path, codec.choice) and the question which CPU numba
    compiles for (base.numba_target, which imports numba only when asked)."""
    last = module.rpartition(".")[2]
    return last.endswith(("kernels", "_kernel")) or module in (
        "hklflow.codec.compiled", "hklflow.base.numba_target")


def test_numba_is_imported_only_by_kernel_modules():
    assert sorted(m for m in numba_importers() if not is_kernel_module(m)) == []
    assert "hklflow.algorithms.transform.kernels" in numba_importers()  # (the scan is read right)


def test_reading_files_and_planning_load_no_numba():
    """What a light step, the Snakefile and the command line import loads no numba (about a
    second of every job's start): the file modules, the model and settings, planning, the
    raw-data readers and the picture helpers."""
    light = sorted(m for m in GRAPH if m.startswith((
        "hklflow.files.", "hklflow.model.", "hklflow.settings.", "hklflow.planning.",
        "hklflow.raw.", "hklflow.commands.cli")) and not is_kernel_module(m))
    code = ("import importlib, sys\n"
            f"for m in {light!r}:\n"
            "    importlib.import_module(m)\n"
            "    assert 'numba' not in sys.modules, m\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
