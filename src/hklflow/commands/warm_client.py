"""The command's side of warm starts (hklflow.commands.warm_starts: the server): `hklflow
STEP ...` hands its job to the server HKLFLOW_WARM_STARTS names and exits with the status of
the fork that ran it, or runs the step itself where there is no warm start to be had.  Only
the standard library: the command imports nothing else before it knows."""
from __future__ import annotations

import json
import os
import socket
import struct
import sys

WARM_STARTS_ENV = "HKLFLOW_WARM_STARTS"
# set inside a batch system's job (SLURM, PBS/Torque, LSF, SGE, Flux): no warm start there
BATCH_JOB_ENV = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID", "FLUX_JOB_ID")
LENGTH = struct.Struct("!I")
STATUS = struct.Struct("!i")


def run_warm(argv: list[str]) -> int | None:
    """Run the step of argv (sys.argv: the program, the step, its arguments) in a fork of
    the server HKLFLOW_WARM_STARTS names; its exit status, or None where there is no warm
    start to be had (then the caller runs the step itself)."""
    path = os.environ.get(WARM_STARTS_ENV)
    if not path or any(os.environ.get(name) for name in BATCH_JOB_ENV):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        payload = json.dumps({"argv": list(argv), "cwd": os.getcwd(),
                              "env": dict(os.environ)}).encode()
        socket.send_fds(conn, [LENGTH.pack(len(payload)) + payload], [0, 1, 2])
    except OSError:
        conn.close()
        return None  # (no server, or it went away: this process runs the step)
    # from here the step runs in the fork: this process waits for its status
    with conn:
        status = receive(conn, STATUS.size)
    if status is None:
        print(f"hklflow: the warm-start server ({path}) went away while it ran "
              f"{' '.join(argv[1:2])}", file=sys.stderr)
        return 1
    code = STATUS.unpack(status)[0]
    return 128 - code if code < 0 else code  # (killed by signal N: 128 + N, as a shell says)


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
