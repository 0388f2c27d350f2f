from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.fakes.nvml import A100, FakeGpuProbe, fake_devices
from trainops.errors import ExecutorError
from trainops.gpu_runners.allocator import GpuAllocator, GpuLease

ROOT = Path(__file__).resolve().parents[2]
RTX = "NVIDIA GeForce RTX 3090"


@pytest.fixture
def probe() -> FakeGpuProbe:
    return FakeGpuProbe(fake_devices(2) + fake_devices(1, RTX, first_index=2))


@pytest.fixture
def allocator(tmp_path: Path, probe: FakeGpuProbe) -> GpuAllocator:
    return GpuAllocator(tmp_path / "locks", probe)


def other(allocator: GpuAllocator) -> GpuAllocator:
    """A second allocator on the same locks: another run in this process."""
    return GpuAllocator(allocator.locks_dir, allocator.probe)


def test_lease_holds_lowest_indices_and_names_them_for_cuda(allocator: GpuAllocator) -> None:
    lease = allocator.try_acquire(2, None, owner="run-1/train")
    assert lease is not None
    assert [d.index for d in lease.devices] == [0, 1]
    assert lease.cuda_visible_devices == ",".join(lease.uuids)
    assert all(u.startswith("GPU-") for u in lease.uuids)
    lease.release()


def test_a_gpu_is_never_leased_twice(allocator: GpuAllocator) -> None:
    first = allocator.try_acquire(1, A100, owner="a")
    second = other(allocator).try_acquire(1, A100, owner="b")
    assert first is not None and second is not None
    assert set(first.uuids).isdisjoint(second.uuids)
    assert other(allocator).try_acquire(1, A100, owner="c") is None
    first.release()
    third = other(allocator).try_acquire(1, A100, owner="c")
    assert third is not None and third.uuids == first.uuids
    second.release()
    third.release()


def test_same_allocator_excludes_itself_too(allocator: GpuAllocator) -> None:
    lease = allocator.try_acquire(3, None, owner="all")
    assert lease is not None
    with lease:
        assert lease.held
        assert allocator.try_acquire(1, None, owner="more") is None
    assert not lease.held
    assert allocator.try_acquire(3, None, owner="again") is not None


def test_all_or_nothing(allocator: GpuAllocator) -> None:
    holder = other(allocator).try_acquire(1, RTX, owner="rtx user")
    assert holder is not None
    assert allocator.try_acquire(3, None, owner="greedy") is None
    # The A100s it took on the way were let go again.
    both = other(allocator).try_acquire(2, A100, owner="pair")
    assert both is not None and len(both.devices) == 2


def test_gpu_type_matching_uses_feature_discovery_spelling(allocator: GpuAllocator) -> None:
    lease = allocator.try_acquire(1, "NVIDIA-GeForce-RTX-3090", owner="x")
    assert lease is not None
    assert [d.name for d in lease.devices] == [RTX]
    assert allocator.try_acquire(1, "NVIDIA-GeForce-RTX-3090", owner="y") is None
    assert allocator.try_acquire(1, "NVIDIA-H100-80GB-HBM3", owner="y") is None


def test_release_is_idempotent_and_blanks_the_owner_note(allocator: GpuAllocator) -> None:
    lease = allocator.try_acquire(1, None, owner="run-7/train")
    assert lease is not None
    note = allocator.lock_path(lease.uuids[0]).read_text()
    assert note.startswith("run-7/train\n") and f"pid {os.getpid()}" in note
    lease.release()
    lease.release()
    assert allocator.lock_path(lease.uuids[0]).read_text() == ""
    assert "released" in repr(lease)


def test_devices_busy_with_foreign_processes_are_skipped(
    allocator: GpuAllocator, probe: FakeGpuProbe
) -> None:
    gpu0, gpu1, _ = probe.devices()
    probe.set_busy(gpu0.uuid, 424242)  # an orphaned stage, or someone else's job
    lease = allocator.try_acquire(1, A100, owner="x")
    assert lease is not None and lease.uuids == (gpu1.uuid,)
    assert allocator.try_acquire(1, A100, owner="y") is None
    lease.release()
    probe.set_busy(gpu0.uuid, os.getpid())  # our own process does not count
    mine = allocator.try_acquire(1, A100, owner="z")
    assert mine is not None and mine.uuids == (gpu0.uuid,)


def test_impossible_requests_are_explained(tmp_path: Path, allocator: GpuAllocator) -> None:
    assert allocator.impossible(3, None) is None
    assert allocator.impossible(2, "NVIDIA-A100-SXM4-80GB") is None
    many = allocator.impossible(4, None)
    assert many == "asks for 4 GPUs but this host has only 3"
    typed = allocator.impossible(2, "NVIDIA-GeForce-RTX-3090")
    assert typed is not None
    assert "2 GPUs of type 'NVIDIA-GeForce-RTX-3090'" in typed
    assert "has 1 of that type" in typed
    assert f"2 × {A100}" in typed and f"1 × {RTX}" in typed
    none_here = GpuAllocator(tmp_path / "locks", FakeGpuProbe(unavailable_reason="no driver (x)"))
    assert none_here.impossible(1, None) == "asks for 1 GPU but this host has no GPU: no driver (x)"


def test_impossible_ignores_current_use(allocator: GpuAllocator) -> None:
    lease = allocator.try_acquire(3, None, owner="busy")
    assert lease is not None
    with lease:
        assert allocator.impossible(3, None) is None


def test_count_must_be_positive(allocator: GpuAllocator) -> None:
    with pytest.raises(ValueError, match="at least one GPU"):
        allocator.try_acquire(0, None, owner="x")


def test_threads_racing_never_share_a_gpu(allocator: GpuAllocator) -> None:
    leases: list[GpuLease] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def grab(n: int) -> None:
        barrier.wait()
        lease = other(allocator).try_acquire(1, None, owner=f"t{n}")
        if lease is not None:
            with lock:
                leases.append(lease)

    threads = [threading.Thread(target=grab, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [u for lease in leases for u in lease.uuids]
    assert len(held) == 3 and len(set(held)) == 3
    for lease in leases:
        lease.release()


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.fakes.nvml import FakeGpuProbe, fake_devices
    from trainops.gpu_runners.allocator import GpuAllocator

    lease = GpuAllocator(Path({locks!r}), FakeGpuProbe(fake_devices(1))).try_acquire(
        1, None, owner="child"
    )
    print("held" if lease else "none", flush=True)
    time.sleep(60)
    """
)


def test_a_lock_held_by_another_process_is_freed_when_it_dies(tmp_path: Path) -> None:
    allocator = GpuAllocator(tmp_path / "locks", FakeGpuProbe(fake_devices(1)))
    code = CHILD.format(root=str(ROOT), locks=str(allocator.locks_dir))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        assert allocator.try_acquire(1, None, owner="parent") is None
        assert "child" in allocator.lock_path(fake_devices(1)[0].uuid).read_text()
        child.send_signal(signal.SIGKILL)
        child.wait()
        lease = allocator.try_acquire(1, None, owner="parent")
        assert lease is not None  # the kernel dropped the dead holder's lock
        lease.release()
    finally:
        child.kill()
        child.wait()
        if child.stdout:
            child.stdout.close()


def test_stage_processes_do_not_inherit_the_lock(allocator: GpuAllocator) -> None:
    lease = allocator.try_acquire(1, None, owner="parent")
    assert lease is not None
    # Even asked to keep fds, exec closes ours (O_CLOEXEC): an orphan holds no lock.
    orphan = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        lease.release()
        again = other(allocator).try_acquire(1, None, owner="next")
        assert again is not None and again.uuids == lease.uuids
        again.release()
    finally:
        orphan.kill()
        orphan.wait()


def test_an_unusable_lock_dir_is_an_executor_error(tmp_path: Path) -> None:
    (tmp_path / "locks").write_text("a file, not a directory")
    allocator = GpuAllocator(tmp_path / "locks", FakeGpuProbe(fake_devices(1)))
    with pytest.raises(ExecutorError, match="GPU lock dir"):
        allocator.try_acquire(1, None, owner="x")
