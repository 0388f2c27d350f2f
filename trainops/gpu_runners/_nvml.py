"""The one home of ``pynvml`` (the ``nvidia-ml-py`` package): GPUs through NVML.

Imported lazily, so hosts without a driver (and commands that never touch
a GPU) pay nothing. Following gpustat: a failed ``nvmlInit`` means "no GPUs
here" and is reported through ``unavailable_reason``; a metric that raises
``NVMLError`` (not supported, no permission, GPU lost) reads as None. No
method raises, so telemetry can never break a stage.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from trainops.gpu_runners.devices import GpuDevice, GpuSample

log = logging.getLogger(__name__)


def _text(value: str | bytes) -> str:
    """NVML strings come back as bytes from bindings older than 11.x."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _init_failure(exc: Exception) -> str:
    """A human reason for a failed ``nvmlInit``, naming NVML's own words."""
    import pynvml

    if isinstance(exc, pynvml.NVMLError_LibraryNotFound):
        what = "no NVIDIA driver found"
    elif isinstance(exc, pynvml.NVMLError_DriverNotLoaded):
        what = "the NVIDIA driver is installed but not loaded"
    elif isinstance(exc, pynvml.NVMLError_NoPermission):
        what = "no permission to use the NVIDIA driver"
    else:
        what = "NVML could not be initialised"
    return f"{what} (NVML: {exc})"


class NvmlProbe:
    """A ``GpuProbe`` backed by NVML.

    NVML is initialised on first use, once, under a lock (stages sample from
    several threads); the device list is read then and kept, since GPUs do
    not come and go while a runner lives. ``shutdown()`` releases NVML; a
    later call initialises it again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = False
        self._reason: str | None = None
        self._devices: tuple[GpuDevice, ...] = ()
        self._handles: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"NvmlProbe(devices={len(self._devices)}, started={self._started})"

    def _start(self) -> None:
        """Initialise NVML and list the devices, once."""
        with self._lock:
            if self._started:
                return
            self._started = True
            try:
                import pynvml
            except ImportError as exc:
                self._reason = f"the NVML bindings (nvidia-ml-py) are not installed ({exc})"
                return
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as exc:
                self._reason = _init_failure(exc)
                log.debug("NVML unavailable: %s", self._reason)
                return
            try:
                self._devices = self._list_devices(pynvml)
            except pynvml.NVMLError as exc:
                self._reason = f"NVML could not list the GPUs (NVML: {exc})"
                self._devices = ()
                self._handles = {}
                with contextlib.suppress(pynvml.NVMLError):
                    pynvml.nvmlShutdown()

    def _list_devices(self, pynvml: Any) -> tuple[GpuDevice, ...]:
        found: list[GpuDevice] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            try:
                total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            except pynvml.NVMLError:
                total = 0
            name = _text(pynvml.nvmlDeviceGetName(handle))
            self._handles[uuid] = handle
            found.append(GpuDevice(index=index, uuid=uuid, name=name, memory_total_bytes=total))
        log.debug("NVML lists %d GPU(s): %s", len(found), [d.name for d in found])
        return tuple(found)

    def _handle(self, uuid: str) -> Any | None:
        """The NVML handle of ``uuid``; None when NVML is down or the UUID is unknown."""
        self._start()
        if self._reason is not None:
            return None
        handle = self._handles.get(uuid)
        if handle is not None:
            return handle
        import pynvml

        # MIG slices and devices listed by someone else: ask NVML. The binding
        # takes str since 11.x; older ones want bytes (ctypes c_char_p).
        try:
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
            except TypeError:
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid.encode())
        except pynvml.NVMLError as exc:
            log.debug("no NVML handle for %s: %s", uuid, exc)
            return None
        with self._lock:
            self._handles[uuid] = handle
        return handle

    def devices(self) -> tuple[GpuDevice, ...]:
        self._start()
        return self._devices

    @property
    def unavailable_reason(self) -> str | None:
        self._start()
        return self._reason

    def sample(self, uuid: str) -> GpuSample:
        handle = self._handle(uuid)
        if handle is None:
            return GpuSample(util_percent=None, mem_used_bytes=None)
        import pynvml

        util: float | None
        mem: int | None
        try:
            util = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except pynvml.NVMLError:
            util = None
        try:
            mem = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        except pynvml.NVMLError:
            mem = None
        return GpuSample(util_percent=util, mem_used_bytes=mem)

    def energy_mj(self, uuid: str) -> int | None:
        handle = self._handle(uuid)
        if handle is None:
            return None
        import pynvml

        try:
            return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except pynvml.NVMLError:
            return None  # before Volta, or not permitted

    def busy_pids(self, uuid: str) -> tuple[int, ...]:
        handle = self._handle(uuid)
        if handle is None:
            return ()
        import pynvml

        try:
            processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except pynvml.NVMLError:
            return ()
        return tuple(int(p.pid) for p in processes)

    def shutdown(self) -> None:
        """Release NVML if it was initialised; safe to call more than once."""
        with self._lock:
            if not self._started:
                return
            working = self._reason is None
            self._started = False
            self._reason = None
            self._devices = ()
            self._handles = {}
            if not working:
                return
            import pynvml

            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as exc:
                log.debug("NVML shutdown: %s", exc)
