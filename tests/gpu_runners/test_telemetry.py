from __future__ import annotations

import threading
import time

import pytest

from tests.fakes.nvml import FakeGpuProbe, fake_devices
from trainops.gpu_runners.telemetry import GpuMonitor


def uuids(probe: FakeGpuProbe) -> tuple[str, ...]:
    return tuple(d.uuid for d in probe.devices())


def test_usage_over_a_stage() -> None:
    probe = FakeGpuProbe(fake_devices(2), util=80.0, mem_used_bytes=3 << 30, energy_per_s=200.0)
    monitor = GpuMonitor(probe, uuids(probe), interval_s=0.02)
    monitor.start()
    time.sleep(0.2)
    usage = monitor.stop()
    assert usage.uuids == uuids(probe)
    assert 0.4 <= usage.gpu_seconds < 2 * 2.0  # wall time × 2 GPUs
    assert usage.util_mean == pytest.approx(80.0)
    assert usage.mem_peak_bytes == 2 * (3 << 30)  # summed over the GPUs at one moment
    assert usage.energy_j is not None
    assert usage.energy_j == pytest.approx(2 * 200.0 * usage.gpu_seconds / 2, rel=0.25)
    assert probe.samples >= 2 * 5  # sampled along the way, not only at the ends


def test_a_very_short_stage_still_has_samples() -> None:
    probe = FakeGpuProbe(fake_devices(1), util=30.0)
    monitor = GpuMonitor(probe, uuids(probe), interval_s=60.0)
    monitor.start()
    usage = monitor.stop()
    assert probe.samples == 2  # at start and at stop
    assert usage.util_mean == 30.0
    assert usage.mem_peak_bytes == 1 << 30


def test_stop_does_not_wait_for_the_interval() -> None:
    probe = FakeGpuProbe(fake_devices(1))
    monitor = GpuMonitor(probe, uuids(probe), interval_s=30.0)
    monitor.start()
    started = time.monotonic()
    monitor.stop()
    assert time.monotonic() - started < 1.0


def test_unreadable_metrics_read_as_none() -> None:
    probe = FakeGpuProbe(fake_devices(2), util=None, mem_used_bytes=None, energy_per_s=None)
    monitor = GpuMonitor(probe, uuids(probe), interval_s=0.01)
    monitor.start()
    usage = monitor.stop()
    assert usage.util_mean is None
    assert usage.mem_peak_bytes is None
    assert usage.energy_j is None
    assert usage.gpu_seconds > 0


def test_partly_readable_gpus() -> None:
    probe = FakeGpuProbe(fake_devices(2), util=40.0, mem_used_bytes=1000)
    gpu0, gpu1 = uuids(probe)
    probe.util[gpu1] = None  # e.g. NotSupported on one card
    probe.mem_used_bytes[gpu1] = None
    monitor = GpuMonitor(probe, (gpu0, gpu1), interval_s=10.0)
    monitor.start()
    usage = monitor.stop()
    assert usage.util_mean == 40.0
    assert usage.mem_peak_bytes == 1000


def test_peak_memory_is_the_highest_moment() -> None:
    probe = FakeGpuProbe(fake_devices(2), mem_used_bytes=100)
    gpu0, gpu1 = uuids(probe)
    monitor = GpuMonitor(probe, (gpu0, gpu1), interval_s=10.0)
    monitor.start()  # sample 1: 100 + 100
    probe.mem_used_bytes[gpu0] = 500
    probe.mem_used_bytes[gpu1] = 50
    usage = monitor.stop()  # sample 2: 500 + 50
    assert usage.mem_peak_bytes == 550


def test_energy_is_none_when_one_gpu_cannot_say() -> None:
    probe = FakeGpuProbe(fake_devices(1))
    monitor = GpuMonitor(probe, (probe.devices()[0].uuid, "GPU-unknown"), interval_s=10.0)
    monitor.start()
    assert monitor.stop().energy_j is None


def test_monitor_thread_is_a_daemon_and_ends_on_stop() -> None:
    probe = FakeGpuProbe(fake_devices(1))
    before = set(threading.enumerate())
    monitor = GpuMonitor(probe, uuids(probe), interval_s=0.01)
    monitor.start()
    started = [t for t in threading.enumerate() if t not in before and t.name == "gpu-monitor"]
    assert started and all(t.daemon for t in started)
    monitor.stop()
    assert not any(t.is_alive() for t in started)


def test_misuse_is_refused() -> None:
    probe = FakeGpuProbe(fake_devices(1))
    with pytest.raises(ValueError, match="positive"):
        GpuMonitor(probe, uuids(probe), interval_s=0)
    monitor = GpuMonitor(probe, uuids(probe), interval_s=1.0)
    with pytest.raises(RuntimeError, match="before start"):
        monitor.stop()
    monitor.start()
    with pytest.raises(RuntimeError, match="started once"):
        monitor.start()
    monitor.stop()
