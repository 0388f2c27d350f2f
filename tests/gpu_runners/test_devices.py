from __future__ import annotations

import pytest

from tests.fakes.nvml import A100, FakeGpuProbe, fake_devices
from trainops.gpu_runners.devices import GpuDevice, GpuProbe, device_matches, normalize_gpu_type


@pytest.mark.parametrize(
    ("nvml_name", "label"),
    [
        ("NVIDIA GeForce RTX 3090", "NVIDIA-GeForce-RTX-3090"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA-A100-SXM4-80GB"),
        ("Tesla T4", "tesla-t4"),
        ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
    ],
)
def test_nvml_names_and_feature_discovery_labels_compare_equal(nvml_name: str, label: str) -> None:
    assert normalize_gpu_type(nvml_name) == normalize_gpu_type(label)


def test_normalize_collapses_whitespace() -> None:
    assert normalize_gpu_type("  NVIDIA   GeForce\tRTX 3090 ") == "nvidia-geforce-rtx-3090"


def test_device_matches_type_or_any() -> None:
    rtx = GpuDevice(index=0, uuid="GPU-1", name="NVIDIA GeForce RTX 3090", memory_total_bytes=1)
    assert device_matches(rtx, None)
    assert device_matches(rtx, "NVIDIA-GeForce-RTX-3090")
    assert device_matches(rtx, "nvidia geforce rtx 3090")
    assert not device_matches(rtx, "NVIDIA-GeForce-RTX-4090")
    assert not device_matches(rtx, "RTX-3090")  # a type is a whole name, not a substring


def test_fake_probe_is_a_gpu_probe() -> None:
    probe: GpuProbe = FakeGpuProbe(fake_devices(2))
    assert [d.index for d in probe.devices()] == [0, 1]
    assert probe.unavailable_reason is None
    uuid = probe.devices()[0].uuid
    assert probe.sample(uuid).util_percent == 50.0
    assert probe.busy_pids(uuid) == ()
    assert probe.devices()[0].name == A100


def test_fake_probe_without_gpus_says_why() -> None:
    probe = FakeGpuProbe()
    assert probe.devices() == ()
    assert probe.unavailable_reason
