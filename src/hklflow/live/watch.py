"""`hklflow watch EXPDIR [-- SNAKEMAKE ARGS]`: reduce an experiment while it is collected.

A thread looks at the raw files every ``live.poll_seconds`` and records how many complete
frames each scan has (hklflow.live.growing) and when each count was first seen.  The main loop
turns that into the live scans table (hklflow.live.table: a scan enters once
``live.first_preview_degrees`` have landed, and is taken further every
``live.preview_every_degrees`` or ``live.preview_every_seconds``) and runs the workflow
whenever the table changed.  Blocks that land during a run are taken together by the next
one.  Every scan's frames, stage, lag and last error go to live/state.json,
results/status.html and `hklflow status`.  Which jobs of a run failed, and whether a lock
refused it, come from the run's job events (hklflow's logger plugin,
live/logs/run-NNNN.events.jsonl: hklflow.planning.job_events).
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from ..base import steplog
from ..base.atomic import process_alive
from ..base.errors import HklflowError
from ..commands.console import plan_problem
from ..commands.run import _passes_through, _split, workflow_dir
from ..commands.warm_client import WARM_STARTS_ENV
from ..commands.warm_starts import WarmStartServer
from ..files import outputs
from ..planning import job_events, snakemake_compat, snakemake_processes
from ..planning.config import LIVE_CONFIG, LIVE_SCANS_TABLE, ConfigError, load_settings
from ..planning.live_files import provisional_orientation
from . import growing
from .discover import DiscoveryPattern, discover
from .grid import grid_changed, hand_over_grid
from .orientation import (hand_over, orientation_move, refined_orientation, refined_version,
                          remove_previews)
from .state import LiveState, ScanState, append_history
from .status import write_status
from .table import preview_keys, row_id, row_key, user_rows, write_live_files

READING = "reading the raw files: "  # an error of the watcher's own look (not of a job)
PID_FILE = "live/watch.pid"
FINISH_FILE = "live/finish.txt"  # scan ids the user asked to finish as far as they went
SNAKEMAKE_PID_FILE = "live/snakemake.pid"
# no run starts while a scan's last frames land within this long (its final results would
# wait for a whole preview run)
HOLD_SECONDS = 10.0
# a failed run is tried again after this long, twice as long after each failure, at most
# MAX_RETRY_SECONDS (sooner when new frames land)
RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 600.0
# a config that appears is read once it has not changed for this long (being written); the
# wait for it is told again after CONFIG_REMIND_SECONDS
CONFIG_POLL_SECONDS = 1.0
CONFIG_REMIND_SECONDS = 600.0
# Snakemake's --touch marks results up to date without making them: the watcher would
# take them for reduced
TOUCH = ("--touch", "-t")
LOCK_POLL_SECONDS = 2.0  # how often a Snakemake that holds the lock is looked for


def refuse_joint_detector(cfg: dict, where) -> None:
    """ConfigError for reduction.refinement.detector_from all: one detector refined on the
    peaks of every temperature would be refined again by every block of frames that lands,
    and every temperature already reduced reduced again after it, preview after preview."""
    if cfg["reduction"]["refinement"]["detector_from"] == "all":
        raise ConfigError(
            f"{where}: field 'reduction.refinement.detector_from': all refines one detector on "
            "every temperature's peaks, so every block of frames that lands would refine it "
            "again and reduce every temperature already reduced anew: hklflow watch refuses it. "
            "Watch with parent (the default: each temperature waits for its parent only), and "
            "once the series is collected set all and run `hklflow run` (every temperature is "
            "refined and reduced once more)")


def _pid_in(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if process_alive(pid) else None


class Watcher:
    def __init__(self, expdir: Path, snakemake_args: list[str], log, *, cores: str = "all"):

        self.expdir = expdir.resolve()
        self.log = log
        self.snakemake_args = list(snakemake_args)
        self.cores = cores
        self.snakefile = workflow_dir() / "Snakefile"
        self.config_file = self.expdir / "config" / "config.yaml"
        self.settings = load_settings([str(self.config_file)])
        refuse_joint_detector(self.settings.raw, self.config_file)
        self.live = self.settings.raw["live"]
        self.kinds = tuple(self.settings.raw["reduction"]["transform"]["kinds"])
        self._config_version, self._config_sha1 = None, ""  # (_config_digest)
        self.discover_notes: set[str] = set()
        # calibrations whose result discovered scans wait for (their shifts are measured
        # from it): a run makes them even while no scan is in the live table
        self.waiting_calibrations: set[str] = set()
        if self.live.get("discover"):
            DiscoveryPattern.parse(self.live["discover"])  # a bad pattern stops us now
        self.state = LiveState.load(self.expdir)
        self.lock = threading.Lock()  # the state, between the observer and the loop
        self.look_lock = threading.Lock()
        self.stop = threading.Event()
        self.table_error: str | None = None
        self.user_row_numbers: dict[str, int] = {}  # scan id -> its row of the user's table
        self.row_set_aside = False  # the last run's plan stopped on a row, now set aside
        self.run_events: job_events.Follower | None = None  # the run going's job events
        self.running_jobs: dict = {}  # its jobs running now: jobid -> [rule, belongs to]
        self.previews_rest_until = 0.0  # no new preview before (live.preview_share)
        # when previews were removed to be made again (remove_previews; None: none are): a
        # run once the rest is over, soon even if no frame lands (Watcher.remake_due)
        self.previews_removed_at: float | None = None
        self.warm: WarmStartServer | None = None  # (live.warm_starts: started at the first run)
        self.warm_refused = False

    # ---- looking at the raw files (the observer thread) ----------------------------------
    def look(self) -> None:
        """New rows of the scans table, and the complete frames of every scan."""
        # one look at a time: two handles on one growing HDF5 dataset in a process, one of
        # them refreshed, corrupt HDF5's state (hklflow.live.growing)
        with self.look_lock:
            self._look()

    def _look(self) -> None:

        now = time.time()
        try:
            rows = user_rows(self.expdir, self.settings.raw["scans_table"],
                             self.settings.offset_names)
            self.table_error = None
        except ConfigError as exc:  # a row being typed, or a wrong one: shown, retried
            rows, self.table_error = None, str(exc)
        if rows is not None:
            self.user_row_numbers = {row_id(r): i for i, r in enumerate(rows, start=1)}
        with self.lock:
            for r in rows or ():
                sid = row_id(r)
                if sid not in self.state.scans:
                    self.state.scans[sid] = ScanState(sid, r, int(r["nframes"]), float(r["phi_step"]))
                    self.log.info("new scan %s: %s, %d frames planned", sid, r["data"], r["nframes"])
                scan = self.state.scans[sid]  # (a row corrected by the user: taken as it is now)
                scan.row, scan.planned, scan.phi_step = r, int(r["nframes"]), float(r["phi_step"])
        if self.live.get("discover") and rows is not None:
            self._discover()
        with self.lock:
            digest = self.rows_digest()
            for scan in self.state.scans.values():
                if scan.set_aside and scan.set_aside_rows != digest:  # (corrected? tried again)
                    self.log.info("%s: the scans changed: its row is tried again", scan.id)
                    scan.set_aside, scan.set_aside_rows = None, ""
        for scan in list(self.state.scans.values()):
            if scan.problem or scan.landed >= scan.planned:
                continue
            data = str(self.expdir / scan.row["data"])
            previous = growing.Observation.from_dict(scan.observation) if scan.observation else None
            try:
                seen = growing.observe(growing.layout_of(scan.row["data"]), data,
                                       scan.row["dataset"], previous)
            except HklflowError as exc:
                with self.lock:
                    scan.error = f"{READING}{exc}"
                continue
            with self.lock:
                if scan.error and scan.error.startswith(READING):
                    scan.error = None
                scan.observation = seen.to_dict()
                if seen.problem:
                    scan.problem = seen.problem
                    self.log.error("%s: %s", scan.id, seen.problem)
                    continue
                if seen.complete_frames != scan.landed:
                    scan.saw(min(seen.complete_frames, scan.planned), now)

    def _discover(self) -> None:
        """Scans found by their files (live.discover); the table's rows win over them."""
        with self.lock:
            known = set(self.state.scans)
        try:
            found = discover(self.expdir, self.live, self.settings.offset_names, known,
                             samples=self.settings.samples, config=self.settings.raw)
        except ConfigError as exc:
            self.table_error = str(exc)
            return
        self.waiting_calibrations = set(found.waiting_for)
        for note in set(found.not_ready) - self.discover_notes:
            self.log.warning("%s", note)
        self.discover_notes = set(found.not_ready)
        with self.lock:
            for r in found.rows:
                sid = row_id(r)
                self.state.scans[sid] = ScanState(sid, r, int(r["nframes"]), float(r["phi_step"]))
                from_file = [c for c, src in found.sources[sid].items() if src == "file"]
                basis = found.relative_to.get(sid)
                self.log.info("new scan %s found by live.discover: %s, %d frames planned (from "
                              "the file: %s%s)", sid, r["data"], r["nframes"],
                              ", ".join(from_file) or "nothing",
                              f"; detector shifts measured from calibration {basis}"
                              if basis else "")
        if found.not_ready and not self.table_error:
            self.table_error = "; ".join(found.not_ready)  # on the status screen

    def observe_forever(self) -> None:
        while not self.stop.is_set():
            try:
                self.look()
                self.follow_run()
                self.write_status(save=True)  # (while a run goes too: frames, stages, lags)
            except Exception as exc:  # noqa: BLE001 - keep looking; the main loop reports
                self.log.exception("looking at the raw files failed: %s", exc)
            self.stop.wait(float(self.live["poll_seconds"]))

    def follow_run(self) -> None:
        """The jobs running now in the run going (its job events): [rule, what it belongs
        to (as failed_jobs)] in the state's last_run, for the status's stages."""
        with self.lock:
            if self.run_events is None:
                return
            for event in self.run_events.new():
                if event["event"] == job_events.STARTED:
                    self.running_jobs[event.get("jobid")] = [event.get("rule") or "",
                                                             _belongs_to(event)]
                elif event["event"] in (job_events.FINISHED, job_events.FAILED):
                    self.running_jobs.pop(event.get("jobid"), None)
            self.state.last_run["jobs"] = list(self.running_jobs.values())

    # ---- what to reduce ----------------------------------------------------------------
    def _finish_requests(self) -> None:
        path = self.expdir / FINISH_FILE
        asked = set(path.read_text().split()) if path.is_file() else set()
        for scan in self.state.scans.values():
            if scan.id in asked and not scan.finish:
                scan.finish = True
                self.log.info("%s: finished as far as it went (%d of %d frames), as asked",
                              scan.id, scan.landed, scan.planned)
            if (self.live["finish_stalled"] and not scan.finish
                    and scan.stalled(time.time(), float(self.live["stall_seconds"]))):
                scan.finish = True
                self.log.warning("%s: stalled at %d of %d frames: reduced as far as it went "
                                 "(live.finish_stalled)", scan.id, scan.landed, scan.planned)

    def frames_to_reduce(self, scan: ScanState, now: float) -> int:
        """How many of a scan's frames the next run reduces (0: it stays out for now)."""
        if scan.problem or scan.set_aside:
            return 0
        if scan.complete:
            return scan.frames_when_complete
        step = abs(scan.phi_step)
        first = min(scan.planned, math.ceil(float(self.live["first_preview_degrees"]) / step - 1e-9))
        if scan.landed < max(1, first) or now < self.previews_rest_until:  # (live.preview_share)
            return scan.reduced
        block = max(1, math.ceil(float(self.live["preview_every_degrees"]) / step - 1e-9))
        new = scan.landed - scan.reduced
        if (scan.reduced == 0 or new >= block
                or (new > 0 and now - scan.reduced_at >= float(self.live["preview_every_seconds"]))):
            return scan.landed
        return scan.reduced

    def remake_due(self, now: float) -> bool:
        """Whether previews removed to be made again (a new provisional orientation or grid,
        a changed setting) call for a run of their own now: once the previews' rest is over,
        and, while frames of a scan are landing, only if its next block has not brought a
        run within live.preview_every_seconds of the removal (a run for removed previews
        alone costs as much as a preview)."""
        if self.previews_removed_at is None or now < self.previews_rest_until:
            return False
        every = float(self.live["preview_every_seconds"])
        landing = any(not s.complete and not s.problem and now - s.last_growth < every
                      for s in self.state.scans.values())
        return not landing or now - self.previews_removed_at >= every

    def _removed_previews(self) -> None:
        """Previews were removed to be made again (remove_previews): from the first such
        removal since the last run, remake_due counts."""
        self.previews_removed_at = self.previews_removed_at or time.time()

    def completes_soon(self, now: float) -> bool:
        """Whether a scan in progress will be complete within HOLD_SECONDS at the pace its
        frames land: a run started now would make a preview that delays the final results
        by a whole run."""
        for scan in self.state.scans.values():
            if scan.complete or scan.problem or len(scan.landings) < 2:
                continue
            (t0, n0), (t1, n1) = scan.landings[-min(len(scan.landings), 10)], scan.landings[-1]
            if now - t1 > HOLD_SECONDS or t1 <= t0 or n1 <= n0:
                continue  # not landing now
            if (scan.planned - scan.landed) / ((n1 - n0) / (t1 - t0)) <= HOLD_SECONDS:
                return True
        return False

    def live_rows(self, now: float) -> tuple[list[dict], dict]:
        """The live table's rows (the experiment's order) and the landed markers' texts."""
        wanted = {}
        for scan in self.state.scans.values():
            n = self.frames_to_reduce(scan, now)
            if n:
                wanted[scan.id] = n
        # a temperature enters once its parent temperature has (the parent seeds it)
        labels = {(sid.split("/")[0], sid.split("/")[1]) for sid in wanted}
        rows, markers = [], {}
        for scan in self.state.scans.values():
            if scan.id not in wanted:
                continue
            sample = self.settings.samples.get(scan.sample)
            parent = sample.parent_for(float(scan.row["temperature"])) if sample else None
            if parent and (scan.sample, parent) not in labels:
                continue
            n = wanted[scan.id]
            if n != scan.reduced:
                scan.reduced, scan.reduced_at = n, now
            in_progress = not scan.complete
            rows.append(dict(scan.row, nframes=n, planned_frames=scan.planned if in_progress else 0))
            if in_progress:
                markers[scan.id] = (f'{{"scan": "{scan.id}", "frames": {n}, "planned": '
                                    f'{scan.planned}}}\n')
        return rows, markers

    def waiting_records(self, rows: list[dict]) -> list[dict]:
        """The scans planned (the user's table, live.discover) at a temperature of the live
        table's rows but not among them: the workflow takes that temperature as a preview
        and its PDFs wait (planning.config.waiting_scans).  A scan with a problem or set aside
        is not waited for: it is shown with its own message."""
        included = {row_id(r) for r in rows}
        places = {sid.rpartition("/")[0] for sid in included}
        return [{"scan": s.id, "frames": 0, "planned": int(s.planned)}
                for s in self.state.scans.values()
                if s.id not in included and s.id.rpartition("/")[0] in places
                and not s.problem and not s.set_aside]

    # ---- running the workflow ------------------------------------------------------------
    def unlock_if_stale(self, refused: bool = False) -> None:
        """Remove the lock a killed run left (`refused`: the last run was refused for it);
        wait first for a run that goes on (one the previous watcher started)."""
        running = _pid_in(self.expdir / SNAKEMAKE_PID_FILE)
        if running:
            self.log.info("waiting for the workflow run the previous watcher started (pid %d)",
                          running)
            while process_alive(running):
                time.sleep(1)
        # (at the start: no first run planned only to be refused)
        if not (refused or snakemake_compat.lock_left(self.expdir)):
            return
        waited = self.wait_for_lock_holders()
        # a run that ends takes its lock away; only a killed one leaves it (and a refusal
        # with no Snakemake here tells even where the lock folder cannot be read)
        if snakemake_compat.lock_left(self.expdir) or (refused and not waited):
            self.log.info("removing the lock a killed run left (no Snakemake on this machine "
                          "works in %s)", self.expdir)
            self.run_snakemake(["--unlock"])

    def wait_for_lock_holders(self) -> bool:
        """Wait while a Snakemake on this machine works in the experiment directory (the lock
        is that run's: never removed under it), saying for whom; True when one did."""
        waited, said = False, None
        while not self.stop.is_set():
            found = snakemake_processes.holders(self.expdir)
            if found == []:
                break
            if found is None:  # (no /proc) wait for the lock itself to go
                if not snakemake_compat.lock_left(self.expdir):
                    break
                text = ("this machine's processes cannot be listed (no /proc), so a killed "
                        "run's lock cannot be told from a running one's: remove it with "
                        f"`hklflow run {self.expdir} -- --unlock` once no Snakemake runs there")
            else:
                text = "; ".join(map(str, found))
            waited = True
            if text != said:
                said = text
                self.log.warning("the experiment directory is locked by another Snakemake "
                                 "run: waiting for it to end (%s)", text)
                self._show_lock_wait(text)
            time.sleep(LOCK_POLL_SECONDS)
        if waited:
            self.log.info("the other Snakemake run ended: going on")
            self._show_lock_wait("")
        return waited

    def _show_lock_wait(self, text: str) -> None:
        """`hklflow status` and the status page say for whom the watcher waits ("": none)."""
        with self.lock:
            self.state.waiting_for_lock = text
            self.state.save(self.expdir)
        self.write_status()

    def run_snakemake(self, args: list[str], *, log_file: Path | None = None,
                      events: Path | None = None) -> int:
        """Snakemake on the live table; its output to log_file, its job events (hklflow's
        logger plugin) to `events`."""
        ours, args = job_events.logger_arguments(events, args) if events else ([], args)
        warm = self.warm_starts()
        # (with warm starts, Snakemake too runs in a fork of the server, which has imported
        # it: warm_client.run_snakemake)
        program = ["hklflow.commands.warm_client", "snakemake"] if warm else ["snakemake"]
        cmd = [sys.executable, "-m", *program, *ours, "--snakefile", str(self.snakefile),
               "--directory", str(self.expdir), "--configfile", str(self.config_file),
               str(self.expdir / LIVE_CONFIG), *args]
        out = open(log_file, "w") if log_file else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE",
                                             **({WARM_STARTS_ENV: warm.path} if warm else {})))
            (self.expdir / SNAKEMAKE_PID_FILE).write_text(f"{proc.pid}\n")
            try:
                return proc.wait()
            except BaseException:
                proc.send_signal(signal.SIGINT)  # Snakemake stops its jobs and cleans up
                proc.wait()
                raise
        finally:
            if log_file:
                out.close()
            (self.expdir / SNAKEMAKE_PID_FILE).unlink(missing_ok=True)

    def warm_starts(self) -> WarmStartServer | None:
        """The warm-start server of this watcher's jobs (hklflow.commands.warm_starts),
        started at the first run: where live.warm_starts is on and the jobs run on this
        machine (no --profile, --executor or cluster given to Snakemake: a cluster's jobs
        do their work in their own allocation)."""
        if self.warm is None and not self.warm_refused:
            self.warm_refused = True
            if not self.live.get("warm_starts", True) or not local_jobs(self.snakemake_args):
                return None
            try:
                log_file = self.expdir / "live" / "logs" / "warm-starts.log"
                log_file.parent.mkdir(parents=True, exist_ok=True)
                self.warm = WarmStartServer(log_file)
                self.warm_refused = False
            except OSError as exc:
                self.log.warning("every job starts anew: %s", exc)
        return self.warm

    def stop_warm_starts(self) -> None:
        if self.warm is not None:
            self.warm.stop()
            self.warm = None

    def _jobs_cpu(self) -> float:
        """CPU seconds of the runs and of the jobs the warm-start server forked, so far."""
        return _children_cpu() + (self.warm.cpu_seconds() if self.warm else 0.0)

    def run_workflow(self, rows: list[dict]) -> int:
        with self.lock:
            self.state.runs += 1
            number = self.state.runs
            start = time.time()
            included = {row_id(r): int(r["nframes"]) for r in rows}
            log_file = self.expdir / "live" / "logs" / f"run-{number:04d}.log"
            events = log_file.with_name(f"run-{number:04d}.events.jsonl")
            # (frames: what the run reduces of each scan; jobs: those running now, which the
            # observer follows in the run's events: the status's stages while it goes)
            self.state.last_run = {"number": number, "start": start, "end": None, "rc": None,
                                   "frames": included, "jobs": [],
                                   "events": str(events.relative_to(self.expdir))}
            self.state.save(self.expdir)  # (a watcher killed now: the next one numbers on)
            self.run_events = job_events.Follower(events)
            self.running_jobs = {}
            before = {sid: s.results for sid, s in self.state.scans.items()}
            was_final = {key for key, scans in self._temperatures().items() if self._final(scans)}
            first = self.final_targets(was_final)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.write_status()
        # the final results of a temperature just completed before the previews of the next;
        # last: --prioritize takes every word after it, so a target of the user's (-- TARGET)
        # after it would be prioritised, not targeted
        prioritize = ["--prioritize", *first] if first else []
        cpu_before = self._jobs_cpu()
        rc = self.run_snakemake(["--cores", str(self.cores), "--rerun-incomplete", "--keep-going",
                                 *self.snakemake_args, *prioritize], log_file=log_file,
                                events=events)
        end = time.time()
        failed = failed_jobs(job_events.read(events))
        with self.lock:
            self.run_events = None
            self.state.last_run.update(end=end, rc=rc, log=str(log_file.relative_to(self.expdir)),
                                       jobs=[])
            # a plan stopped on one row is that row's problem, not every scan's
            self.row_set_aside = bool(rc) and not failed and self.set_aside_row(rows, log_file)
            lags, finals = {}, {}
            for sid, n in (included.items() if not self.row_set_aside else ()):
                scan = self.state.scans[sid]
                # a failure that names no scan or temperature (e.g. a sample's grid) is every
                # scan's
                errors = [f for f in failed if f["scan"] in ("", sid, "/".join(sid.split("/")[:2]))]
                scan.error = ("; ".join(f"{f['rule']} failed (log: {f['log']})" for f in errors)
                              or (f"the workflow failed (log: {log_file.relative_to(self.expdir)})"
                                  if rc and not failed else None))
                if not scan.error:
                    scan.results = n
                landed = scan.landed_at(n)
                # new frames in this run's results
                if landed is not None and scan.results == n > before.get(sid, 0):
                    lags[sid] = round(end - landed, 2)
            if any(r.get("planned_frames") for r in rows):  # a preview run: the next rests
                share = float(self.live["preview_share"])
                self.previews_rest_until = end + (end - start) * (1 / share - 1)
            for key, scans in self._temperatures().items():
                if key not in was_final and self._final(scans):
                    last = max(s.landed_at(s.frames_when_complete) or start for s in scans)
                    finals["/".join(key)] = round(end - last, 2)
            previews = self.preview_temperatures(rows)
            self.state.save(self.expdir)
        # (the scan files link the raw files the observer looks at: one look at a time)
        with self.look_lock:
            orientations = self.hand_orientations(previews)
        grids = self.hand_grids(previews)
        append_history(self.expdir, {"run": number, "start": start, "end": end, "rc": rc,
                                     "cpu_s": round(self._jobs_cpu() - cpu_before, 2),
                                     "watcher_cpu_s": round(_own_cpu(), 2),
                                     "frames": included, "lag_s": lags, "final_lag_s": finals,
                                     "orientations": orientations, "grids": grids,
                                     "failed": failed})
        self.log.info("run %d: %s in %.1f s (rc %d)%s", number,
                      ", ".join(f"{sid} {n}" for sid, n in included.items()), end - start, rc,
                      "".join(f"; {f['rule']} of {f['scan']} failed: {f['log']}" for f in failed))
        return rc

    # ---- the previews' provisional orientations (hklflow.live.orientation) -----------------
    def preview_temperatures(self, rows: list[dict]) -> dict:
        """(sample, label) -> the ids of the live table's scans there, of every temperature
        whose results are previews: a scan of it in progress, or one waited for."""
        by, previews = {}, preview_keys(rows, self.waiting_records(rows))
        for r in rows:
            by.setdefault(row_key(r), []).append(row_id(r))
        return {key: ids for key, ids in by.items() if key in previews}

    def hand_orientations(self, previews: dict) -> dict:
        """After a run (holding look_lock, not lock): hand each preview temperature its newest
        refined orientation where it has no provisional one (the workflow copies it at the
        first preview: rule provisional_orientation), or where that moved some pixel's
        (H, K, L) by more than live.reorient_voxels (the next run makes its previews again
        with it).  What was compared: SAMPLE/TLABEL -> {"moved_voxels" (None: no
        provisional one before), "handed"}."""
        compared = {}
        for (sample, label), ids in previews.items():
            key = f"{sample}/{label}"
            version = refined_version(self.expdir, sample, label)
            if version is None or self.state.orientations.get(key, {}).get("version") == version:
                continue
            provisional = self.expdir / provisional_orientation(sample, label)
            move = orientation_move(self.expdir, ids, provisional,
                                    refined_orientation(self.expdir, sample, label)) \
                if provisional.is_file() else None
            tolerance = float(self.live["reorient_voxels"])
            handed = move is None or move > tolerance
            if handed:
                hand_over(self.expdir, sample, label)
                if move is not None:  # (made with the one before: made again)
                    remove_previews(self.expdir, ids, self.kinds)
                    self._removed_previews()
            moved = None if move is None or math.isinf(move) else round(move, 4)
            with self.lock:
                self.state.orientations[key] = {"version": version, "moved_voxels": moved}
                self.state.save(self.expdir)
            compared[key] = {"moved_voxels": moved, "handed": handed}
            moved_by = ("cannot be compared (a file unreadable)" if moved is None
                        else f"moved by {move:.3g} voxel")
            self.log.info("%s: %s", key,
                          "its previews keep the orientation they were made with" if move is None
                          else f"the orientation {moved_by} (> {tolerance:g}, "
                               "live.reorient_voxels): the next run makes its previews again "
                               "with it"
                          if handed else
                          f"the orientation {moved_by} (<= {tolerance:g}): its previews keep "
                          "their provisional one")
        return compared

    # ---- the previews' provisional grids (hklflow.live.grid) ------------------------------
    def hand_grids(self, previews: dict) -> list[str]:
        """After a run: hand each sample with a preview temperature the grid define_grid
        made where it differs from the provisional one (the workflow copies it at the
        sample's first preview: rule provisional_grid); the next run makes its previews
        again on it.  The samples handed a new grid."""
        handed = []
        for sample in sorted({sample for sample, _ in previews}):
            if grid_changed(self.expdir, sample):
                hand_over_grid(self.expdir, sample)
                remove_previews(self.expdir, [sid for (s, _), ids in previews.items()
                                              if s == sample for sid in ids], self.kinds)
                self._removed_previews()
                handed.append(sample)
                self.log.info("%s: define_grid made another grid (a scan at a new detector "
                              "position): the next run makes its previews again on it", sample)
        return handed

    def forget_changed_previews(self, previews: dict) -> list[str]:
        """Before a run (holding lock): remove the previews (blocks' peaks, masks and volumes
        included: hklflow.live.orientation.remove_previews) of the scans whose row of the
        scans table changed since their previews were made, and of every preview scan when
        the config did, so that the run makes them again with the new settings: Snakemake
        would not check their jobs' settings against what made them while the jobs before
        them run (their temperature's refinement, the scan's ingest).  The scans removed."""
        config = self._config_digest()
        rows = {sid: hashlib.sha1(json.dumps(self.state.scans[sid].row, sort_keys=True,
                                             default=str).encode()).hexdigest()
                for ids in previews.values() for sid in ids if sid in self.state.scans}
        before = self.state.preview_inputs
        changed = [sid for sid in rows if sid in before.get("rows", {})
                   and (before["rows"][sid] != rows[sid] or before.get("config") != config)]
        if changed:
            removed = remove_previews(self.expdir, changed, self.kinds, peaks=True)
            self._removed_previews()
            self.log.info("%s: %s changed since their previews were made: %d files of "
                          "them removed, the next run makes them again", ", ".join(changed),
                          "the config" if before.get("config") != config else "their rows",
                          removed)
        self.state.preview_inputs = {"config": config, "rows": rows}
        return changed

    def _config_digest(self) -> str:
        """Of the config's settings but its live section (the watcher's own: no job's); read
        again only when the file's size or modification time changed."""
        try:
            st = self.config_file.stat()
            version = (st.st_size, st.st_mtime_ns)
        except OSError:
            version = None
        if version is None or version != self._config_version:
            try:
                config = yaml.safe_load(self.config_file.read_text())
                config = {k: v for k, v in config.items() if k != "live"}
                text = json.dumps(config, sort_keys=True, default=str)
            except (OSError, ValueError, AttributeError, yaml.YAMLError):
                text = ""
            self._config_version = version
            self._config_sha1 = hashlib.sha1(text.encode()).hexdigest()
        return self._config_sha1

    def drop_final_grids(self, previews: dict) -> None:
        """Remove the provisional grids of samples with no preview temperature left: their
        final results are made on the sample's grid, as batch."""
        root = self.expdir / "live" / "grid"
        samples = {sample for sample, _ in previews}
        for path in sorted(root.glob("*.json")) if root.is_dir() else ():
            if path.stem not in samples:
                path.unlink()

    def drop_final_orientations(self, previews: dict) -> None:
        """Remove the provisional orientations of temperatures that are no longer previews:
        their final results are made with their refined orientation, as batch."""
        root = self.expdir / "live" / "orientation"
        for path in sorted(root.glob("*/*.nxs")) if root.is_dir() else ():
            if (path.parent.name, path.stem) not in previews:
                path.unlink()
                self.state.orientations.pop(f"{path.parent.name}/{path.stem}", None)

    def drop_final_blocks(self, rows: list[dict], previews: dict) -> None:
        """Remove the blocks' results (results/S/T/E/blocks) of the scans whose temperature
        is no longer a preview (previews: preview_temperatures): its final results are made
        from the whole scans, as batch."""
        for r in rows:
            if row_key(r) not in previews:
                sample, temperature, entry = row_id(r).split("/")
                blocks = self.expdir / outputs.fill(outputs.ENTRY_BLOCKS, sample=sample,
                                                    temperature=temperature, entry=entry)
                if blocks.is_dir():
                    shutil.rmtree(blocks, ignore_errors=True)

    def rows_digest(self) -> str:
        """Of every scan's row (the user's table and discovery's): a set-aside row is tried
        again once they change."""
        text = json.dumps([s.row for s in self.state.scans.values()], sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()

    def set_aside_row(self, rows: list[dict], log_file: Path) -> bool:
        """Set aside the scan whose row of the live table stopped the run's plan (hklflow's
        message on the last lines of its log names `live/scans.tsv: row N`), with that
        message naming the user's table and row; False when the plan stopped otherwise."""
        try:
            problem = plan_problem(log_file.read_text(errors="replace").splitlines())
        except OSError:
            return False
        found = re.search(rf"{re.escape(LIVE_SCANS_TABLE)}: row (\d+)", problem[0]) \
            if problem else None
        if not found or not 1 <= int(found.group(1)) <= len(rows):
            return False
        sid = row_id(rows[int(found.group(1)) - 1])
        scan = self.state.scans.get(sid)
        if scan is None:
            return False
        number = self.user_row_numbers.get(sid)
        where = (f"{self.settings.raw['scans_table']}: row {number}" if number
                 else f"the scan found by live.discover ({scan.row.get('data')})")
        text = " ".join(problem).replace(found.group(0), where, 1)
        scan.set_aside = (f"{text} (set aside: the other scans go on; correct the row, and it "
                          "is tried again)")
        scan.set_aside_rows = self.rows_digest()
        self.log.error("%s: set aside: %s", sid, text)
        return True

    def lock_refused(self) -> bool:
        """Whether Snakemake refused the last run for the directory's lock (its events)."""
        events = self.state.last_run.get("events")
        return bool(events) and job_events.lock_refused(job_events.read(self.expdir / events))

    @staticmethod
    def _final(scans) -> bool:
        return all(s.complete and s.results == s.frames_when_complete and not s.error
                   for s in scans)

    def final_targets(self, was_final: set) -> list[str]:
        """The merged (and symmetrised) volumes of the temperatures whose scans are all
        complete and not yet final."""
        cfg = self.settings.raw["reduction"]
        volume = outputs.SYMMETRIZED_VOLUME if cfg["merge"]["symmetrize"] else outputs.MERGED_VOLUME
        return [outputs.fill(volume, sample=sample, temperature=label, kind=kind)
                for (sample, label), scans in self._temperatures().items()
                if (sample, label) not in was_final and all(s.complete for s in scans)
                for kind in cfg["transform"]["kinds"]]

    def _temperatures(self) -> dict:
        by = {}
        for s in self.state.scans.values():
            by.setdefault((s.sample, s.temperature_label), []).append(s)
        return by

    def write_status(self, save: bool = False) -> None:
        """results/status.html, and live/state.json (which `hklflow status` shows) where
        `save` or the table's error changed."""
        with self.lock:
            if self.state.table_error != (self.table_error or ""):  # (hklflow status shows it)
                self.state.table_error = self.table_error or ""
                save = True
            if save:
                self.state.save(self.expdir)
            write_status(self.expdir, self.state, self.live, self.table_error)

    # ---- the loop ----------------------------------------------------------------------
    def idle(self) -> bool:
        """Every scan known is complete (or has a problem) and in the latest results."""
        scans = list(self.state.scans.values())
        return bool(scans) and all(
            s.problem or s.set_aside or (s.complete and s.results == s.frames_when_complete)
            for s in scans)

    def loop(self, *, once: bool = False, exit_when_idle: float | None = None) -> int:
        observer = threading.Thread(target=self.observe_forever, name="observer", daemon=True)
        self.look()
        observer.start()
        last_rc, pending, idle_since, retry_at, backoff = 0, True, None, 0.0, RETRY_SECONDS
        try:
            while True:
                self.look()  # the newest frames, not those of the observer's last pass
                now = time.time()
                if self.completes_soon(now):
                    time.sleep(0.5)
                    continue
                with self.lock:
                    self._finish_requests()
                    rows, markers = self.live_rows(now)
                    # no scan to reduce yet, but discovered scans wait for a calibration:
                    # a run on the empty live table makes the calibrations
                    calibrating = not rows and bool(self.waiting_calibrations)
                    changed = write_live_files(self.expdir, rows, markers,
                                               self.settings.offset_names,
                                               self.waiting_records(rows)) \
                        if rows or calibrating else False
                    previews = self.preview_temperatures(rows)
                    self.drop_final_orientations(previews)
                    self.drop_final_grids(previews)
                    self.forget_changed_previews(previews)
                    self.drop_final_blocks(rows, previews)
                    self.state.save(self.expdir)
                remake = self.remake_due(now)
                if (rows or calibrating) and (changed or pending or remake
                                              or (last_rc and now >= retry_at)):
                    self.previews_removed_at = None
                    last_rc = self.run_workflow(rows)
                    pending = False
                    if last_rc and self.lock_refused():
                        self.unlock_if_stale(refused=True)  # a killed run's lock: at once again
                        pending = True
                    elif last_rc and self.row_set_aside:  # the others at once, without it
                        pending = True
                    elif last_rc:  # again later (a file still being copied, a full disk ...)
                        retry_at, backoff = time.time() + backoff, min(2 * backoff, MAX_RETRY_SECONDS)
                    else:
                        backoff = RETRY_SECONDS
                self.write_status()
                if once:
                    return last_rc
                if exit_when_idle is not None:
                    if self.idle():
                        idle_since = idle_since or time.time()
                        if time.time() - idle_since >= exit_when_idle:
                            self.log.info("every scan is complete and reduced: done")
                            return last_rc
                    else:
                        idle_since = None
                time.sleep(min(1.0, float(self.live["poll_seconds"])))
        finally:
            self.stop.set()
            self.stop_warm_starts()
            observer.join(timeout=10)
            with self.lock:
                self.state.save(self.expdir)


def local_jobs(snakemake_args: list[str]) -> bool:
    """Whether Snakemake runs the jobs on this machine: no profile (the workflow's own,
    profiles/default, is local), executor or cluster submission given."""
    remote = ("--profile", "--executor", "-e", "--cluster", "--slurm", "--kubernetes")
    return not os.environ.get("SNAKEMAKE_PROFILE") and not any(
        a == flag or a.startswith(flag + "=") for a in snakemake_args for flag in remote)


def _children_cpu() -> float:
    """CPU seconds of the runs (Snakemake and its jobs) the watcher has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_cpu() -> float:
    """CPU seconds of the watcher's own process (its looks, status pages, decisions)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _belongs_to(event: dict) -> str:
    """What a job event's job belongs to: SAMPLE/TLABEL/ENTRY, SAMPLE/TLABEL or "" (from
    its wildcards: a job of a whole sample, such as its grid, belongs to every scan)."""
    w = event.get("wildcards") or {}
    return ("/".join(w[k] for k in ("sample", "temperature", "entry") if w.get(k))
            if w.get("sample") and w.get("temperature") else "")


def failed_jobs(events) -> list[dict]:
    """The failed jobs of a run's job events (hklflow.planning.job_events): rule, what they
    belong to (_belongs_to) and their log."""
    return [{"rule": event["rule"], "scan": _belongs_to(event),
             "log": job_events.first_log(event) or ""}
            for event in events if event["event"] == job_events.FAILED]


def unknown_scans(expdir: Path, asked: list[str]) -> str | None:
    """Why `--finish` refuses scan ids that are neither rows of the scans table nor scans
    the watcher has seen (a later scan of that id would count as finished from its first
    look); None when it knows them all."""
    known = set(LiveState.load(expdir).scans)
    table, problem = "the scans table", ""
    try:
        settings = load_settings([str(expdir / "config" / "config.yaml")])
        table = settings.raw["scans_table"]
        known |= {row_id(r) for r in user_rows(expdir, table, settings.offset_names)}
    except ConfigError as exc:  # (a row being typed) the scans the watcher saw still count
        problem = f" ({table} cannot be read now: {exc})"
    unknown = [sid for sid in asked if sid not in known]
    if not unknown:
        return None
    # (the closest first)
    close = list(dict.fromkeys(c for sid in unknown
                               for c in difflib.get_close_matches(sid, sorted(known), n=3)))
    shown = sorted(known)
    return (f"--finish {' '.join(unknown)}: not a scan of {expdir} (neither a row of {table} "
            f"nor a scan the watcher has seen){problem}: expected SAMPLE/TLABEL/ENTRY, " +
            (f"close ones: {', '.join(close)}" if close else
             f"known: {', '.join(shown[:10])}{' ...' if len(shown) > 10 else ''}"
             if shown else "and no scan is known yet"))


def wait_for_config(expdir: Path, log, poll: float = CONFIG_POLL_SECONDS) -> None:
    """Returns once EXPDIR/config/config.yaml exists and has not changed for `poll`
    seconds (an acquisition writes it first: a watcher may be started before); says what it
    waits for at once, and again every CONFIG_REMIND_SECONDS."""
    path = expdir / "config" / "config.yaml"
    seen, said = None, None
    while True:
        try:
            st = path.stat()
            now_seen = (st.st_size, st.st_mtime_ns)
        except OSError:
            now_seen = None
        settled = now_seen is not None and time.time() - st.st_mtime >= poll
        if now_seen is not None and (now_seen == seen or (seen is None and settled)):
            if said is not None:
                log.info("%s written: watching %s", path, expdir)
            return
        seen = now_seen
        if now_seen is None and (said is None or time.time() - said >= CONFIG_REMIND_SECONDS):
            log.info("waiting for %s: an acquisition writes it first (hklflow simulate "
                     "--acquire, or the beamline's own); a wrong EXPDIR waits forever "
                     "(Ctrl-C to stop)", path)
            said = time.time()
        time.sleep(poll)


def cores_argument(text: str) -> str:
    """--cores as Snakemake takes it: a whole number >= 1, or all (refused here, not by
    every run of the watcher's Snakemake)."""
    if text == "all":
        return text
    try:
        cores = int(text)
    except ValueError:
        cores = 0
    if cores < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of cores >= 1, or all; "
                                         f"got {text!r}")
    return str(cores)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hklflow watch",
        description="Reduce an experiment while its scans are being collected: follow the "
                    "scans table (rows appended as scans start) or the scans found by their "
                    "files (config live.discover), and the raw files, and run the "
                    "workflow again on every block of complete frames (config: live). "
                    "Arguments after -- go to snakemake (e.g. -- --profile profiles/slurm).")
    p.add_argument("expdir", type=Path, help="experiment directory (with config/config.yaml)")
    p.add_argument("--cores", default="all", type=cores_argument,
                   help="cores for snakemake: a whole number >= 1, or all (the default)")
    p.add_argument("--finish", nargs="+", metavar="SCAN", default=[],
                   help="reduce these scans (SAMPLE/TLABEL/ENTRY, e.g. lsco/200K/f2) as far as "
                        "they went, as if complete (an aborted scan); works while another "
                        "watcher runs")
    p.add_argument("--once", action="store_true", help="look once, reduce what landed, exit")
    p.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit once every scan is complete and reduced and nothing new came for "
                        "this long (default: watch until interrupted)")
    return p


def main(argv=None) -> int:

    argv, extra = _split(argv)
    args = parser().parse_args(argv)
    log = steplog.setup("watch")
    expdir = args.expdir.resolve()
    if args.finish and not (expdir / "config" / "config.yaml").is_file():
        log.error("%s: no config/config.yaml: not an experiment directory", expdir)
        return 2
    try:
        wait_for_config(expdir, log)
    except KeyboardInterrupt:
        log.info("stopped while waiting for %s", expdir / "config" / "config.yaml")
        return 130
    not_running = [a for a in extra if _passes_through([a]) or a.split("=")[0] in TOUCH]
    if not_running:
        log.error("%s: hklflow watch does not take %s: it would make nothing, yet record "
                  "every scan as reduced; expected Snakemake arguments that run jobs (e.g. -- "
                  "--profile PROFILE). For a dry run: hklflow run %s -- -n", expdir,
                  " ".join(not_running), args.expdir)
        return 2
    if args.finish:
        unknown = unknown_scans(expdir, args.finish)
        if unknown:
            log.error("%s", unknown)
            return 2
        path = expdir / FINISH_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write("".join(f"{sid}\n" for sid in args.finish))
        log.info("asked to finish %s as far as they went", ", ".join(args.finish))
        other = _pid_in(expdir / PID_FILE)
        if other and other != os.getpid():
            log.info("the watcher running (pid %d) takes it from here", other)
            return 0
    other = _pid_in(expdir / PID_FILE)
    if other and other != os.getpid():
        log.error("%s is already watched (pid %d); one watcher per experiment", expdir, other)
        return 1
    (expdir / "live").mkdir(exist_ok=True)
    (expdir / PID_FILE).write_text(f"{os.getpid()}\n")
    try:
        watcher = Watcher(expdir, extra, log, cores=args.cores)
        watcher.unlock_if_stale()
        return watcher.loop(once=args.once, exit_when_idle=args.exit_when_idle)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.info("stopped; `hklflow watch %s` resumes", args.expdir)
        return 130
    finally:
        (expdir / PID_FILE).unlink(missing_ok=True)
