#!/usr/bin/env python3
"""Check that every job of a Snakemake run went through SLURM, from both sides.

    check_slurm_jobs.py SLURM_RUN_LOG [--local-log LOCAL_RUN_LOG] [--local-rules all]

Snakemake's side (its log of the run through `--profile profiles/slurm`): the jobs it
planned (the job-stats table, per rule), the ones it ran locally ("localrule ..."), each
"Job N has been submitted with SLURM jobid M" and its rule and wildcards.
The cluster's side: `sacct --completion` (slurmctld's job-completion log; no accounting
database needed) lists the jobs of the run (their SLURM job name is the plugin's run id)
with state, exit code, node and times; `squeue --states=all` adds the plugin's job comment
(rule and wildcards) while the jobs are younger than MinJobAge.

Fails unless: every planned job but the local rules (`all`, which runs nothing) was
submitted; every submission is in the completion log, COMPLETED with exit code 0:0, on a
node of the cluster; the cluster ran no other job of that run; and, with --local-log, the
(rule, wildcards) of the SLURM run are exactly those of the local run.  Prints the list.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

RUN_ID = re.compile(r"^SLURM run ID: (\S+)", re.M)
SUBMITTED = re.compile(r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.*)\)\.?$", re.M)
RULE_HEAD = re.compile(r"^(local)?rule (\w+):$")


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


def rule_blocks(text: str) -> dict:
    """Snakemake jobid -> (rule, wildcards, local?) from the 'rule X:' blocks of a log."""
    jobs, cur = {}, None
    for line in text.splitlines():
        m = RULE_HEAD.match(line)
        if m:
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
            if "jobid" in cur:
                jobs[cur["jobid"]] = (cur["rule"], cur["wildcards"], cur["local"])
            cur = None
    if cur is not None and "jobid" in cur:
        jobs[cur["jobid"]] = (cur["rule"], cur["wildcards"], cur["local"])
    return jobs


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("slurm_log", type=Path, help="Snakemake's log of the run through SLURM")
    ap.add_argument("--local-log", type=Path, help="Snakemake's log of the local run, to compare job sets")
    ap.add_argument("--local-rules", default="all",
                    help="comma-separated rules allowed to run on the submitting host (default: all)")
    args = ap.parse_args(argv)
    local_ok = {r for r in args.local_rules.split(",") if r}
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
    subs = [(int(a), b, c) for a, b, c in SUBMITTED.findall(text)]

    ran_local = Counter(rule for rule, _, local in blocks.values() if local)
    for rule, n in sorted(ran_local.items()):
        if rule not in local_ok:
            problems.append(f"{n} job(s) of rule {rule} ran on the submitting host, not through SLURM")

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

    rows, submitted = [], Counter()
    for sm_id, slurm_id, log in subs:
        rule, wildcards, _ = blocks.get(sm_id, ("?", "", False))
        submitted[rule] += 1
        c = comp.get(slurm_id)
        if c is None:
            problems.append(f"SLURM job {slurm_id} ({rule} {wildcards}) is not in the completion log")
            c = {"state": "?", "exit": "?", "node": "?", "start": "", "end": "", "elapsed": ""}
        elif c["state"] != "COMPLETED" or c["exit"] != "0:0":
            problems.append(f"SLURM job {slurm_id} ({rule} {wildcards}): {c['state']} exit {c['exit']}")
        elif c["node"] not in nodes:
            problems.append(f"SLURM job {slurm_id} ran on {c['node']!r}, not a node of this cluster")
        rows.append((int(slurm_id), rule, wildcards, c, comments.get(slurm_id, "")))
    extra = set(comp) - {s for _, s, _ in subs}
    if extra:
        problems.append(f"the cluster ran job(s) of this run that Snakemake did not report: {sorted(extra)}")

    for rule, n in sorted(planned.items()):
        if rule in local_ok:
            continue
        if submitted[rule] < n:
            problems.append(f"rule {rule}: {n} job(s) planned, {submitted[rule]} submitted to SLURM")
    if not subs:
        problems.append("no job was submitted to SLURM")

    if args.local_log:
        lblocks = rule_blocks(args.local_log.read_text(errors="replace"))
        want = Counter((r, w) for r, w, _ in lblocks.values() if r not in local_ok)
        got = Counter((r, w) for r, w, _ in (blocks[i] for i, _, _ in subs if i in blocks))
        if set(want) != set(got):
            for r, w in sorted(set(want) - set(got)):
                problems.append(f"ran locally but not through SLURM: {r} {w}")
            for r, w in sorted(set(got) - set(want)):
                problems.append(f"ran through SLURM but not locally: {r} {w}")

    print(f"== SLURM run {run_id}: {len(subs)} jobs submitted, {len(comp)} in the cluster's "
          f"completion log (sacct --completion)")
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
