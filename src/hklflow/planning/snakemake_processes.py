"""Which Snakemake processes on this machine work in an experiment directory.

Snakemake's lock (`.snakemake/locks`) does not say whether its owner still runs.  Before
hklflow removes it (`--unlock`), it asks here: the lock is a killed run's only when no
Snakemake on this machine works in the directory.  A live run must never be taken for a
dead one, so whatever cannot be read counts as holding the directory.

Read from /proc: a process is a Snakemake when its command line runs `snakemake` (the
script, or `python -m snakemake`), and it works in the directory when its working directory
is the directory (Snakemake moves into its --directory before it takes the lock; so do the
Snakemakes that run its jobs) or its --directory names it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
COMMAND_SHOWN = 200  # characters of a command line shown (Snakemake's run to thousands)


@dataclass(frozen=True)
class SnakemakeProcess:
    pid: int
    command: str

    def __str__(self) -> str:
        command = self.command
        if len(command) > COMMAND_SHOWN:
            command = command[:COMMAND_SHOWN] + " ..."
        return f"pid {self.pid}: {command}"


def _is_snakemake(argv: list[str]) -> bool:
    # (the interpreter and its options come first: `python -u -m snakemake`)
    for i, arg in enumerate(argv[:4]):
        if os.path.basename(arg) == "snakemake":
            return True
        if arg == "-m" and argv[i + 1:i + 2] == ["snakemake"]:
            return True
    return False


def _directory_named(argv: list[str]) -> str | None:
    """The --directory (-d) a Snakemake command line gives, as written."""
    for i, arg in enumerate(argv):
        if arg in ("--directory", "-d") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--directory="):
            return arg.split("=", 1)[1]
    return None


def holders(directory) -> list[SnakemakeProcess] | None:
    """The Snakemake processes on this machine that work in `directory`, oldest first; None
    when this machine's processes cannot be listed (no /proc): then no lock may be taken
    for a killed run's."""
    target = Path(directory).resolve()
    try:
        pids = sorted(int(name) for name in os.listdir(PROC) if name.isdigit())
    except OSError:
        return None
    found = []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            argv = (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace")
        except OSError:  # gone meanwhile, or hidden (then it is another user's)
            continue
        argv = argv.rstrip("\0").split("\0")
        if not _is_snakemake(argv):
            continue
        try:
            cwd = Path(os.readlink(PROC / str(pid) / "cwd"))
        except FileNotFoundError:  # gone meanwhile
            continue
        except OSError:  # another user's: only its command line can tell
            cwd = None
        named = _directory_named(argv)
        if named is not None and not Path(named).is_absolute():
            named = str(cwd / named) if cwd is not None else None
        if cwd is None and named is None:
            holding = True  # cannot tell: taken as holding it
        else:
            holding = any(p is not None and _same(Path(p), target) for p in (cwd, named))
        if holding:
            found.append(SnakemakeProcess(pid, " ".join(argv)))
    return found


def _same(path: Path, target: Path) -> bool:
    try:
        return path.resolve() == target
    except OSError:
        return False
