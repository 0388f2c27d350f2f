"""The real ``NvmlProbe``: its no-GPU behaviour everywhere, the rest on a GPU host."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainops.gpu_runners._nvml import NvmlProbe
from trainops.gpu_runners.allocator import GpuAllocator
from trainops.gpu_runners.telemetry import GpuMonitor


@pytest.fixture(scope="module")
def probe() -> Iterator[NvmlProbe]:
    probe = NvmlProbe()
    yield probe
    probe.shutdown()


@pytest.fixture
def gpu_probe(probe: NvmlProbe) -> NvmlProbe:
    if not probe.devices():
        pytest.skip(f"no NVIDIA GPU here: {probe.unavailable_reason or 'NVML lists none'}")
    return probe


def test_without_a_gpu_nvml_reports_none_and_says_why() -> None:
    probe = NvmlProbe()
    try:
        if probe.devices():
            pytest.skip("this host has a GPU")
        reason = probe.unavailable_reason
        assert reason, "no devices and no reason"
        assert "NVML" in reason
        # Every metric of an unknown GPU reads as nothing; nothing raises.
        sample = probe.sample("GPU-00000000-0000-0000-0000-000000000000")
        assert sample.util_percent is None and sample.mem_used_bytes is None
        assert probe.energy_mj("GPU-00000000-0000-0000-0000-000000000000") is None
        assert probe.busy_pids("GPU-00000000-0000-0000-0000-000000000000") == ()
    finally:
        probe.shutdown()
        probe.shutdown()


@pytest.mark.gpu
def test_devices_are_listed_in_pci_order(gpu_probe: NvmlProbe) -> None:
    devices = gpu_probe.devices()
    assert gpu_probe.unavailable_reason is None
    assert [d.index for d in devices] == list(range(len(devices)))
    for device in devices:
        assert device.uuid.startswith(("GPU-", "MIG-"))
        assert device.name and device.memory_total_bytes > 0
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert [d.uuid for d in devices] == listed


@pytest.mark.gpu
def test_metrics_are_read(gpu_probe: NvmlProbe) -> None:
    uuid = gpu_probe.devices()[0].uuid
    sample = gpu_probe.sample(uuid)
    assert sample.mem_used_bytes is None or sample.mem_used_bytes >= 0
    assert sample.util_percent is None or 0 <= sample.util_percent <= 100
    first = gpu_probe.energy_mj(uuid)
    time.sleep(0.2)
    second = gpu_probe.energy_mj(uuid)
    if first is not None:  # Volta and newer
        assert second is not None and second >= first
    assert all(isinstance(pid, int) for pid in gpu_probe.busy_pids(uuid))


@pytest.mark.gpu
def test_handles_are_found_by_uuid() -> None:
    probe = NvmlProbe()
    try:
        if not probe.devices():
            pytest.skip(f"no NVIDIA GPU here: {probe.unavailable_reason}")
        uuid = probe.devices()[0].uuid
        probe._handles.clear()  # forces nvmlDeviceGetHandleByUUID, as for a MIG UUID
        assert probe.sample(uuid).mem_used_bytes is not None
    finally:
        probe.shutdown()


@pytest.mark.gpu
def test_allocate_and_monitor_a_real_gpu(tmp_path: Path, gpu_probe: NvmlProbe) -> None:
    allocator = GpuAllocator(tmp_path / "locks", gpu_probe)
    assert allocator.impossible(1, None) is None
    assert allocator.impossible(len(gpu_probe.devices()) + 1, None) is not None
    name = gpu_probe.devices()[0].name
    lease = allocator.try_acquire(1, name.replace(" ", "-"), owner="gpu test")
    if lease is None:
        pytest.skip("every GPU of this type is busy with other processes")
    with lease:
        monitor = GpuMonitor(gpu_probe, lease.uuids, interval_s=0.05)
        monitor.start()
        time.sleep(0.3)
        usage = monitor.stop()
    assert usage.uuids == lease.uuids
    assert usage.gpu_seconds >= 0.3
    assert usage.mem_peak_bytes is not None
