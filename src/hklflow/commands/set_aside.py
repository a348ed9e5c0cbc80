"""Scans whose raw data do not exist yet, set aside by `hklflow run` so that the others
reduce (issue 70).

Plain `snakemake` refuses such a row while it plans, naming it (workflow/rules/common.smk,
raw_files), and so stops every scan.  `hklflow run` looks first: a row whose `data` match
no file (or, for frame files, fewer than its `nframes`) is named on one line and left out of
a copy of the scans table, together with the rows that cannot be reduced without it (the
temperatures whose parent, the orientation they start from, has no data).  Snakemake then
runs with ``--configfile <the experiment's config> ... <override>``, the override naming
that copy as `scans_table` (and, where a further parent has no data, the sample's
`other_parents` without it: config.py refuses a parent without scans).  Both files are
named by their content's digest, so that a run going on (whose cluster jobs read them
again) never sees them change.  When every row has data, nothing changes: no override, the
same jobs, the same settings; nor when none has (a wrong path or an absent mount, more
likely than scans to come: Snakemake names the first row and the directory).

A row without data whose scan was ingested by an earlier run is not to come but gone (a
typo in its path, a file moved away): going on would replace its temperature's finished
results with poorer ones, so `hklflow run` stops, naming it, unless told to go on
(--set-aside-gone).  The rows set aside are listed beside the copy (SET_ASIDE_ROWS), from
where the planning passes them to the jobs that make results without them (their notes)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..base.atomic import write_text_atomically
from ..files import outputs
from ..planning.config import (SET_ASIDE_DIR, SET_ASIDE_ROWS, ConfigError, load_settings,
                               read_scans_table, scans_table_lines, temperature_label)
from ..raw.rawfiles import is_hdf5_path, matching_files


@dataclass(frozen=True)
class SetAsideRow:
    row: int  # 1-based data row of the scans table, as Snakemake's messages count them
    scan_id: str
    reason: str

    def line(self, table: str) -> str:
        return f"set aside: {table} row {self.row} ({self.scan_id}): {self.reason}"


@dataclass
class SetAside:
    """What `hklflow run` leaves out of this run: the rows, each with its reason; the text of
    the scans table without them; the config the override sets (scans_table, and a sample's
    other_parents where one is left without data); `blocked`: why nothing can run (a
    sample with no row left: the config names it, and an override cannot take it out)."""

    table: str
    rows: list
    kept_lines: list = field(default_factory=list)
    override: dict = field(default_factory=dict)
    blocked: str = ""
    gone: dict = field(default_factory=dict)  # row -> what an earlier run made of it

    def gone_lines(self) -> list[str]:
        """Why `hklflow run` stops: each row reduced before whose data are gone."""
        out = [f"gone: {self.table} row {r.row} ({r.scan_id}): {r.reason.removesuffix(' yet')}, "
               f"but an earlier run reduced it: {self.gone[r.row]}"
               for r in self.rows if r.row in self.gone]
        out.append(f"hklflow run: {len(self.gone)} row(s) of {self.table} reduced before have "
                   "no data now (a typo in 'data', a file moved away?): nothing runs. Put the "
                   "data back or correct the row, or run again with --set-aside-gone to "
                   "make those results again without them")
        return out

    def lines(self) -> list[str]:
        out = [r.line(self.table) for r in self.rows]
        if self.blocked:
            out.append(f"hklflow run: {self.blocked}")
        else:
            out.append(f"{len(self.rows)} row(s) of {self.table} set aside until their data "
                       f"exist; the other {len(self.kept_lines) - 1} reduce (run again to add "
                       "them)")
        return out


def missing_data(row: dict, experiment: Path) -> str:
    """Why a scans-table row has no data to reduce yet ('' when it has): its `data` (an
    HDF5 file, a glob, an EIGER master) match no file, or fewer frame files than
    `nframes` (CBF frames still arriving)."""
    files = matching_files(row["data"], experiment)
    if not files:
        return f"no file matches {row['data']!r} yet"
    if not is_hdf5_path(files[0]) and len(files) < row["nframes"]:
        return (f"{row['data']!r} matches {len(files)} frame files so far, the row's nframes "
                f"says {row['nframes']}")
    return ""


def _scan_id(row: dict) -> str:
    return f"{row['sample']}/{temperature_label(row['temperature'])}/{row['entry']}"


def earlier_results(row: dict, experiment: Path, remade: bool) -> str:
    """What an earlier run made of a row and going on without it would change ('' when its
    scan was never ingested): its scan file and its temperature's results, made again from
    the other rows (remade) or left out of the sample's series and tables."""
    at = dict(sample=row["sample"], temperature=temperature_label(row["temperature"]))
    scan = outputs.fill(outputs.SCAN, entry=row["entry"], **at)
    if not (experiment / scan).is_file():
        return ""
    folder = outputs.fill(outputs.TEMPERATURE, **at)
    if not remade:
        return f"{scan} exists, and the sample's series and tables would be made without {folder}/"
    made = sorted(p.name for p in (experiment / folder).glob("*.nxs"))
    return (f"{scan} exists, and {folder}/ {', '.join(made)} would be made again without it"
            if made else f"{scan} exists")


def find_set_aside(experiment: Path, config_files) -> SetAside | None:
    """The rows of the experiment's scans table to set aside, or None when every row has
    its data, or none has, or the config or table is invalid (Snakemake then says so as
    usual)."""
    try:
        settings = load_settings(config_files)
        table = settings.raw["scans_table"]
        rows = read_scans_table(table, settings.offset_names, experiment)
        lines = scans_table_lines(table, experiment)
    except ConfigError:
        return None
    reasons = {}
    for i, row in enumerate(rows, start=1):
        if row.get("planned_frames", 0) > row["nframes"]:
            continue  # a scan hklflow watch follows: its landed frames stand for its data
        why = missing_data(row, experiment)
        if why:
            reasons[i] = why
    without_data = sorted(reasons)
    if not reasons or len(reasons) == len(rows):
        # none has data: a wrong path or an absent mount rather than scans to come; Snakemake
        # names the first row and the experiment directory, as plain snakemake does
        return None
    samples = settings.samples
    in_table = {(r["sample"], temperature_label(r["temperature"])) for r in rows}

    def parent_without_data(row, with_data) -> str:
        """The parent temperature a row's orientation needs that has no data left (one
        that the table never had is the config's error, left to Snakemake to name)."""
        spec = samples.get(row["sample"])
        if spec is None:
            return ""
        for label in (spec.parent_for(row["temperature"]), spec.parent_label):
            if (row["sample"], label) in in_table and (row["sample"], label) not in with_data:
                return label
        return ""

    while True:  # a temperature set aside may be the parent of others
        with_data = {(r["sample"], temperature_label(r["temperature"]))
                     for i, r in enumerate(rows, start=1) if i not in reasons}
        more = {i: f"its parent temperature {label} has no data yet (its orientation starts "
                   "from the parent's)"
                for i, r in enumerate(rows, start=1) if i not in reasons
                for label in [parent_without_data(r, with_data)] if label}
        if not more:
            break
        reasons.update(more)
    gone = {}
    for i in without_data:  # (the rows set aside for their parent go when it goes)
        row = rows[i - 1]
        remade = (row["sample"], temperature_label(row["temperature"])) in with_data
        made = earlier_results(row, experiment, remade)
        if made:
            gone[i] = made
    found = SetAside(table, [SetAsideRow(i, _scan_id(rows[i - 1]), reasons[i])
                             for i in sorted(reasons)],
                     [lines[0]] + [lines[i] for i in range(1, len(lines)) if i not in reasons],
                     gone=gone)
    if not with_data:
        found.blocked = ("no scan can reduce yet (every row waits for its data or its parent "
                         "temperature's): nothing runs")
        return found
    found.override = {"scans_table": None}  # (set when written: the file's name)
    other_parents = {}
    for name, spec in samples.items():
        kept = [o for o in settings.raw["samples"][name]["other_parents"]
                if (name, temperature_label(o["temperature"])) not in in_table
                or (name, temperature_label(o["temperature"])) in with_data]
        if len(kept) < len(spec.other_parents):
            other_parents[name] = {"other_parents": kept}
    if other_parents:
        found.override["samples"] = other_parents
    return found


def write_set_aside(experiment: Path, found: SetAside) -> Path:
    """Write the scans table without the rows set aside and the override config naming it,
    in a folder named by their content (never rewritten while a run may read them); returns
    the override config's path."""
    table_text = (f"# written by hklflow run: {found.table} without the rows whose data do "
                  f"not exist yet (rows {', '.join(str(r.row) for r in found.rows)})\n"
                  + "\n".join(found.kept_lines) + "\n")
    # (the jobs' notes: hklflow.planning.config.set_aside_rows)
    rows_text = json.dumps([{"sample": r.scan_id.split("/")[0],
                             "temperature": r.scan_id.split("/")[1], "line": r.line(found.table)}
                            for r in found.rows], indent=1) + "\n"
    digest = hashlib.sha256(table_text.encode() + rows_text.encode()
                            + repr(sorted(found.override.get("samples", {}).items())).encode())
    folder = Path(SET_ASIDE_DIR) / digest.hexdigest()[:16]
    override = dict(found.override, scans_table=str(folder / "scans.tsv"))
    config_text = ("# written by hklflow run: the experiment's config with the scans table "
                   "without the rows set aside\n" + yaml.safe_dump(override, sort_keys=False))
    for name, text in (("scans.tsv", table_text), ("config.yaml", config_text),
                       (SET_ASIDE_ROWS, rows_text)):
        path = experiment / folder / name
        if not path.is_file() or path.read_text() != text:
            write_text_atomically(path, text)
    return experiment / folder / "config.yaml"


def configfile_arguments(args) -> tuple[list[str], list[str]]:
    """The files of Snakemake's --configfile options among `args` (as Snakemake takes them:
    every value up to the next option), and the other arguments."""
    files, rest, taking = [], [], False
    for a in args:
        if a.startswith("-"):
            taking = a in ("--configfile", "--configfiles")
            if a.startswith(("--configfile=", "--configfiles=")):
                files.append(a.split("=", 1)[1])
            elif not taking:
                rest.append(a)
        elif taking:
            files.append(a)
        else:
            rest.append(a)
    return files, rest


def snakemake_arguments(experiment: Path, args: list[str],
                        gone_allowed: bool = False) -> tuple[list[str], list[str], int]:
    """Snakemake's arguments for `hklflow run` with the rows set aside that have no data yet:
    (arguments, lines to show, status: non-zero when nothing can run, or when a row reduced
    before has lost its data and `gone_allowed` is false).  The arguments are `args`
    themselves when every row has data."""
    own_config = str(experiment / "config" / "config.yaml")
    user_files, rest = configfile_arguments(args)
    found = find_set_aside(experiment, [own_config, *user_files])
    if found is None:
        return list(args), [], 0
    if found.gone and not gone_allowed:
        return list(args), found.gone_lines(), 1
    if found.blocked:
        return list(args), found.lines(), 1
    override = write_set_aside(experiment, found)
    return (["--configfile", own_config, *user_files, str(override), *rest], found.lines(), 0)
