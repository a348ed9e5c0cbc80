"""Warm starts of the workflow's step jobs: a server that has imported what the steps import
forks a process for each job, instead of every job starting Python and its imports anew.

Every job is `hklflow STEP ...`, a new interpreter that imports numpy, h5py, numba,
matplotlib and the step's modules before the step starts (bench/startup.py: ~0.5 CPU-s a
job), which is most of what the small jobs of hklflow watch's previews cost.  Where
HKLFLOW_WARM_STARTS names a server's socket (hklflow watch starts one for its runs on this
machine: live.warm_starts), the command sends its job (arguments, working directory,
environment, standard streams) to the server, which forks; the fork runs the step as a new
process would (cli.main, with the same arguments and environment) and the command exits
with its status.  The command runs the step itself where the server cannot be reached, and
inside a batch system's job (its job must do its own work, in its own allocation).

The watcher's Snakemake runs start the same way (`python -m hklflow.commands.warm_client
snakemake ...`: the server has imported Snakemake too, most of a small run's own start;
bench/README.md, live.py).

A fork ends with its command: when the command is stopped (Snakemake stopping a job, Ctrl-C)
its connection closes and the fork gets SIGTERM, which makes a step remove its outputs; a
Snakemake run's command passes SIGINT on, and its fork stops its jobs as on Ctrl-C.
The server reaps every fork, so their CPU time counts among its children's
(`hklflow watch` adds it to each run's; bench/live.py measures the whole tree), and logs a
line for each with its CPU.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import pkgutil
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from .warm_client import INTERRUPT, LENGTH, STATUS, WARM_STARTS_ENV, receive

# the packages whose modules the server imports: what the steps import, at once or lazily
PRELOAD = ("hklflow.codec", "hklflow.steps", "hklflow.pictures", "hklflow.algorithms",
           "hklflow.files", "hklflow.model")


SOCKET_FOLDER = "hklflow-warm-"  # (the prefix of the server's folder in the temporary one)


# ---- the watcher's side ----------------------------------------------------------------------
class WarmStartServer:
    """A server for the runs of this process (hklflow watch): started and ready, its
    socket (`path`, for HKLFLOW_WARM_STARTS), its CPU so far, stopped."""

    def __init__(self, log_file):
        self.dir = tempfile.mkdtemp(prefix=SOCKET_FOLDER)  # (a socket's path: short)
        self.path = os.path.join(self.dir, "socket")
        with open(log_file, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hklflow.commands.warm_starts", self.path,
                 "--parent", str(os.getpid())], stdout=subprocess.PIPE, stderr=log,
                env=dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE"))
        ready = self.proc.stdout.readline().strip() == b"ready"
        if not ready:
            self.stop()
            raise OSError(f"the warm-start server did not start (its log: {log_file})")

    def cpu_seconds(self) -> float:
        return server_cpu_seconds(self.path) or 0.0

    def stop(self) -> None:
        """End it (its forks get SIGTERM) and wait for it: its CPU and its forks' count
        among this process's children's."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def server_cpu_seconds(path: str | None) -> float | None:
    """CPU seconds of the server and of the forks it reaped, so far (None: no answer)."""
    if not path:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(path)
            payload = json.dumps({"cpu": True}).encode()
            conn.sendall(LENGTH.pack(len(payload)) + payload)
            size = receive(conn, LENGTH.size)
            text = receive(conn, LENGTH.unpack(size)[0]) if size else None
        return float(json.loads(text)["cpu_s"]) if text else None
    except (OSError, ValueError, KeyError):
        return None


# ---- the server ------------------------------------------------------------------------------
def preload() -> None:
    """Import what the steps import, before any fork: the command line, every module of
    PRELOAD's packages, matplotlib's drawing without a screen; and load the codec
    HKLFLOW_CODEC chooses (the compiled one: its kernels loaded and self-tested once, not
    in every job that reads frames or volumes; none of them starts a thread)."""
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # (as cli.main, before numpy loads)
    os.environ["MKL_NUM_THREADS"] = "1"
    importlib.import_module("hklflow.commands.cli")
    for name in PRELOAD:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            try:
                importlib.import_module(info.name)
            except ImportError:  # (an optional dependency missing: its step imports it)
                pass
    importlib.import_module("matplotlib.backends.backend_agg")
    try:  # (hklflow watch's Snakemake runs: warm_client.run_snakemake)
        importlib.import_module("snakemake.cli")
    except ImportError:
        pass
    try:
        importlib.import_module("hklflow.codec").active_codec()
    except Exception:  # noqa: BLE001 - (a job that needs it says why, as without a server)
        pass


def _cpu_s() -> float:
    own, children = (resource.getrusage(resource.RUSAGE_SELF),
                     resource.getrusage(resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Server:
    """Accepts jobs on a Unix socket and forks one process for each (see the module)."""

    def __init__(self, path: str, step_command, parent: int | None = None):
        # step_command(): cli.main, which reads the step and its arguments from sys.argv
        self.path, self.step_command, self.parent = path, step_command, parent
        self.forks: dict[int, socket.socket] = {}  # pid -> its command's connection
        self.jobs: dict[int, tuple[str, float]] = {}  # pid -> (what it is, when it began)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # (wakes the loop: a fork ended)
        signal.signal(signal.SIGTERM, self._stop)
        # (Ctrl-C reaches the whole process group: the forks stop themselves, and the
        # watcher stops the server with SIGTERM once its run has ended)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.running = True

    def _stop(self, *_):
        self.running = False

    def serve(self) -> None:
        try:
            while self.running:
                # (every few seconds: the watcher that started it still there?)
                for key, _ in self.selector.select(timeout=5.0):
                    if key.fileobj is self.listener:
                        self._accept()
                    else:
                        while True:
                            try:
                                if not os.read(self.wake_r, 512):
                                    break
                            except BlockingIOError:
                                break
                self._reap()
                if self.parent is not None and os.getppid() != self.parent:
                    break
        finally:
            for pid in list(self.forks):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            while self.forks:
                pid, status, usage = os.wait4(-1, 0)
                self._answer(pid, status, usage)
            self.listener.close()
            try:
                os.unlink(self.path)
                # (its folder from WarmStartServer: gone too when the watcher ended without
                # stopping it)
                if os.path.basename(os.path.dirname(self.path)).startswith(SOCKET_FOLDER):
                    os.rmdir(os.path.dirname(self.path))
            except OSError:
                pass

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        try:
            data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
            size = LENGTH.unpack(data[:LENGTH.size])[0] if len(data) >= LENGTH.size else 0
            rest = receive(conn, LENGTH.size + size - len(data)) if size + LENGTH.size > len(
                data) else b""
            request = json.loads((data[LENGTH.size:] + (rest or b"")).decode())
        except (OSError, ValueError, struct.error):
            conn.close()
            return
        if request.get("cpu"):
            with conn:
                text = json.dumps({"cpu_s": _cpu_s()}).encode()
                try:
                    conn.sendall(LENGTH.pack(len(text)) + text)
                except OSError:
                    pass
            return
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        what = _job_name(request, fds[1])
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._become_job(conn, fds, request)  # never returns
        for fd in fds:
            os.close(fd)
        self.forks[pid] = conn
        self.jobs[pid] = (what, time.time())

    def _become_job(self, conn, fds, request) -> None:
        status = 1
        try:
            self.selector.close()
            self.listener.close()
            for other in self.forks.values():  # (the other jobs' connections are theirs)
                other.close()
            signal.set_wakeup_fd(-1)
            os.close(self.wake_r)
            os.close(self.wake_w)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            snakemake = request.get("program") == "snakemake"
            if not snakemake:  # (a step runs no other; a Snakemake run's jobs start warm)
                os.environ.pop(WARM_STARTS_ENV, None)
            sys.argv = list(request["argv"])
            # the command gone (stopped): this job stops as it would (SIGTERM)
            threading.Thread(target=_end_with, args=(conn, threading.get_ident()),
                             daemon=True).start()
            if snakemake:
                from snakemake.cli import main as snakemake_main

                snakemake_main(sys.argv[1:])  # (it ends with sys.exit)
            status = self.step_command()
        except SystemExit as exc:  # (sys.exit(): 0; a message: printed, 1, as Python does)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
            status = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - a fork never returns into the server
            import traceback

            traceback.print_exc()
            status = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status if isinstance(status, int) else 1)

    def _reap(self) -> None:
        while self.forks:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._answer(pid, status, usage)

    def _answer(self, pid: int, status: int, usage) -> None:
        conn = self.forks.pop(pid, None)
        if conn is None:
            return
        what, began = self.jobs.pop(pid)
        # (one line a job: what each costs, which bench/live.py sums per rule)
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} job {what}: rc "
              f"{os.waitstatus_to_exitcode(status)}, cpu "
              f"{usage.ru_utime + usage.ru_stime:.2f} s, wall {time.time() - began:.2f} s",
              file=sys.stderr, flush=True)
        with conn:
            try:
                conn.sendall(STATUS.pack(os.waitstatus_to_exitcode(status)))
            except OSError:
                pass  # (its command is gone)


def _job_name(request: dict, stdout_fd: int) -> str:
    """A job's name in the log: where its output goes (a Snakemake job's log,
    logs/RULE/...), or its step; "snakemake": a Snakemake run."""
    if request.get("program") == "snakemake":
        return "snakemake"
    try:
        target = os.readlink(f"/proc/self/fd/{stdout_fd}")
    except OSError:  # (no /proc)
        target = ""
    if target.startswith(request.get("cwd", "") + os.sep):
        return os.path.relpath(target, request["cwd"])
    argv = request.get("argv") or []
    return f"step {argv[1] if len(argv) > 1 else '?'}"


# how long a fork whose command is gone may take to stop (remove its outputs) before it is
# ended without (s)
STOP_GRACE_SECONDS = 60


def _end_with(conn: socket.socket, main_thread: int) -> None:
    """In a fork: once its command's connection closes, SIGTERM to the thread that runs the
    step (a signal to the process may reach this thread instead, and leave the step blocked
    in a system call), then the end after STOP_GRACE_SECONDS; SIGINT each time the command
    tells of one (a Snakemake run's: warm_client.run_warm)."""
    try:
        while (told := conn.recv(1)):
            if told == INTERRUPT:
                signal.pthread_kill(main_thread, signal.SIGINT)
    except OSError:
        pass
    signal.pthread_kill(main_thread, signal.SIGTERM)
    time.sleep(STOP_GRACE_SECONDS)
    os._exit(128 + signal.SIGTERM)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hklflow.commands.warm_starts",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("socket", help="the Unix socket to listen on (it must not exist)")
    p.add_argument("--parent", type=int, default=None,
                   help="end when this process (the one that started it) has ended")
    args = p.parse_args(argv)
    # what the imports made lives as long as the server, and stays out of every fork's
    # collections (gc.freeze): their pages stay shared with the server's
    gc.disable()
    preload()
    gc.freeze()
    gc.enable()
    from .cli import main as step_command

    server = Server(args.socket, step_command, args.parent)
    print("ready", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
