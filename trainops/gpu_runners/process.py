"""Run one stage command as its own process group, logged, bounded and stoppable.

The command is the repository's own stage command, run with ``/bin/sh -c``
as DVC runs it. It gets a session (and so a process group) of its own, so
stopping it reaches every process it started: on timeout or cancel the
group gets SIGTERM, then SIGKILL after a grace period; after a normal exit
whatever is left in the group is killed too, so a backgrounded child cannot
keep holding a GPU that the next stage is about to get.

Overhead matters (the budget is 50 ms per stage over a bare subprocess):
the leader's exit is noticed by a thread blocked in ``waitid``, not by
polling with sleeps; only cancel and timeout are polled, every 50 ms.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from trainops.errors import ExecutorError

log = logging.getLogger(__name__)

_SHELL = "/bin/sh"
_TICK_S = 0.05
"""How often cancel and timeout are checked: the most a stop waits to begin."""
_MAX_LINE = 64 * 1024
"""A line longer than this (a progress bar without newlines) is passed on in pieces."""
_DRAIN_S = 1.0
"""The longest output is still read once the process group is gone (escaped daemons)."""


@dataclass(frozen=True)
class ProcessOutcome:
    """How a stage command ended.

    ``exit_code`` follows ``Popen.returncode``: negative for a death by
    signal (``-15`` after a SIGTERM); None only when it never started
    (``cancel`` was already set).
    """

    exit_code: int | None
    timed_out: bool
    cancelled: bool
    duration_s: float
    tail: str
    """The last lines it printed, for a failure report without opening the log."""


def run_process(
    cmd: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    timeout_s: float | None,
    cancel: threading.Event,
    on_line: Callable[[str], None] | None = None,
    kill_grace_s: float = 5.0,
    tail_lines: int = 40,
    pid_file: Path | None = None,
) -> ProcessOutcome:
    """Run ``cmd`` in ``cwd`` until it exits, times out or ``cancel`` is set.

    Its stdout and stderr, merged, are appended raw to ``log_path`` (so
    retries of a stage may share one log) and passed to ``on_line`` line by
    line, decoded as UTF-8 with replacement, from a reader thread.
    Raises ExecutorError when it cannot be started at all.
    """
    if cancel.is_set():
        return ProcessOutcome(None, timed_out=False, cancelled=True, duration_s=0.0, tail="")
    if not cwd.is_dir():
        raise ExecutorError(f"running {cmd!r}: working directory {str(cwd)!r} does not exist")
    log_file = _open_log(log_path, cmd)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [_SHELL, "-c", cmd],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        log_file.close()
        raise ExecutorError(f"running {cmd!r} in {str(cwd)!r} with {_SHELL}: {exc}") from exc
    assert proc.stdout is not None
    if pid_file is not None:
        # For whoever takes the run over if this process dies: see reap_orphans.
        pid_file.write_text(f"{proc.pid}\n")
    reader = _OutputReader(proc.stdout, log_file, on_line, tail_lines)
    reader.start()
    exited = threading.Event()
    threading.Thread(
        target=_await_exit, args=(proc.pid, exited), name=f"wait-{proc.pid}", daemon=True
    ).start()
    timed_out = cancelled = False
    try:
        timed_out, cancelled = _supervise(exited, started, timeout_s, cancel)
        if timed_out or cancelled:
            why = "timed out" if timed_out else "cancelled"
            log.info("stopping %r (pid %d): %s", cmd, proc.pid, why)
            _signal_group(proc.pid, signal.SIGTERM)
            exited.wait(kill_grace_s)
    finally:
        # Whatever is left: children of a leader that exited, or processes that
        # ignored SIGTERM. Until the leader is reaped (just below) its pid, the
        # group's id, cannot be reused, so this reaches its own group only.
        _signal_group(proc.pid, signal.SIGKILL)
        exit_code = proc.wait()
        reader.finish()
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
    return ProcessOutcome(
        exit_code=exit_code,
        timed_out=timed_out,
        cancelled=cancelled,
        duration_s=time.monotonic() - started,
        tail=reader.tail(),
    )


def _open_log(log_path: Path, cmd: str) -> IO[bytes]:
    """The stage log, unbuffered so that ``tail -f`` follows the stage live."""
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return open(log_path, "ab", buffering=0)
    except OSError as exc:
        raise ExecutorError(f"opening the log {str(log_path)!r} of {cmd!r}: {exc}") from exc


def _supervise(
    exited: threading.Event, started: float, timeout_s: float | None, cancel: threading.Event
) -> tuple[bool, bool]:
    """Wait for the leader to exit; ``(timed_out, cancelled)`` if it must be stopped first."""
    deadline = None if timeout_s is None else started + timeout_s
    while True:
        tick = _TICK_S if deadline is None else max(0.0, min(_TICK_S, deadline - time.monotonic()))
        if exited.wait(tick):
            return False, False
        if cancel.is_set():
            return False, True
        if deadline is not None and time.monotonic() >= deadline:
            return True, False


def _await_exit(pid: int, exited: threading.Event) -> None:
    """Block until ``pid`` exits, leaving it unreaped (``WNOWAIT``), then set ``exited``."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass  # reaped already
    finally:
        exited.set()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError) as exc:
        log.debug("signalling process group %d with %s: %s", pgid, sig.name, exc)


class _OutputReader(threading.Thread):
    """Copies the command's output to its log, hands out lines and keeps the tail."""

    def __init__(
        self,
        pipe: IO[bytes],
        log_file: IO[bytes],
        on_line: Callable[[str], None] | None,
        tail_lines: int,
    ) -> None:
        super().__init__(name="stage-output", daemon=True)
        self._pipe = pipe
        self._log_file = log_file
        self._on_line = on_line
        self._tail: collections.deque[str] = collections.deque(maxlen=max(tail_lines, 0))
        self._partial = b""
        self._stop_by: float | None = None

    def run(self) -> None:
        try:
            self._copy()
        except Exception:
            log.exception("reading the output of a stage")
        finally:
            if self._partial:
                self._line(self._partial)
            self._pipe.close()
            self._log_file.close()

    def _copy(self) -> None:
        fd = self._pipe.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            ready = poller.poll(_TICK_S * 1000)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                self._log_file.write(chunk)
                self._split(chunk)
            stop_by = self._stop_by
            # Once the group is dead nothing more can be written, but a process
            # that left the group (setsid) may still hold the pipe open: stop at
            # the first quiet moment rather than wait for its EOF.
            if stop_by is not None and (not ready or time.monotonic() >= stop_by):
                return

    def _split(self, chunk: bytes) -> None:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self._line(line)
        while len(self._partial) > _MAX_LINE:
            self._line(self._partial[:_MAX_LINE])
            self._partial = self._partial[_MAX_LINE:]

    def _line(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        self._tail.append(line)
        if self._on_line is None:
            return
        try:
            self._on_line(line)
        except Exception:
            # A broken listener must not stop the copying: the pipe would fill
            # and block the stage. Stop calling it instead.
            log.exception("passing on a line of stage output; no more lines will be passed")
            self._on_line = None

    def finish(self) -> None:
        """Read what is left, then stop; called once the whole group has been killed."""
        self._stop_by = time.monotonic() + _DRAIN_S
        self.join()

    def tail(self) -> str:
        return "\n".join(self._tail)


def reap_orphans(pid_dir: Path, marker: str) -> list[int]:
    """Kill the process groups of stages whose supervisor died (a SIGKILLed service).

    Stages run in sessions of their own, so they outlive a killed runner and
    would keep writing into a workspace (and using a GPU) that a new attempt
    is about to be given. Each stage left a ``*.pid`` file; a group is killed
    only if its leader still carries ``marker`` in its environment
    (``TRAINOPS_RUN_ID=<run>``), so a recycled pid is never hit. Returns the
    groups killed.
    """
    killed = []
    for pid_file in sorted(pid_dir.glob("*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            continue
        if marker.encode() in environ:
            _signal_group(pid, signal.SIGKILL)
            killed.append(pid)
            log.warning("killed the orphaned stage process group %d (%s)", pid, pid_file.stem)
        pid_file.unlink(missing_ok=True)
    return killed
