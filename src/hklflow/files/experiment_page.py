"""The experiment's page (rule experiment_page): ``results/report.html``, one plain HTML file
with its style inline and no script, which a browser at the beamline opens as it is.  The
step (hklflow.steps.experiment_page) gathers what the files say into sections of paragraphs,
tables and pictures; this module only writes them.  Pictures are linked by their path
relative to the page, each a link to itself at full size, so that the page and results/
move together.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..base.atomic import write_text_atomically

STYLE = """body{font-family:sans-serif;margin:1em auto;max-width:78em;padding:0 1em}
h1{font-size:1.5em} h2{font-size:1.25em;border-bottom:1px solid #bbb;margin-top:1.6em}
h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;margin:.3em 0 1em;font-size:.9em}
th,td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th{background:#f2f2f2} td:first-child,th:first-child{text-align:left}
caption{text-align:left;font-weight:bold;padding:2px 0}
.wrap td{white-space:normal;text-align:left}
.pictures{display:flex;flex-wrap:wrap;gap:10px}
.pictures figure{margin:0;max-width:24em} .pictures img{max-width:100%;border:1px solid #ccc}
figcaption{font-size:.8em;word-break:break-all}
.warn{color:#8a5300} .bad{color:#a00000} .note{color:#555;font-size:.9em}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:.85em}
.scroll{overflow-x:auto}"""


@dataclass
class Table:
    """A table: its header, rows of cells (numbers are formatted by the step), a caption."""

    header: list
    rows: list
    caption: str = ""
    wrap: bool = False  # cells of text that may wrap (the warnings)


@dataclass
class Pictures:
    """PNG files, linked relative to the page, each opening at full size."""

    paths: list


@dataclass
class Text:
    """A paragraph; kind: '' (plain), 'note', 'warn' or 'bad' (its colour); pre: as written."""

    text: str
    kind: str = ""
    pre: bool = False


@dataclass
class Link:
    """A table cell that links a file (a log) relative to the page."""

    path: str


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    level: int = 2


def _cell(value) -> str:
    return html.escape("" if value is None else str(value))


def _href(path, base: Path) -> str:
    return html.escape(Path(os.path.relpath(path, base)).as_posix(), quote=True)


def _td(value, base: Path) -> str:
    if isinstance(value, Link):
        return f"<td><a href='{_href(value.path, base)}'>{_cell(value.path)}</a></td>"
    return f"<td>{_cell(value)}</td>"


def _block(block, base: Path) -> str:
    if isinstance(block, Section):
        return _section(block, base)
    if isinstance(block, Table):
        caption = f"<caption>{_cell(block.caption)}</caption>" if block.caption else ""
        head = "".join(f"<th>{_cell(h)}</th>" for h in block.header)
        rows = "".join("<tr>" + "".join(_td(c, base) for c in row) + "</tr>"
                       for row in block.rows)
        cls = " class='wrap'" if block.wrap else ""
        return (f"<div class='scroll'><table{cls}>{caption}<thead><tr>{head}</tr></thead>"
                f"<tbody>{rows}</tbody></table></div>")
    if isinstance(block, Pictures):
        figures = []
        for p in block.paths:
            rel = _href(p, base)
            figures.append(f"<figure><a href='{rel}'><img src='{rel}' alt='{rel}' "
                           f"loading='lazy'></a><figcaption>{html.escape(str(p))}"
                           f"</figcaption></figure>")
        return f"<div class='pictures'>{''.join(figures)}</div>" if figures else ""
    if isinstance(block, Text):
        cls = f" class='{block.kind}'" if block.kind else ""
        if block.pre:
            return f"<pre{cls}>{_cell(block.text)}</pre>"
        return f"<p{cls}>{_cell(block.text)}</p>"
    raise TypeError(f"not a block of the page: {block!r}")


def _section(section: Section, base: Path) -> str:
    level = min(max(section.level, 2), 4)
    body = "\n".join(_block(b, base) for b in section.blocks)
    return f"<section><h{level}>{_cell(section.title)}</h{level}>\n{body}</section>"


def page_html(title: str, sections: list, base, subtitle: str = "") -> str:
    """The page's text; `base`: the folder the page lies in (pictures are linked from it)."""
    base = Path(os.path.abspath(base))
    body = "\n".join(_section(s, base) for s in sections)
    sub = f"<p class='note'>{_cell(subtitle)}</p>" if subtitle else ""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_cell(title)}</title>\n<style>{STYLE}</style></head>\n"
            f"<body><h1>{_cell(title)}</h1>{sub}\n{body}\n</body></html>\n")


def write_experiment_page(path, title: str, sections: list, subtitle: str = "") -> Path:
    """The page at `path`, atomically (a browser never sees half of it)."""
    path = Path(path)
    return write_text_atomically(path, page_html(title, sections, path.parent, subtitle))
