"""GPU telemetry of one stage: utilisation, memory and energy while it runs.

A daemon thread samples the stage's GPUs every ``interval_s``; energy is
read from NVML's cumulative counter at start and stop (REFERENCE §8), which
is exact where sampling power would be an estimate. The scheduler creates a
monitor only for stages that hold GPUs, so CPU-only stages cost nothing.
"""

from __future__ import annotations

import logging
import threading
import time

from trainops.gpu_runners.devices import GpuProbe, GpuSample
from trainops.models import GpuUsage

log = logging.getLogger(__name__)


class GpuMonitor:
    """Samples ``uuids`` between ``start()`` and ``stop()``; one use per stage execution."""

    def __init__(self, probe: GpuProbe, uuids: tuple[str, ...], interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"a sampling interval must be positive, not {interval_s}")
        self.probe = probe
        self.uuids = uuids
        self.interval_s = interval_s
        self._rounds: list[tuple[GpuSample, ...]] = []
        self._energy_start: list[int | None] = []
        self._started_at: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"GpuMonitor({list(self.uuids)!r}, every {self.interval_s}s)"

    def start(self) -> None:
        """Read the energy counters, take a first sample and start sampling."""
        if self._started_at is not None:
            raise RuntimeError("a GpuMonitor is started once")
        self._started_at = time.monotonic()
        self._energy_start = [self.probe.energy_mj(u) for u in self.uuids]
        self._take_sample()
        self._thread = threading.Thread(
            target=self._sample_until_stopped, name="gpu-monitor", daemon=True
        )
        self._thread.start()

    def stop(self) -> GpuUsage:
        """Stop sampling, take a last sample and sum up the stage's GPU use.

        Sampling at start and at stop means even a stage shorter than one
        interval has readings.
        """
        if self._started_at is None or self._thread is None:
            raise RuntimeError("GpuMonitor.stop() before start()")
        self._stopping.set()
        self._thread.join()
        self._take_sample()
        wall_s = time.monotonic() - self._started_at
        energy_end = [self.probe.energy_mj(u) for u in self.uuids]
        return GpuUsage(
            uuids=self.uuids,
            gpu_seconds=wall_s * len(self.uuids),
            util_mean=self._util_mean(),
            mem_peak_bytes=self._mem_peak(),
            energy_j=_energy_j(self._energy_start, energy_end),
        )

    def _sample_until_stopped(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self._take_sample()

    def _take_sample(self) -> None:
        try:
            self._rounds.append(tuple(self.probe.sample(u) for u in self.uuids))
        except Exception:  # a probe must not raise; if one does, lose a sample, not the stage
            log.exception("sampling GPUs %s", ", ".join(self.uuids))

    def _util_mean(self) -> float | None:
        """Mean over every readable (sample, GPU) pair."""
        values = [s.util_percent for r in self._rounds for s in r if s.util_percent is not None]
        return sum(values) / len(values) if values else None

    def _mem_peak(self) -> int | None:
        """The highest memory in use at one moment, summed over the stage's GPUs.

        Summed per sample rather than a per-GPU maximum added up, so the
        figure is memory the stage really held at once (as ``GpuUsage`` says:
        summed over its GPUs). GPUs unreadable in a sample add nothing.
        """
        peaks = [
            sum(s.mem_used_bytes for s in r if s.mem_used_bytes is not None)
            for r in self._rounds
            if any(s.mem_used_bytes is not None for s in r)
        ]
        return max(peaks) if peaks else None


def _energy_j(start: list[int | None], end: list[int | None]) -> float | None:
    """Joules used between the two readings, or None when any GPU's counter is unreadable.

    A partial sum would under-report without saying so; a counter that went
    backwards (the driver reloaded) makes the figure meaningless too.
    """
    total_mj = 0
    for before, after in zip(start, end, strict=True):
        if before is None or after is None or after < before:
            return None
        total_mj += after - before
    return total_mj / 1000
