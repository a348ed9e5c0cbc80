"""Where every scan stands while an experiment is watched: one screen for `hklflow status`
(``--follow`` refreshes it) and results/status.html, which refreshes itself in a browser at
the beamline.  Both are made from live/state.json alone."""
from __future__ import annotations

import argparse
import html
import time
from pathlib import Path

from ..base.atomic import write_text_atomically
from ..files import outputs
from ..planning.config import ConfigError, load_settings
from .state import STATE_FILE, LiveState

STATUS_HTML = outputs.STATUS_HTML
REFRESH_SECONDS = 5
WAITING_FOR_LOCK = "waiting for another Snakemake run to end (it holds the lock): "


def stage(scan, now: float, stall_seconds: float, run: dict | None = None) -> str:
    """What a scan's results are, or what is being made of it while the run `run` (the
    state's last_run) goes: its frames, and the jobs running now of the scan or its
    temperature."""
    if scan.problem:
        return "problem"
    if scan.set_aside:
        return "set aside"
    n = (run or {}).get("frames", {}).get(scan.id) if run and not run.get("end") else None
    if n:
        if scan.complete and n == scan.frames_when_complete:
            going = "final run going"
        elif not scan.results:
            going = "reducing its first block"
        else:
            going = f"preview run going ({n} frames)"
        temperature = scan.id.rpartition("/")[0]
        rules = sorted({rule for rule, of in run.get("jobs", []) if of in (scan.id, temperature)})
        return going + (f": {', '.join(rules)}" if rules else "")
    if scan.error:
        return "failed"
    if scan.complete and scan.results == scan.frames_when_complete:
        return "final" if scan.landed >= scan.planned else "final (finished short)"
    if scan.complete:
        return "final run pending"
    if scan.stalled(now, stall_seconds):
        return "stalled"
    if scan.results:
        return "preview"
    if scan.landed:
        return "waiting for its first block"
    return "not started"


def lag_seconds(scan, now: float) -> float:
    """How long the oldest landed frame that is not yet in the results has waited (0: the
    results hold every frame landed)."""
    if scan.results >= scan.landed:
        return 0.0
    t = scan.landed_at(scan.results + 1)
    return max(0.0, now - t) if t is not None else 0.0


def shown_lag(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


# the stages after which a scan holds up its temperature no more (merged, or never merged)
SETTLED = ("final", "final (finished short)", "problem", "set aside")


def rows(state: LiveState, live: dict, now: float) -> list[dict]:
    """A row per scan; a final scan whose temperature still waits for others (its merged
    volumes and PDFs are previews until they are final) says for which."""
    stall = float(live.get("stall_seconds", 300))
    out = [{"scan": s.id, "landed": s.landed, "planned": s.planned, "reduced": s.reduced,
            "results": s.results, "stage": stage(s, now, stall, state.last_run),
            "lag": lag_seconds(s, now), "message": s.problem or s.set_aside or s.error or ""}
           for s in state.scans.values()]
    for r in out:
        if r["stage"] in ("final", "final (finished short)"):
            temperature = r["scan"].rpartition("/")[0]
            waits = [o["scan"].rpartition("/")[2] for o in out
                     if o["scan"].rpartition("/")[0] == temperature and o["stage"] not in SETTLED]
            if waits:
                r["stage"] += f"; {temperature} waits for {', '.join(waits)}"
    return out


def screen(state: LiveState, live: dict, table_error: str | None = None,
           now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines = [f"{'scan':<28} {'landed':>13} {'reduced':>8} {'in results':>10}  "
             f"{'lag':>7}  stage"]
    for r in rows(state, live, now):
        lines.append(f"{r['scan']:<28} {r['landed']:>6}/{r['planned']:<6} {r['reduced']:>8} "
                     f"{r['results']:>10}  {shown_lag(r['lag']):>7}  {r['stage']}")
        if r["message"]:
            lines.append(f"    {r['message']}")
    run = state.last_run
    if run:
        if run.get("end"):
            lines.append(f"run {run['number']}: {'ok' if run['rc'] == 0 else 'FAILED'} in "
                         f"{run['end'] - run['start']:.0f} s, {now - run['end']:.0f} s ago "
                         f"(log: {run.get('log', '')})")
        else:
            lines.append(f"run {run['number']}: running for {now - run['start']:.0f} s")
    if state.waiting_for_lock:
        lines.append(f"{WAITING_FOR_LOCK}{state.waiting_for_lock}")
    if table_error:
        lines.append(f"scans table: {table_error}")
    if not state.scans:
        lines.append("no scan yet: " + ("see above" if table_error else
                                        "waiting for rows in the scans table"))
    return "\n".join(lines)


def html_page(state: LiveState, live: dict, table_error: str | None = None) -> str:
    now = time.time()
    body = []
    for r in rows(state, live, now):
        cls = "" if "going" in r["stage"] else {
            "final": "ok", "problem": "bad", "failed": "bad", "set": "bad", "stalled": "warn"}.get(
            r["stage"].split(" ")[0].rstrip(";"), "")
        body.append(
            f"<tr class='{cls}'><td>{html.escape(r['scan'])}</td><td>{r['landed']} / "
            f"{r['planned']}</td><td>{r['reduced']}</td><td>{r['results']}</td>"
            f"<td>{shown_lag(r['lag'])}</td><td>{html.escape(r['stage'])}</td>"
            f"<td>{html.escape(r['message'])}</td></tr>")
    run = state.last_run
    run_line = ""
    if run:
        run_line = (f"run {run['number']}: " + (
            f"{'ok' if run['rc'] == 0 else 'FAILED'} in {run['end'] - run['start']:.0f} s, "
            f"log {html.escape(str(run.get('log', '')))}" if run.get("end")
            else f"running for {now - run['start']:.0f} s"))
    note = f"<p class='bad'>scans table: {html.escape(table_error)}</p>" if table_error else ""
    if state.waiting_for_lock:
        note += f"<p class='warn'>{html.escape(WAITING_FOR_LOCK + state.waiting_for_lock)}</p>"
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>hklflow watch</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 10px;text-align:left}}
td:not(:last-child){{white-space:nowrap}}
tr.ok td{{color:#060}} tr.bad td,p.bad{{color:#b00}} tr.warn td,p.warn{{color:#a60}}</style></head>
<body><h1>hklflow watch</h1>
<p>{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))} &middot; {html.escape(run_line)}</p>
{note}<table><tr><th>scan</th><th>frames landed</th><th>reduced</th><th>in results</th>
<th>lag</th><th>stage</th><th>last error</th></tr>
{''.join(body)}
</table><p>Results of scans still being collected are previews over the frames landed
(their pictures say which part); each is replaced when the scan is complete.</p>
</body></html>
"""


def write_status(expdir: Path, state: LiveState, live: dict, table_error: str | None = None) -> None:
    write_text_atomically(expdir / STATUS_HTML, html_page(state, live, table_error))


def main(argv=None) -> int:

    p = argparse.ArgumentParser(prog="hklflow status",
                                description="Where every scan of a watched experiment stands "
                                            "(hklflow watch): frames landed, reduced and in the "
                                            "results, stage, lag, last error.")
    p.add_argument("expdir", type=Path)
    p.add_argument("--follow", action="store_true", help="refresh the screen until interrupted")
    args = p.parse_args(argv)
    try:
        live = load_settings([str(args.expdir / "config" / "config.yaml")]).raw["live"]
    except ConfigError as exc:
        print(f"hklflow status: {exc}")
        return 2
    # (not "waiting for rows" where nothing watches)
    never = (f"hklflow status: {args.expdir} was never watched (no {STATE_FILE}): `hklflow "
             f"status` shows where the scans of `hklflow watch {args.expdir}` stand. A batch "
             f"run (`hklflow run {args.expdir}`) writes its progress to "
             f"{args.expdir / 'logs' / 'hklflow'}/run-*.log and its results to "
             f"{args.expdir / 'results'}/")
    if not args.follow and not (args.expdir / STATE_FILE).is_file():
        print(never)
        return 1
    try:
        while True:
            state = LiveState.load(args.expdir)
            # (what the watcher shows on results/status.html, from live/state.json)
            text = (screen(state, live, state.table_error or None)
                    if (args.expdir / STATE_FILE).is_file() else never)
            if args.follow:
                print("\033[H\033[2J" + text, flush=True)
                time.sleep(2)
            else:
                print(text)
                return 0
    except KeyboardInterrupt:
        return 0
