"""What a GPU is to the runner, and the probe that finds them.

Pure values and one protocol: the allocator and telemetry depend on
``GpuProbe``, so tests run them against an in-memory fake and only
``_nvml.NvmlProbe`` touches the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GpuDevice:
    """One physical GPU (or MIG slice) as NVML lists it, in PCI order."""

    index: int
    uuid: str
    """``GPU-…`` or ``MIG-…``; what ``CUDA_VISIBLE_DEVICES`` is given, stable across reboots."""
    name: str
    """The NVML product name, e.g. ``NVIDIA GeForce RTX 3090``."""
    memory_total_bytes: int


@dataclass(frozen=True)
class GpuSample:
    """One reading of a GPU; a field is None when the driver will not say (gpustat habit)."""

    util_percent: float | None
    mem_used_bytes: int | None


class GpuProbe(Protocol):
    """Asks the driver about this host's GPUs; every method is cheap and never raises."""

    def devices(self) -> tuple[GpuDevice, ...]:
        """Every GPU on this host, by index; empty when there are none or no driver."""
        ...

    @property
    def unavailable_reason(self) -> str | None:
        """Why ``devices()`` is empty because NVML cannot be used; None when it works."""
        ...

    def sample(self, uuid: str) -> GpuSample: ...

    def energy_mj(self, uuid: str) -> int | None:
        """Energy used since the driver loaded, in millijoules; None where unsupported."""
        ...

    def busy_pids(self, uuid: str) -> tuple[int, ...]:
        """Host PIDs of compute processes on the device (empty when unreadable)."""
        ...


def normalize_gpu_type(gpu_type: str) -> str:
    """A GPU type in the one spelling used for comparison.

    Pipelines name GPU types the way GPU Feature Discovery labels Kubernetes
    nodes (``NVIDIA-GeForce-RTX-3090``) while NVML reports
    ``NVIDIA GeForce RTX 3090``; lowercasing and turning runs of whitespace
    into ``-`` makes both read ``nvidia-geforce-rtx-3090``, so one spec works
    on Argo and on the local runner.
    """
    return "-".join(gpu_type.lower().split())


def device_matches(device: GpuDevice, gpu_type: str | None) -> bool:
    """Whether ``device`` is of ``gpu_type``; a stage naming no type takes any GPU."""
    if gpu_type is None:
        return True
    return normalize_gpu_type(device.name) == normalize_gpu_type(gpu_type)
