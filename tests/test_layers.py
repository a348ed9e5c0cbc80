"""The shape of the import graph of src/hklflow, read from the source (no import): no cycle,
and no arrow that climbs a floor.  Floors, bottom up: the codec (bitshuffle-LZ4 chunks) and
the errors; the models and file modules (files/); the frame reader (frames) and the domain
algorithms; the steps and the command line."""
from __future__ import annotations

import ast
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


def test_the_import_graph_has_no_cycle():
    assert cycles(GRAPH) == []


def _reached(prefixes) -> dict[str, set[str]]:
    return {m: t for m, t in GRAPH.items() if m.startswith(prefixes)}


def test_the_codec_imports_only_itself_and_the_errors():
    for module, targets in _reached(("hklflow.codec",)).items():
        outside = {t for t in targets if not t.startswith("hklflow.codec")}
        assert outside <= {"hklflow.base.errors", "hklflow.base.numba_target"}, module


def test_file_modules_do_not_import_the_frame_reader_the_algorithms_or_the_steps():
    above = ("hklflow.raw.frames", "hklflow.algorithms.transform", "hklflow.algorithms.peaks.spotfinding", "hklflow.steps",
             "hklflow.commands.cli", "hklflow.pictures.plots", "hklflow.algorithms.orientation.indexing", "hklflow.algorithms.orientation.refinement",
             "hklflow.algorithms.orientation.orient", "hklflow.algorithms.pdf", "hklflow.algorithms.merge.volumes")
    for module, targets in _reached(("hklflow.files",)).items():
        assert not {t for t in targets if t.startswith(above)}, module


def test_domain_modules_do_not_import_the_frame_reader_or_the_steps():
    domain = ("hklflow.algorithms.masking", "hklflow.algorithms.orientation.indexing", "hklflow.algorithms.orientation.refinement", "hklflow.algorithms.orientation.orient",
              "hklflow.algorithms.merge.symmetry", "hklflow.algorithms.merge.volumes", "hklflow.algorithms.pdf", "hklflow.model.grid",
              "hklflow.model.geometry", "hklflow.model.crystal", "hklflow.algorithms.calibration")
    for module, targets in _reached(domain).items():
        assert not {t for t in targets if t.startswith(("hklflow.raw.frames", "hklflow.steps",
                                                         "hklflow.commands.cli"))}, module


def test_the_checks_see_an_arrow_and_a_cycle():
    """The graph is read right: a known arrow is there, and a made-up loop is a cycle."""
    assert "hklflow.algorithms.transform.pixels" in GRAPH["hklflow.algorithms.transform.driver"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
