"""The docs site (mkdocs.yml, docs/): it builds strictly, so that a broken link or anchor, or a
page missing from the nav, fails; its configuration reference, generated from the JSON
schemas (docs/gen_config_reference.py), has a section for every top-level key and every
reduction step and names every key.  The builds need mkdocs (the `docs` extra) and skip
without it; the rest needs only PyYAML."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

SCHEMAS = REPO / "src" / "hklflow" / "settings" / "schemas"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference",
                                                  REPO / "docs" / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _schema(name: str) -> dict:
    return yaml.safe_load((SCHEMAS / name).read_text(encoding="utf-8"))


def _key_paths(schema: dict, path: str = "") -> list[str]:
    """Every key of a schema as a dotted path (maps name -> object as NAME); the keys of a
    one-key object (a slice: {h: 0}) are its allowed values, not keys of their own."""
    out = []
    if schema.get("maxProperties") == 1:
        return out
    for key, sub in schema.get("properties", {}).items():
        here = f"{path}.{key}" if path else key
        out.append(here)
        out += _key_paths(sub, here)
        items = sub.get("items")
        if isinstance(items, dict):
            out += _key_paths(items, here)
        extra = sub.get("additionalProperties")
        if isinstance(extra, dict) and "properties" in extra:
            out += _key_paths(extra, f"{here}.NAME")
    return out


def _mkdocs_config() -> dict:
    return yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_config_reference_has_a_section_for_every_top_level_key_and_reduction_step():
    page = _generator().reference_pages()["reference/config.md"]
    headings = set(re.findall(r"^#{2,6} `([^`]+)`", page, flags=re.M))
    schema = _schema("config.schema.yaml")
    for key in schema["properties"]:
        assert key in headings, f"no section for top-level key {key!r}"
    for step in schema["properties"]["reduction"]["properties"]:
        assert f"reduction.{step}" in headings, f"no section for reduction.{step}"
    assert re.search(r"^## `reduction`", page, flags=re.M)
    assert re.search(r"^### `reduction.transform`", page, flags=re.M)


def test_the_references_name_every_key_with_its_default_and_allowed_values():
    pages = _generator().reference_pages()
    for name, page in (("config.schema.yaml", "reference/config.md"),
                       ("scans.schema.yaml", "reference/scans.md")):
        text = pages[page]
        for path in _key_paths(_schema(name)):
            leaf = path.rsplit(".", 1)[-1]
            assert f"`{path}`" in text or f"| `{leaf}` |" in text, f"{page}: no {path}"
    config = pages["reference/config.md"]
    # a default, an enum and a bound, as the schema gives them
    assert re.search(r"\| `subdivide` \| integer or string \| `\"auto\"` \| ≥ 1; ≤ 64; or the text "
                     r"`auto` or `auto_per_block` \|", config)
    assert "| `fingerprint` | string | `\"sampled\"` | one of `\"sampled\"`, `\"full\"` |" in config
    assert "| `wavelength` | number | **required** | > 0 |" in config
    assert "items: {`h` or `k` or `l`: number}" in config  # reduction.transform.slices
    # every | of a description is escaped: each row has as many cells as its table's header
    for text in pages.values():
        cells = None
        for line in text.splitlines():
            if not line.startswith("|"):
                cells = None
                continue
            count = len(re.findall(r"(?<!\\)\|", re.sub(r"`[^`]*`", "``", line)))
            cells = cells or count
            assert count == cells, f"a row with {count - 1} cells, its header {cells - 1}: {line}"


def test_every_page_of_docs_is_in_the_nav():
    nav = set(_nav_pages(_mkdocs_config()["nav"]))
    on_disk = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    generated = {"index.md", "reference/config.md", "reference/scans.md"}
    assert on_disk | generated == nav, (f"not in mkdocs.yml's nav: {sorted(on_disk - nav)}; "
                                        f"in the nav, no such page: {sorted(nav - on_disk - generated)}")


def test_links_to_files_outside_docs_become_their_names_and_schemas_the_reference():
    fix = _generator().site_links
    assert fix("[b](bench/README.md)", "index.md") == "b (`bench/README.md`)"
    assert (fix("[`profiles/slurm/config.yaml`](../profiles/slurm/config.yaml)", "cluster.md")
            == "`profiles/slurm/config.yaml`")
    assert (fix("[r](../src/hklflow/settings/schemas/config.schema.yaml#live)", "live.md")
            == "[r](reference/config.md#live)")
    assert fix("[c](docs/conventions.md#detector)", "index.md") == "[c](conventions.md#detector)"
    assert fix("[m](../map.md)", "reference/config.md") == "[m](../map.md)"
    # a file that does not exist is left to mkdocs, which reports it
    assert fix("[n](../src/nowhere.py)", "steps.md") == "[n](../src/nowhere.py)"
    # code is left alone
    assert fix("```\n[b](bench/README.md)\n```\n", "index.md") == "```\n[b](bench/README.md)\n```\n"


def _build(config_file, site_dir):
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(config_file), "--site-dir", str(site_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    r = _build(REPO / "mkdocs.yml", tmp_path / "site")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARNING" not in r.stderr, r.stderr
    config = (tmp_path / "site" / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    schema = _schema("config.schema.yaml")
    for key in [*schema["properties"],
                *(f"reduction.{s}" for s in schema["properties"]["reduction"]["properties"])]:
        assert f'id="{key}"' in config, f"no section {key} in the built configuration reference"
    assert (tmp_path / "site" / "reference" / "scans" / "index.html").exists()
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "Quick start" in home  # the README is the home page


@pytest.mark.parametrize("breakage", ["link", "anchor", "page not in the nav"])
def test_a_broken_link_or_a_page_missing_from_the_nav_fails_the_build(tmp_path, breakage):
    """The same site from a copy of docs/ with one thing broken: the strict build fails."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    import shutil

    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs, ignore=shutil.ignore_patterns("__pycache__"))
    config = _mkdocs_config()
    config["docs_dir"] = str(docs)
    config["hooks"] = [str(REPO / "docs" / "gen_config_reference.py")]
    if breakage == "link":
        (docs / "steps.md").write_text((docs / "steps.md").read_text() + "\n[x](no-such-page.md)\n")
    elif breakage == "anchor":
        (docs / "steps.md").write_text((docs / "steps.md").read_text()
                                       + "\n[x](conventions.md#no-such-section)\n")
    else:
        (docs / "orphan.md").write_text("# Not in the nav\n")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config, allow_unicode=True))
    r = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert r.returncode != 0, f"the strict build passed with a broken {breakage}"
    assert {"link": "no-such-page.md", "anchor": "no-such-section",
            "page not in the nav": "orphan.md"}[breakage] in r.stderr


def test_the_readme_lists_the_pictures_to_open_first_as_the_console_does():
    """The numbered list of the README's "The results and the pictures" is the console's
    FIRST_PICTURES, in its order."""
    from hklflow.commands.console import FIRST_PICTURES

    text = (REPO / "README.md").read_text()
    section = text[text.index("## The results and the pictures"):]
    listed = re.findall(r"^\d+\. `([^`]+)`", section, flags=re.M)
    assert tuple(listed) == FIRST_PICTURES
