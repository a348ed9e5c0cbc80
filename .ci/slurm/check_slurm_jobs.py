#!/usr/bin/env python3
"""Check that every job of a Snakemake run went through SLURM, from both sides.

    check_slurm_jobs.py SLURM_RUN_LOG [--local-log LOCAL_RUN_LOG] [--local-rules all,...]

Snakemake's side (its log of the run through `--profile profiles/slurm`): the jobs it
planned (the job-stats table, per rule), the ones it ran locally ("localrule ..."), each
"Job N has been submitted with SLURM jobid M (log: FILE)" - N a job number, or the id of a
group job (several rules in one SLURM job, profiles/slurm `groups:`).
The cluster's side: `sacct --completion` (slurmctld's job-completion log; no accounting
database needed) lists the jobs of the run (their SLURM job name is the plugin's run id)
with state, exit code, node and times; each SLURM job's own log (kept with
--hklflow-slurm-keep-successful-logs) names the rules and wildcards of the Snakemake jobs that
ran inside it and says each finished.

Fails unless: every planned job but the local rules (`all`, which runs nothing, and the
rules the workflow declares `localrule: True`) ran inside a SLURM job (its rule block and its
"Finished" line in that job's log), and every job of a local rule finished in the
submitting Snakemake; every submission is
in the completion log, COMPLETED with exit code 0:0, on a node of the cluster; the cluster
ran no other job of that run; and, with --local-log, the (rule, wildcards) of the SLURM run
are exactly those of the local run.  Prints the list.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

RUN_ID = re.compile(r"^SLURM run ID: (\S+)", re.M)
SUBMITTED = re.compile(r"^Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (.*)\)\.?$", re.M)
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)", re.M)
RULE_HEAD = re.compile(r"^(local)?rule (\w+):$")
RULES_DIR = Path(__file__).resolve().parents[2] / "workflow" / "rules"


def declared_local_rules(rules_dir: Path = RULES_DIR) -> set[str]:
    """The rules of the workflow's .smk files that declare `localrule: True` (Snakemake runs
    them itself, also with a cluster executor)."""
    out, name = set(), None
    for path in sorted(Path(rules_dir).glob("*.smk")):
        for line in path.read_text().splitlines():
            m = re.match(r"(?:rule|checkpoint) (\w+):", line)
            if m:
                name = m.group(1)
            elif line and not line[0].isspace():
                name = None
            elif name and re.match(r"\s+localrule:\s*True\b", line):
                out.add(name)
    return out


def job_stats(text: str) -> Counter:
    """The first 'Job stats:' table of a Snakemake log: rule -> planned count."""
    out = Counter()
    lines = text.splitlines()
    try:
        i = lines.index("Job stats:")
    except ValueError:
        return out
    for line in lines[i + 3:]:           # header, dashes
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            out[parts[0]] = int(parts[1])
    return out


def rule_list(text: str) -> list[tuple[int, str, str, bool]]:
    """(jobid, rule, wildcards, local?) of every unindented 'rule X:' / 'localrule X:' block
    of a Snakemake log, in order (one log may hold several runs, each numbering from 0)."""
    jobs, cur = [], None

    def close():
        if cur is not None and "jobid" in cur:
            jobs.append((cur["jobid"], cur["rule"], cur["wildcards"], cur["local"]))

    for line in text.splitlines():
        m = RULE_HEAD.match(line)
        if m:
            close()
            cur = {"rule": m.group(2), "local": bool(m.group(1)), "wildcards": ""}
            continue
        if cur is None:
            continue
        s = line.strip()
        if s.startswith("jobid:"):
            cur["jobid"] = int(s.split(":", 1)[1])
        elif s.startswith("wildcards:"):
            cur["wildcards"] = s.split(":", 1)[1].strip()
        elif not line.startswith("    "):
            close()
            cur = None
    close()
    return jobs


def rule_blocks(text: str) -> dict:
    """Snakemake jobid -> (rule, wildcards, local?) from the 'rule X:' blocks of a log."""
    return {j: (r, w, local) for j, r, w, local in rule_list(text)}


def jobs_of_slurm_log(path: Path) -> list[tuple[str, str, bool]]:
    """(rule, wildcards, finished?) of every Snakemake job that ran inside one SLURM job,
    from that job's log: the 'rule X:' / 'localrule X:' blocks of the job's Snakemake and
    their 'Finished jobid' lines.  hklflow-slurm's job runs its rules itself ('localrule');
    the stock plugin's job step prints 'rule X:' and starts one more Snakemake per rule
    under srun, whose 'localrule X:' is the same job and is not counted twice."""
    text = path.read_text(errors="replace")
    done = {(int(j), r) for j, r in FINISHED.findall(text)}
    blocks = rule_list(text)
    outer = [b for b in blocks if not b[3]] or blocks
    return [(rule, wildcards, (jobid, rule) in done) for jobid, rule, wildcards, _ in outer]


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("slurm_log", type=Path, help="Snakemake's log of the run through SLURM")
    ap.add_argument("--local-log", type=Path, help="Snakemake's log of the local run, to compare job sets")
    ap.add_argument("--local-rules",
                    help="comma-separated rules that run on the submitting host (default: all "
                         "and the workflow's `localrule: True` rules)")
    args = ap.parse_args(argv)
    local_ok = ({r for r in args.local_rules.split(",") if r} if args.local_rules is not None
                else {"all"} | declared_local_rules())
    problems = []

    text = args.slurm_log.read_text(errors="replace")
    m = RUN_ID.search(text)
    if not m:
        print(f"check_slurm_jobs: no 'SLURM run ID' in {args.slurm_log}: the run did not use the "
              "SLURM executor (is a workflow profile, profiles/default, setting 'executor: local'?)")
        return 1
    run_id = m.group(1)
    planned = job_stats(text)
    blocks = rule_blocks(text)
    subs = SUBMITTED.findall(text)  # (Snakemake job number or group id, SLURM id, log)

    ran_local = Counter(rule for rule, _, local in blocks.values() if local)
    for rule, n in sorted(ran_local.items()):
        if rule not in local_ok:
            problems.append(f"{n} job(s) of rule {rule} ran on the submitting host, not through SLURM")
    finished = {(int(j), r) for j, r in FINISHED.findall(text)}
    done_local = Counter(rule for j, (rule, _, local) in blocks.items()
                         if local and (j, rule) in finished)

    # the cluster's record of this run
    comp = {}
    for line in run(["sacct", "--completion", "-X", "--parsable2", "--noheader",
                     "-o", "JobID,JobName,State,ExitCode,NodeList,Start,End,Elapsed"]).splitlines():
        f = line.split("|")
        if len(f) >= 8 and f[1] == run_id:
            comp[f[0]] = {"state": f[2], "exit": f[3], "node": f[4], "start": f[5], "end": f[6],
                          "elapsed": f[7]}
    comments = {}
    try:
        for line in run(["squeue", "--states=all", "-h", "-n", run_id, "-o", "%i|%k"]).splitlines():
            jid, _, comment = line.partition("|")
            comments[jid.strip()] = comment.strip()
    except (subprocess.SubprocessError, OSError):
        pass
    nodes = set(run(["sinfo", "-h", "-N", "-o", "%N"]).split())

    rows, submitted, got = [], Counter(), Counter()
    for sm_id, slurm_id, log in subs:
        c = comp.get(slurm_id)
        if c is None:
            problems.append(f"SLURM job {slurm_id} (Snakemake job {sm_id}) is not in the completion log")
            c = {"state": "?", "exit": "?", "node": "?", "start": "", "end": "", "elapsed": ""}
        elif c["state"] != "COMPLETED" or c["exit"] != "0:0":
            problems.append(f"SLURM job {slurm_id} (Snakemake job {sm_id}): {c['state']} exit {c['exit']}")
        elif c["node"] not in nodes:
            problems.append(f"SLURM job {slurm_id} ran on {c['node']!r}, not a node of this cluster")
        log = Path(log)
        if not log.is_file():
            problems.append(f"SLURM job {slurm_id}: its log {log} is missing (run with "
                            "--hklflow-slurm-keep-successful-logs)")
            continue
        members = jobs_of_slurm_log(log)
        if not members:
            problems.append(f"SLURM job {slurm_id}: its log {log} shows no Snakemake job")
        if sm_id.isdigit():  # one job (a group job has an id of letters and digits)
            rule = blocks.get(int(sm_id), ("?",))[0]
            if [m[0] for m in members] != [rule]:
                problems.append(f"SLURM job {slurm_id} was submitted for {rule} (Snakemake job "
                                f"{sm_id}) but its log shows {[m[0] for m in members]}")
        for rule, wildcards, finished in members:
            submitted[rule] += 1
            got[(rule, wildcards)] += 1
            if not finished:
                problems.append(f"SLURM job {slurm_id}: {rule} {wildcards} did not finish")
            rows.append((int(slurm_id), rule, wildcards, c, comments.get(slurm_id, "")))
    extra = set(comp) - {s for _, s, _ in subs}
    if extra:
        problems.append(f"the cluster ran job(s) of this run that Snakemake did not report: {sorted(extra)}")

    for rule, n in sorted(planned.items()):
        if rule in local_ok:
            if rule != "all" and done_local[rule] < n:
                problems.append(f"rule {rule}: {n} job(s) planned, {done_local[rule]} finished "
                                "on the submitting host")
            continue
        if submitted[rule] < n:
            problems.append(f"rule {rule}: {n} job(s) planned, {submitted[rule]} ran in SLURM jobs")
    if not subs:
        problems.append("no job was submitted to SLURM")
    for (r, w), n in sorted(got.items()):
        if n > 1:
            problems.append(f"{r} {w} ran {n} times")

    if args.local_log:
        lblocks = rule_blocks(args.local_log.read_text(errors="replace"))
        want = Counter((r, w) for r, w, _ in lblocks.values() if r not in local_ok)
        want_local = {(r, w) for r, w, _ in lblocks.values() if r in local_ok}
        got_local = {(r, w) for r, w, local in blocks.values() if local and r in local_ok}
        for r, w in sorted(want_local ^ got_local):
            problems.append(f"local rule {r} {w} ran in only one of the two runs")
        if set(want) != set(got):
            for r, w in sorted(set(want) - set(got)):
                problems.append(f"ran locally but not through SLURM: {r} {w}")
            for r, w in sorted(set(got) - set(want)):
                problems.append(f"ran through SLURM but not locally: {r} {w}")

    print(f"== SLURM run {run_id}: {len(subs)} SLURM jobs submitted ({sum(got.values())} "
          f"Snakemake jobs in them), {len(comp)} in the cluster's completion log "
          "(sacct --completion)")
    print(f"   {'jobid':>6}  {'rule':<20} {'state':<10} {'exit':<5} {'node':<5} {'start':<19}  "
          f"{'elapsed':<8}  wildcards")
    for jid, rule, wildcards, c, _comment in sorted(rows):
        print(f"   {jid:>6}  {rule:<20} {c['state']:<10} {c['exit']:<5} {c['node']:<5} "
              f"{c['start']:<19}  {c['elapsed']:<8}  {wildcards}")
    per_rule = ", ".join(f"{r} {n}" for r, n in sorted(submitted.items()))
    print(f"== per rule: {per_rule}; run on the submitting host: "
          f"{', '.join(f'{r} {n}' for r, n in sorted(ran_local.items())) or 'nothing'}")
    if problems:
        print(f"== {len(problems)} PROBLEMS:")
        for p in problems:
            print(f"   {p}")
        return 1
    print("== every job went through SLURM and completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
