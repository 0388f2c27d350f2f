"""Exclusive use of whole GPUs by stages, across every process on this host.

One lock file per GPU UUID, ``locks/gpu-<uuid>.lock``, held with
``flock(LOCK_EX | LOCK_NB)`` for as long as a stage runs. flock was chosen
over a lock table because the kernel drops it when its holder dies, however
it dies: a crashed runner leaves no stale lock behind. flock locks belong to
the open file description, so two allocators in one process (two runs) also
exclude each other, as two processes do.

The lock fds are never inherited by stage processes (``O_CLOEXEC``), so a
stage that outlives its runner holds no lock; such an orphan still holds
the GPU, which is why a device showing foreign compute processes in NVML is
skipped too (REFERENCE §8).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
from collections import Counter
from pathlib import Path
from types import TracebackType

from trainops.errors import ExecutorError
from trainops.gpu_runners.devices import GpuDevice, GpuProbe, device_matches

log = logging.getLogger(__name__)


class GpuLease:
    """GPUs held by one stage; ``release()`` (or leaving the ``with``) frees them."""

    def __init__(self, devices: tuple[GpuDevice, ...], fds: tuple[int, ...]) -> None:
        self.devices = devices
        self._fds = list(fds)

    def __repr__(self) -> str:
        state = "held" if self._fds else "released"
        return f"GpuLease({list(self.uuids)!r}, {state})"

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(d.uuid for d in self.devices)

    @property
    def cuda_visible_devices(self) -> str:
        """The value for ``CUDA_VISIBLE_DEVICES``.

        UUIDs rather than indices: they need no ``CUDA_DEVICE_ORDER`` and
        also name MIG slices. The stage sees its GPUs renumbered from 0.
        """
        return ",".join(self.uuids)

    @property
    def held(self) -> bool:
        return bool(self._fds)

    def release(self) -> None:
        """Free the GPUs; calling it again does nothing."""
        fds, self._fds = self._fds, []
        for fd in fds:
            _unlock(fd)

    def __enter__(self) -> GpuLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _unlock(fd: int) -> None:
    """Blank the owner note, then drop the lock by closing the fd."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)


class GpuAllocator:
    """Hands out whole GPUs of this host to stages, never one GPU to two holders."""

    def __init__(self, locks_dir: Path, probe: GpuProbe) -> None:
        self.locks_dir = locks_dir
        self.probe = probe

    def __repr__(self) -> str:
        return f"GpuAllocator({str(self.locks_dir)!r})"

    def impossible(self, count: int, gpu_type: str | None) -> str | None:
        """Why asking for ``count`` GPUs of ``gpu_type`` can never succeed here, or None.

        Only the host's hardware counts, not current use: a request that
        waits long enough will be met unless this says otherwise.
        """
        devices = self.probe.devices()
        what = f"{count} GPU{'s' if count != 1 else ''}"
        if gpu_type is not None:
            what += f" of type {gpu_type!r}"
        if not devices:
            reason = self.probe.unavailable_reason or "NVML lists no GPU"
            return f"asks for {what} but this host has no GPU: {reason}"
        matching = [d for d in devices if device_matches(d, gpu_type)]
        if len(matching) >= count:
            return None
        if gpu_type is None:
            return f"asks for {what} but this host has only {len(devices)}"
        counts = Counter(d.name for d in devices)
        inventory = ", ".join(f"{n} × {name}" for name, n in counts.items())
        return (
            f"asks for {what} but this host has {len(matching)} of that type (it has {inventory})"
        )

    def try_acquire(self, count: int, gpu_type: str | None, *, owner: str) -> GpuLease | None:
        """Lock ``count`` free GPUs of ``gpu_type`` now, lowest indices first, or None.

        All or nothing: when fewer are free, whatever was locked is let go
        before returning, so two waiting stages cannot each hold half of
        what both need. ``owner`` is written into each lock file, so that
        ``cat locks/gpu-*.lock`` tells a human who holds which GPU.
        Raises ExecutorError when the lock files cannot be opened.
        """
        if count < 1:
            raise ValueError(f"a GPU lease needs at least one GPU, not {count}")
        try:
            self.locks_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExecutorError(
                f"creating the GPU lock dir {str(self.locks_dir)!r}: {exc}"
            ) from exc
        taken: list[tuple[GpuDevice, int]] = []
        candidates = sorted(
            (d for d in self.probe.devices() if device_matches(d, gpu_type)),
            key=lambda d: d.index,
        )
        for device in candidates:
            fd = self._try_lock(device)
            if fd is None:
                continue
            if self._foreign_pids(device):
                os.close(fd)
                continue
            taken.append((device, fd))
            if len(taken) == count:
                break
        if len(taken) < count:
            for _device, fd in taken:
                os.close(fd)
            return None
        note = _owner_note(owner)
        for _device, fd in taken:
            _write_note(fd, note)
        lease = GpuLease(tuple(d for d, _ in taken), tuple(fd for _, fd in taken))
        log.debug("%s holds %s", owner, lease.cuda_visible_devices)
        return lease

    def lock_path(self, uuid: str) -> Path:
        return self.locks_dir / f"gpu-{uuid}.lock"

    def _try_lock(self, device: GpuDevice) -> int | None:
        """An fd holding the device's lock, or None when someone else holds it."""
        path = self.lock_path(device.uuid)
        # Python fds are non-inheritable already (PEP 446); O_CLOEXEC says so here.
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ExecutorError(f"locking GPU {device.uuid} at {str(path)!r}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _foreign_pids(self, device: GpuDevice) -> tuple[int, ...]:
        """Compute processes on a device we just locked: orphans or someone else's jobs."""
        own = os.getpid()
        foreign = tuple(p for p in self.probe.busy_pids(device.uuid) if p != own)
        if foreign:
            log.info(
                "skipping GPU %d (%s): unlocked but in use by PIDs %s",
                device.index,
                device.uuid,
                ", ".join(map(str, foreign)),
            )
        return foreign


def _owner_note(owner: str) -> bytes:
    since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return f"{owner}\npid {os.getpid()} since {since}\n".encode()


def _write_note(fd: int, note: bytes) -> None:
    """For humans only: the lock itself is the truth, the note may be stale."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, note, 0)
    except OSError as exc:
        log.debug("writing the owner note of a GPU lock: %s", exc)
