"""docs/outputs.md's list of what the workflow writes is what the tiny experiment's run wrote
(`conftest.tiny_run`): every file of results/, logs/ and benchmarks/ is on a line of the list,
and every line but those only made with a setting (`only with ...`, `only while ...`) names
files that are there."""
from __future__ import annotations

import re

import pytest

from conftest import REPO

# the list's placeholders, and what each stands for in a path
PLACEHOLDERS = {"<name>": r"[^/]+", "<sample>": r"[^/]+", "<entry>": r"[^/]+",
                "<rule>": r"[^/]+", "<time>": r"[^/]+", "<T>": r"[0-9]+(?:\.[0-9]+)?",
                "<kind>": r"(?:transform|masked_transform)", "NNN": r"[0-9]+"}


def documented_outputs() -> list[tuple[str, re.Pattern, bool]]:
    """(path as written, its regular expression, whether only a setting makes it: its
    description says `only`) of every line of the list: `a.nxs|png` is a.nxs and a.png, a
    path ending in `/` or `/...` any file under it."""
    text = (REPO / "docs/outputs.md").read_text(encoding="utf-8")
    section = text[text.index("## What the workflow writes"):]
    block = section[section.index("```\n") + 4:]
    block = block[:block.index("```")]
    entries = []  # [path, description]
    for line in block.splitlines():
        if line.startswith(" "):  # (a description's next line)
            entries[-1][1] += " " + line.strip()
        elif line.strip():
            path, _, description = line.partition("  ")
            entries.append([path, description.strip()])
    lines = []
    for path, description in entries:
        first, *others = path.split("|")
        stem = first.rsplit(".", 1)[0]
        parts = []
        for name in [first] + [f"{stem}.{ext}" for ext in others]:
            regex = re.escape(name)
            for placeholder, meaning in PLACEHOLDERS.items():
                regex = regex.replace(re.escape(placeholder), meaning)
            assert "<" not in regex, f"docs/outputs.md: unknown placeholder in {path}"
            if name.endswith("/..."):
                regex = regex[:-len(re.escape("..."))] + ".+"
            elif name.endswith("/"):
                regex += ".+"
            parts.append(regex)
        lines.append((path, re.compile("|".join(f"(?:{p})" for p in parts)),
                      re.search(r"\bonly\b", description) is not None))
    return lines


@pytest.mark.slow
def test_the_file_list_of_the_outputs_page_is_what_a_run_writes(tiny_run):
    experiment, run, _, _ = tiny_run
    assert run.returncode == 0, run.stderr[-2000:]
    documented = documented_outputs()
    assert len(documented) > 20
    written = sorted(p.relative_to(experiment).as_posix()
                     for top in ("results", "logs", "benchmarks")
                     for p in (experiment / top).rglob("*") if p.is_file())
    undocumented = [f for f in written if not any(r.fullmatch(f) for _, r, _ in documented)]
    assert not undocumented, f"written, not in docs/outputs.md: {undocumented}"
    missing = [path for path, r, optional in documented
               if not optional and not any(r.fullmatch(f) for f in written)]
    assert not missing, f"in docs/outputs.md, not written by the tiny run: {missing}"
