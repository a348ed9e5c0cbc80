"""The command's side of warm starts (hklflow.commands.warm_starts: the server): `hklflow
STEP ...` hands its job to the server HKLFLOW_WARM_STARTS names and exits with the status of
the fork that ran it, or runs the step itself where there is no warm start to be had.  Only
the standard library: the command imports nothing else before it knows.

`python -m hklflow.commands.warm_client snakemake ARGS` does the same for a Snakemake run
(hklflow watch's runs: Snakemake's own imports are most of a small run's start), and runs
`python -m snakemake ARGS` in its place where there is no server."""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

WARM_STARTS_ENV = "HKLFLOW_WARM_STARTS"
# set inside a batch system's job (SLURM, PBS/Torque, LSF, SGE, Flux): no warm start there
BATCH_JOB_ENV = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID", "FLUX_JOB_ID")
LENGTH = struct.Struct("!I")
STATUS = struct.Struct("!i")
# the command got SIGINT: the fork gets it too (a Snakemake run stops its jobs and cleans up,
# as it does on Ctrl-C); the command waits on for its status
INTERRUPT = b"i"


def run_warm(argv: list[str], program: str = "hklflow") -> int | None:
    """Run the step of argv (sys.argv: the program, the step, its arguments) in a fork of
    the server HKLFLOW_WARM_STARTS names (program "snakemake": Snakemake with argv[1:]); its
    exit status, or None where there is no warm start to be had (then the caller runs the
    step itself)."""
    path = os.environ.get(WARM_STARTS_ENV)
    if not path or any(os.environ.get(name) for name in BATCH_JOB_ENV):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        payload = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "program": program,
                              "env": dict(os.environ)}).encode()
        socket.send_fds(conn, [LENGTH.pack(len(payload)) + payload], [0, 1, 2])
    except OSError:
        conn.close()
        return None  # (no server, or it went away: this process runs the step)
    # from here the step runs in the fork: this process waits for its status (a step's
    # command stopped: its connection closes, and the fork stops too)
    previous = (signal.signal(signal.SIGINT, lambda *_: _tell(conn, INTERRUPT))
                if program == "snakemake" else None)
    try:
        with conn:
            status = receive(conn, STATUS.size)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if status is None:
        print(f"hklflow: the warm-start server ({path}) went away while it ran "
              f"{program if program != 'hklflow' else ' '.join(argv[1:2])}", file=sys.stderr)
        return 1
    code = STATUS.unpack(status)[0]
    return 128 - code if code < 0 else code  # (killed by signal N: 128 + N, as a shell says)


def _tell(conn: socket.socket, what: bytes) -> None:
    try:
        conn.send(what)
    except OSError:
        pass


def run_snakemake(args: list[str]) -> int:
    """Snakemake with args in a fork of the warm-start server, else in this process's
    place (exec)."""
    status = run_warm(["snakemake", *args], program="snakemake")
    if status is None:
        os.execv(sys.executable, [sys.executable, "-m", "snakemake", *args])
    return status


def receive(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            part = conn.recv(n - len(data))
        except OSError:
            return None
        if not part:
            return None
        data += part
    return data


if __name__ == "__main__":
    if sys.argv[1:2] != ["snakemake"]:
        sys.exit("usage: python -m hklflow.commands.warm_client snakemake [ARGS ...]")
    sys.exit(run_snakemake(sys.argv[2:]))
