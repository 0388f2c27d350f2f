"""An in-memory ``GpuProbe``: GPUs that exist only in the test.

NVML has no wire protocol to fake, so this stands in for ``NvmlProbe``
(STYLE §11): devices, utilisation and memory readings are plain attributes a
test sets; energy grows with time at ``energy_per_s`` joules per second, as
the real counter does, so telemetry is testable; ``busy`` holds the compute
processes a test pretends are running on a device.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable

from trainops.gpu_runners.devices import GpuDevice, GpuSample

A100 = "NVIDIA A100-SXM4-80GB"


def fake_devices(count: int, name: str = A100, *, first_index: int = 0) -> list[GpuDevice]:
    """``count`` devices named ``name`` with made-up UUIDs and 80 GiB each."""
    return [
        GpuDevice(
            index=i,
            uuid=f"GPU-{i:08x}-fake-{hashlib.sha256(name.encode()).hexdigest()[:8]}",
            name=name,
            memory_total_bytes=80 << 30,
        )
        for i in range(first_index, first_index + count)
    ]


class FakeGpuProbe:
    """A ``GpuProbe`` whose GPUs and readings a test controls."""

    def __init__(
        self,
        devices: Iterable[GpuDevice] = (),
        *,
        util: float | None = 50.0,
        mem_used_bytes: int | None = 1 << 30,
        energy_per_s: float | None = 100.0,
        unavailable_reason: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._devices = tuple(sorted(devices, key=lambda d: d.index))
        self.util: dict[str, float | None] = {d.uuid: util for d in self._devices}
        self.mem_used_bytes: dict[str, int | None] = {d.uuid: mem_used_bytes for d in self._devices}
        self.energy_per_s = energy_per_s
        """Joules per second (watts); None makes the energy counter unreadable."""
        self.busy: dict[str, tuple[int, ...]] = {}
        self.samples = 0
        """How many ``sample()`` calls were answered."""
        if not self._devices and unavailable_reason is None:
            unavailable_reason = "no NVIDIA driver found (fake NVML: library not found)"
        self._reason = unavailable_reason
        self._clock = clock
        self._born = clock()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FakeGpuProbe({[d.name for d in self._devices]!r})"

    def devices(self) -> tuple[GpuDevice, ...]:
        return self._devices

    @property
    def unavailable_reason(self) -> str | None:
        return self._reason

    def sample(self, uuid: str) -> GpuSample:
        with self._lock:
            self.samples += 1
        return GpuSample(
            util_percent=self.util.get(uuid), mem_used_bytes=self.mem_used_bytes.get(uuid)
        )

    def energy_mj(self, uuid: str) -> int | None:
        if self.energy_per_s is None or uuid not in self.util:
            return None
        # Starts from a large reading, as a counter since driver load does.
        return 5_000_000 + int((self._clock() - self._born) * self.energy_per_s * 1000)

    def busy_pids(self, uuid: str) -> tuple[int, ...]:
        return self.busy.get(uuid, ())

    def set_busy(self, uuid: str, *pids: int) -> None:
        """Pretend ``pids`` run compute work on ``uuid`` (none: idle again)."""
        self.busy[uuid] = pids
