"""The docs site's generated pages, and the mkdocs hook that adds them (mkdocs.yml, `hooks:`).

- `reference/config.md` and `reference/scans.md`: every key of the JSON schemas
  (src/hklflow/settings/schemas/config.schema.yaml, scans.schema.yaml) with its type, default, allowed
  values and description; each section of the config (an object with keys of its own) is a
  heading.  Made from the schemas at every build, so they cannot fall behind.
- `index.md`: the README, the user's guide.

Links between the repository's files work on GitHub; in the site a page only reaches pages.
So the hook rewrites the links of every page (`on_page_markdown`): one to a file of docs/
becomes the page's link, one to a schema the reference page's, one to any other file of the
repository a code span naming it (`bench/README.md`).  A link to a file that does not exist
is left alone, and `mkdocs build --strict` fails on it.

    python docs/gen_config_reference.py OUTDIR     # write the two reference pages to OUTDIR
"""
from __future__ import annotations

import json
import posixpath
import re
import sys
from pathlib import Path

import yaml

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
SCHEMAS = REPO / "src" / "hklflow" / "settings" / "schemas"

# generated page -> (the schema it is made from, its title)
REFERENCE_PAGES = {
    "reference/config.md": ("config.schema.yaml", "Configuration reference (config/config.yaml)"),
    "reference/scans.md": ("scans.schema.yaml", "Scans table reference (config/scans.tsv)"),
}
# generated page -> the repository file it is made from (for its links)
ORIGIN = {"index.md": "README.md",
          **{page: f"src/hklflow/settings/schemas/{schema}" for page, (schema, _) in REFERENCE_PAGES.items()}}


# ---------------------------------------------------------------------------------------------
# The reference pages

def _text(value) -> str:
    """A description as Markdown on one line for a table cell: \\, *, < and | escaped outside
    code spans (a table keeps the | of a code span)."""
    parts = re.split(r"(`[^`]*`)", " ".join(str(value).split()))
    for i in range(0, len(parts), 2):
        parts[i] = (parts[i].replace("\\", "\\\\").replace("*", r"\*").replace("<", "&lt;")
                    .replace("|", r"\|"))
    return "".join(parts)


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def _code(value) -> str:
    return f"`{_json(value)}`"


def _types(schema: dict) -> list[str]:
    t = schema.get("type")
    if t is None and "enum" in schema:
        kinds = {"boolean" if isinstance(v, bool) else "integer" if isinstance(v, int)
                 else "number" if isinstance(v, float) else "null" if v is None else "string"
                 for v in schema["enum"]}
        t = sorted(kinds)
    if t is None and "const" in schema:
        t = ["string" if isinstance(schema["const"], str) else "number"]
    return [t] if isinstance(t, str) else list(t or [])


def _type(schema: dict) -> str:
    """The type as a reader says it: `number`, `array of 3 numbers`, `object: name -> ...`."""
    names = []
    for t in _types(schema):
        if t == "array":
            items = schema.get("items", {})
            lo, hi = schema.get("minItems"), schema.get("maxItems")
            count = f"{lo} " if lo is not None and lo == hi else ""
            inner = _type(items) if items else "values"
            if "properties" in items:
                inner = "objects"
            elif inner.startswith("array"):
                inner = "arrays" + inner[len("array"):]
            elif not inner.startswith("object"):
                inner = " or ".join(f"{w}s" if w != "null" else w for w in inner.split(" or "))
            names.append(f"array of {count}{inner}")
        elif t == "object" and isinstance(schema.get("additionalProperties"), dict) \
                and "properties" not in schema:
            names.append(f"object: name → {_type(schema['additionalProperties'])}")
        else:
            names.append(t)
    return " or ".join(names)


def _bounds(schema: dict) -> list[str]:
    b = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                      ("exclusiveMaximum", "<")):
        if key in schema:
            b.append(f"{sign} {_json(schema[key])}")
    return b


def _allowed(schema: dict) -> str:
    """Allowed values: the enum, bounds, patterns, item rules."""
    a = []
    if "enum" in schema:
        a.append("one of " + ", ".join(_code(v) for v in schema["enum"]))
    if "const" in schema:
        a.append(f"only {_code(schema['const'])}")
    a += _bounds(schema)
    if "not" in schema and "const" in schema["not"]:
        a.append(f"not {_code(schema['not']['const'])}")
    if "pattern" in schema:
        literal = re.fullmatch(r"\^\(?([A-Za-z_|]+)\)?\$", schema["pattern"])
        if literal and "string" in _types(schema) and len(_types(schema)) > 1:
            a.append("or the text " + " or ".join(f"`{w}`" for w in literal.group(1).split("|")))
        else:
            a.append(f"matches `{schema['pattern']}`")
    if "minLength" in schema:
        a.append("not empty" if schema["minLength"] == 1 else f"at least {schema['minLength']} characters")
    items = schema.get("items")
    if isinstance(items, dict):
        if "enum" in items:
            a.append("items: " + ", ".join(_code(v) for v in items["enum"]))
        if _bounds(items):
            a.append("items " + ", ".join(_bounds(items)))
        if "properties" in items:
            keys = " or ".join(f"`{k}`" for k in items["properties"])
            one = items.get("minProperties") == 1 and items.get("maxProperties") == 1
            a.append(f"items: {{{keys}: number}}" if one else f"items with keys {keys}")
    if schema.get("minItems") is not None and schema.get("minItems") != schema.get("maxItems"):
        a.append(f"at least {schema['minItems']} item(s)")
    if schema.get("uniqueItems"):
        a.append("no repeats")
    if "properties" in schema and schema.get("minProperties") == 1 == schema.get("maxProperties"):
        a.append("one key of " + ", ".join(f"`{k}`" for k in schema["properties"]))
    return "; ".join(a)


def _default(schema: dict, required: bool) -> str:
    if required:
        return "**required**"
    if "default" in schema:
        return _code(schema["default"])
    return "–"


def _has_keys(schema: dict) -> bool:
    """An object with keys of its own, more than the one-key objects of a slice."""
    return "properties" in schema and schema.get("maxProperties") != 1


def _is_section(schema: dict) -> bool:
    """A heading of its own: an object with keys of its own, a map name -> such an object, or
    a list of such objects."""
    extra, items = schema.get("additionalProperties"), schema.get("items")
    return (_has_keys(schema) or (isinstance(extra, dict) and _has_keys(extra))
            or (isinstance(items, dict) and _has_keys(items)) or _map_of_lists(schema))


def _map_of_lists(schema: dict) -> bool:
    """A map name -> a list of objects with keys of their own (output.cuts)."""
    extra = schema.get("additionalProperties")
    return isinstance(extra, dict) and isinstance(extra.get("items"), dict) \
        and _has_keys(extra["items"])


def _section(out: list[str], path: str, schema: dict, level: int, required: bool) -> None:
    heading = "#" * min(level, 6)
    out.append(f"{heading} `{path}` {{#{path}}}\n")
    facts = [f"Type: {_type(schema) or 'object'}"]
    if required:
        facts.append("required")
    elif "default" in schema:
        facts.append(f"default {_code(schema['default'])}")
    if schema.get("minProperties"):
        facts.append(f"at least {schema['minProperties']} entry")
    names = schema.get("propertyNames")
    if names:
        rule = f"names match `{names['pattern']}`" if "pattern" in names else "names"
        if "not" in names and "const" in names["not"]:
            rule += f", not {_code(names['not']['const'])}"
        facts.append(rule)
    out.append("*" + "; ".join(facts) + ".*\n")
    if schema.get("description"):
        out.append(_text(schema["description"]) + "\n")
    if _has_keys(schema):
        _keys(out, path, schema, level)
    elif isinstance(schema.get("items"), dict) and _has_keys(schema["items"]):
        out.append("Each item is an object with the keys below.\n")
        _keys(out, path, schema["items"], level)
    elif _map_of_lists(schema):
        out.append(f"Each `{path}.NAME` is a list of objects with the keys below.\n")
        _keys(out, f"{path}.NAME", schema["additionalProperties"]["items"], level)
    else:  # a map: name -> object
        out.append(f"Each `{path}.NAME` is an object with the keys below.\n")
        _keys(out, f"{path}.NAME", schema["additionalProperties"], level)


def _keys(out: list[str], path: str, schema: dict, level: int, word: str = "key") -> None:
    """The leaf keys of an object as one table, then its sections as headings one level down."""
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    leaves = [(k, s) for k, s in props.items() if not _is_section(s)]
    sections = [(k, s) for k, s in props.items() if _is_section(s)]
    if leaves:
        out.append(f"| {word} | type | default | allowed | description |")
        out.append("|---|---|---|---|---|")
        for key, s in leaves:
            out.append(f"| `{key}` | {_type(s)} | {_default(s, key in required)} | "
                       f"{_allowed(s) or '–'} | {_text(s.get('description', ''))} |")
        out.append("")
    for key, s in sections:
        _section(out, f"{path}.{key}" if path else key, s, level + 1, key in required)


def render(schema: dict, title: str, source: str, columns: bool = False) -> str:
    """The reference page of a schema: every top-level key a heading (## key), nested sections
    headings one level down (its id the key's path: #reduction.transform), their plain keys a
    table; with `columns` (the scans table's
    row), the top-level keys are one table of columns."""
    out = [f"# {title}\n",
           f"Generated from `{source}` when the site is built (docs/gen_config_reference.py): "
           "every key with its type, default, allowed values and description. A default of "
           "**required** means the key must be given; – means none (the key may be left out).\n"]
    if schema.get("description"):
        out.append(_text(schema["description"]) + "\n")
    if columns:
        out.append("## Columns\n")
        _keys(out, "", schema, 2, word="column")
        return "\n".join(out)
    required = set(schema.get("required", []))
    for key, s in schema.get("properties", {}).items():
        if _is_section(s):
            _section(out, key, s, 2, key in required)
        else:
            out.append(f"## `{key}` {{#{key}}}\n")
            out.append("| type | default | allowed | description |")
            out.append("|---|---|---|---|")
            out.append(f"| {_type(s)} | {_default(s, key in required)} | {_allowed(s) or '–'} | "
                       f"{_text(s.get('description', ''))} |\n")
    return "\n".join(out)


def reference_pages() -> dict[str, str]:
    """{page: Markdown} of the reference pages, from the schemas as they are now."""
    pages = {}
    for page, (name, title) in REFERENCE_PAGES.items():
        schema = yaml.safe_load((SCHEMAS / name).read_text(encoding="utf-8"))
        pages[page] = render(schema, title, f"src/hklflow/settings/schemas/{name}",
                             columns=name == "scans.schema.yaml")
    return pages


# ---------------------------------------------------------------------------------------------
# Links: the repository's, made the site's

_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^()\s]+)\)")
_SCHEMA_PAGES = {f"src/hklflow/settings/schemas/{schema}": page for page, (schema, _) in REFERENCE_PAGES.items()}


def site_links(markdown: str, page: str) -> str:
    """markdown of docs page `page` (its path under docs/) with its links made the site's."""
    origin = ORIGIN.get(page, f"docs/{page}")
    here = posixpath.dirname(page)

    def fix(m: re.Match) -> str:
        bang, text, target = m.groups()
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return m.group(0)
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(origin), path))
        if repo_path in _SCHEMA_PAGES:
            new = posixpath.relpath(_SCHEMA_PAGES[repo_path], here or ".")
            return f"{bang}[{text}]({new}{'#' + anchor if anchor else ''})"
        if repo_path.startswith("docs/"):
            new = posixpath.relpath(repo_path[len("docs/"):], here or ".")
            return f"{bang}[{text}]({new}{'#' + anchor if anchor else ''})"
        if bang or repo_path.startswith("..") or not (REPO / repo_path).exists():
            return m.group(0)  # left for mkdocs to report
        if text.strip("`") in (path, repo_path):
            return f"`{repo_path}`"
        return f"{text} (`{repo_path}`)"

    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        out.append(line if fenced else _LINK.sub(fix, line))
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# The mkdocs hook

def on_files(files, config):
    """Add the generated pages: the reference pages and the guide (README.md) as index.md."""
    from mkdocs.structure.files import File

    pages = dict(reference_pages())
    pages["index.md"] = (REPO / "README.md").read_text(encoding="utf-8")
    for page, text in pages.items():
        old = files.get_file_from_path(page)
        if old is not None:
            files.remove(old)
        files.append(File.generated(config, page, content=text))
    return files


def on_page_markdown(markdown, page, config, files):
    return site_links(markdown, page.file.src_uri)


def on_serve(server, config, builder):
    """`mkdocs serve` rebuilds when the README or a schema changes too."""
    server.watch(str(REPO / "README.md"))
    server.watch(str(SCHEMAS))
    return server


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0])
    for page, text in reference_pages().items():
        path = out / page
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
