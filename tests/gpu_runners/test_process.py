from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from trainops.errors import ExecutorError
from trainops.gpu_runners import process
from trainops.gpu_runners.process import ProcessOutcome, run_process

ENV = {"PATH": os.environ["PATH"], "LC_ALL": "C"}


def run(
    tmp_path: Path,
    cmd: str,
    *,
    timeout_s: float | None = 20.0,
    cancel: threading.Event | None = None,
    lines: list[str] | None = None,
    **kwargs: object,
) -> ProcessOutcome:
    return run_process(
        cmd,
        cwd=tmp_path,
        env=ENV,
        log_path=tmp_path / "logs" / "stage.log",
        timeout_s=timeout_s,
        cancel=cancel or threading.Event(),
        on_line=None if lines is None else lines.append,
        **kwargs,  # type: ignore[arg-type]
    )


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone_soon(pid: int, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.01)
    return False


def read_pid(path: Path) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        time.sleep(0.01)
    raise AssertionError(f"{path} never got a pid")


def test_success_output_log_and_lines(tmp_path: Path) -> None:
    lines: list[str] = []
    outcome = run(tmp_path, "echo one; echo two >&2; printf 'three'", lines=lines)
    assert outcome.exit_code == 0
    assert not outcome.timed_out and not outcome.cancelled
    assert lines == ["one", "two", "three"]
    assert outcome.tail == "one\ntwo\nthree"
    assert (tmp_path / "logs" / "stage.log").read_bytes() == b"one\ntwo\nthree"


@pytest.mark.parametrize(("cmd", "code"), [("exit 3", 3), ("false", 1), ("kill -9 $$", -9)])
def test_exit_codes(tmp_path: Path, cmd: str, code: int) -> None:
    assert run(tmp_path, cmd).exit_code == code


def test_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    outcome = run(tmp_path, "for i in $(seq 1 100); do echo line $i; done", tail_lines=3)
    assert outcome.tail == "line 98\nline 99\nline 100"
    assert (tmp_path / "logs" / "stage.log").read_text().count("\n") == 100


def test_log_is_raw_and_lines_are_decoded_with_replacement(tmp_path: Path) -> None:
    lines: list[str] = []
    run(tmp_path, r"printf 'caf\303\251\n\377\r\n'", lines=lines)
    assert (tmp_path / "logs" / "stage.log").read_bytes() == b"caf\xc3\xa9\n\xff\r\n"
    assert lines == ["café", "\ufffd"]


def test_very_long_lines_come_in_pieces(tmp_path: Path) -> None:
    lines: list[str] = []
    run(tmp_path, "head -c 200000 /dev/zero | tr '\\0' a", lines=lines)
    assert "".join(lines) == "a" * 200000
    assert max(map(len, lines)) <= 64 * 1024


def test_log_is_appended_across_attempts(tmp_path: Path) -> None:
    run(tmp_path, "echo first")
    run(tmp_path, "echo second")
    assert (tmp_path / "logs" / "stage.log").read_text() == "first\nsecond\n"


def test_env_cwd_and_no_stdin(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("here")
    lines: list[str] = []
    outcome = run_process(
        "echo $GREETING; cat marker; echo; cat; echo end",  # cat on DEVNULL: no hang
        cwd=tmp_path,
        env={**ENV, "GREETING": "hi"},
        log_path=tmp_path / "log",
        timeout_s=10,
        cancel=threading.Event(),
        on_line=lines.append,
    )
    assert outcome.exit_code == 0
    assert lines == ["hi", "here", "end"]


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    cmd = "sh -c 'sleep 60 & echo $! > grandchild.pid; wait' & wait"
    started = time.monotonic()
    outcome = run(tmp_path, cmd, timeout_s=1.0, kill_grace_s=5.0)
    assert outcome.timed_out and not outcome.cancelled
    assert outcome.exit_code == -signal.SIGTERM
    assert time.monotonic() - started < 3.0  # SIGTERM was enough: no grace wait
    assert gone_soon(read_pid(tmp_path / "grandchild.pid"))


def cancel_when(ready: str, cancel: threading.Event, at: list[float]) -> Callable[[str], None]:
    """A line listener that cancels from another thread once ``ready`` was printed."""

    def listen(line: str) -> None:
        if line == ready:
            at.append(time.monotonic())
            threading.Thread(target=cancel.set).start()

    return listen


def test_sigterm_ignored_gets_sigkill_after_the_grace(tmp_path: Path) -> None:
    cancel, at = threading.Event(), []
    outcome = run_process(
        "trap '' TERM; echo ready; sleep 60",
        cwd=tmp_path,
        env=ENV,
        log_path=tmp_path / "log",
        timeout_s=None,
        cancel=cancel,
        on_line=cancel_when("ready", cancel, at),
        kill_grace_s=0.3,
    )
    assert outcome.cancelled
    assert outcome.exit_code == -signal.SIGKILL
    assert 0.3 <= time.monotonic() - at[0] < 2.0


def test_cancel_from_another_thread(tmp_path: Path) -> None:
    cancel, at = threading.Event(), []
    outcome = run_process(
        "echo waiting; sleep 60",
        cwd=tmp_path,
        env=ENV,
        log_path=tmp_path / "log",
        timeout_s=None,
        cancel=cancel,
        on_line=cancel_when("waiting", cancel, at),
    )
    assert outcome.cancelled and not outcome.timed_out
    assert outcome.exit_code == -signal.SIGTERM
    assert outcome.tail == "waiting"
    assert time.monotonic() - at[0] < 1.0


def test_cancelled_before_start_never_starts(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    outcome = run(tmp_path, "touch started", cancel=cancel)
    assert outcome.exit_code is None and outcome.cancelled
    assert not (tmp_path / "started").exists()


def test_background_child_is_killed_after_a_normal_exit(tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = run(tmp_path, "sleep 60 & echo $! > bg.pid; echo done")
    assert outcome.exit_code == 0 and outcome.tail == "done"
    assert time.monotonic() - started < 2.0  # not held up by the child keeping the pipe
    assert gone_soon(read_pid(tmp_path / "bg.pid"))


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid(1)")
def test_a_process_that_left_the_group_does_not_hold_us_up(tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = run(tmp_path, "setsid -f sh -c 'echo $$ > escaped.pid; exec sleep 30'; echo ok")
    try:
        assert outcome.exit_code == 0 and outcome.tail.endswith("ok")
        assert time.monotonic() - started < 3.0
    finally:
        os.kill(read_pid(tmp_path / "escaped.pid"), signal.SIGKILL)


def test_a_failing_line_listener_does_not_stop_the_stage(tmp_path: Path) -> None:
    seen: list[str] = []

    def listener(line: str) -> None:
        seen.append(line)
        raise RuntimeError("observer broke")

    outcome = run_process(
        "seq 1 5000",
        cwd=tmp_path,
        env=ENV,
        log_path=tmp_path / "log",
        timeout_s=10,
        cancel=threading.Event(),
        on_line=listener,
    )
    assert outcome.exit_code == 0 and outcome.tail.endswith("5000")
    assert seen == ["1"]
    assert (tmp_path / "log").read_text().count("\n") == 5000


def test_missing_cwd_is_an_executor_error(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="does not exist"):
        run_process(
            "true",
            cwd=tmp_path / "nope",
            env=ENV,
            log_path=tmp_path / "log",
            timeout_s=None,
            cancel=threading.Event(),
        )


def test_missing_shell_is_an_executor_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "_SHELL", str(tmp_path / "no-sh"))
    with pytest.raises(ExecutorError, match="no-sh") as caught:
        run(tmp_path, "true")
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_overhead_over_a_bare_subprocess_is_small(tmp_path: Path) -> None:
    bare, ours = [], []
    for _ in range(15):
        t = time.perf_counter()
        subprocess.run(["/bin/sh", "-c", "true"], check=True)
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        run(tmp_path, "true")
        ours.append(time.perf_counter() - t)
    assert statistics.median(ours) - statistics.median(bare) < 0.05
