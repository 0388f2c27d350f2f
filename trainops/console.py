"""Showing runs to people in a terminal: live progress on stderr, tables at the end.

Plain text with a few Unicode marks; colour only on a TTY. Nothing here is
needed by library users, and nothing heavy is imported.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from trainops.models import Plan, RunResult, StageResult, StageStatus

_MARK = {
    StageStatus.SUCCEEDED: "✔",
    StageStatus.FAILED: "✘",
    StageStatus.SKIPPED: "–",
    StageStatus.CANCELLED: "■",
    StageStatus.ERRORED: "!",
}
_COLOUR = {"green": "32", "red": "31", "yellow": "33", "dim": "2", "bold": "1"}


class TerminalObserver:
    """Prints progress to ``stream``; stage output too when ``stream_logs``."""

    def __init__(self, stream: TextIO | None = None, *, stream_logs: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.stream_logs = self.tty if stream_logs is None else stream_logs
        self._lock = threading.Lock()
        self._width = 12
        self._t0 = time.monotonic()

    def set_stages(self, names: Sequence[str]) -> None:
        self._width = max([12, *(len(n) for n in names)])

    def _c(self, text: str, colour: str) -> str:
        return f"\033[{_COLOUR[colour]}m{text}\033[0m" if self.tty else text

    def _emit(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _clock(self) -> str:
        return self._c(f"{time.monotonic() - self._t0:6.1f}s", "dim")

    def run_message(self, message: str) -> None:
        self._emit(f"{self._clock()}   {message}")

    def stage_waiting(self, stage: str, reason: str) -> None:
        self._emit(f"{self._clock()} ⏳ {stage:<{self._width}} {self._c(reason, 'yellow')}")

    def stage_started(self, stage: str, attempt: int, gpus: tuple[str, ...]) -> None:
        where = f"on {len(gpus)} GPU(s) {', '.join(g[:12] for g in gpus)}" if gpus else "on CPU"
        again = f" (attempt {attempt})" if attempt > 1 else ""
        self._emit(f"{self._clock()} ▶ {stage:<{self._width}} started {where}{again}")

    def stage_log(self, stage: str, line: str) -> None:
        if self.stream_logs:
            self._emit(f"{self._c(f'{stage:>{self._width + 9}} │', 'dim')} {line}")

    def stage_finished(self, result: StageResult) -> None:
        mark = _MARK[result.status]
        if result.cached:
            text = self._c(f"cached ({result.reason})", "dim")
            mark = "●"
        elif result.status is StageStatus.SUCCEEDED:
            text = self._c(f"succeeded in {result.duration_s:.1f}s", "green")
        else:
            text = self._c(f"{result.status.value}: {result.reason}", "red")
        self._emit(f"{self._clock()} {mark} {result.name:<{self._width}} {text}")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def fmt(cells: Sequence[str]) -> str:
        out = []
        for cell, width in zip(cells, widths, strict=True):
            numeric = cell[:1].isdigit() or cell[:1] == "-" and cell[1:2].isdigit()
            out.append(cell.rjust(width) if numeric else cell.ljust(width))
        return "  ".join(out).rstrip()

    rule = "  ".join("─" * w for w in widths)
    return "\n".join([fmt(headers), rule, *(fmt(r) for r in rows)])


def run_summary(result: RunResult) -> str:
    rows = []
    for s in result.stages:
        rows.append(
            [
                s.name,
                s.status.value,
                "yes" if s.cached else "no",
                f"{s.duration_s:.2f}",
                f"{s.gpu_seconds:.1f}",
                "" if s.energy_j is None else f"{s.energy_j:.0f}",
                (s.reason or "") if not s.cached else f"run {s.cached_from}",
            ]
        )
    lines = [table(["stage", "status", "cached", "time s", "GPU s", "energy J", "note"], rows)]
    if result.metrics:
        lines += [
            "",
            table(
                ["metric", "value"], [[k, f"{v:.6g}"] for k, v in sorted(result.metrics.items())]
            ),
        ]
    failed = result.failed_stage
    if failed is not None:
        lines += ["", f"stage {failed.name!r} failed: {failed.reason}"]
        if failed.log_tail:
            lines += [f"last lines of {failed.log_path}:", failed.log_tail.rstrip()]
    if result.error:
        lines += ["", f"error: {result.error}"]
    ran = len(result.executed)
    tail = f"{ran} of {len(result.stages)} stage(s) executed in {result.duration_s:.2f}s"
    if result.mlflow_run_id:
        tail += f"; MLflow run {result.mlflow_run_id}"
    lines += ["", f"run {result.run_id}: {result.status.value} · {tail}"]
    return "\n".join(lines)


def plan_table(plan: Plan, cached: dict[str, str | None]) -> str:
    """``cached`` maps stage → the run id it would reuse, or None if it must run."""
    rows = []
    for s in plan.stages:
        hit = cached.get(s.name)
        action = f"cached (run {hit})" if hit else ("run" if s.cache else "run (cache: false)")
        gpus = f"{s.gpus}" + (f" × {s.gpu_type}" if s.gpu_type else "") if s.gpus else "-"
        rows.append([s.name, action, gpus, ", ".join(s.needs) or "-", s.cache_key[:12]])
    return table(["stage", "action", "GPUs", "needs", "cache key"], rows)
