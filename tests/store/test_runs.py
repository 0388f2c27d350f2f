"""The run queue: idempotent runs, claim order, leases, cancel and supersede."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.store.conftest import T0, Clock, new_run, push
from tests.store.test_events import together
from trainops.errors import StoreError
from trainops.store import (
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_RUNNING,
    RUN_SUCCEEDED,
    RUN_SUPERSEDED,
    RunRecord,
    Store,
)


def claim(store: Store, owner: str = "w1", lease_s: float = 30) -> RunRecord:
    run = store.claim_run(owner, lease_s)
    assert run is not None
    return run


def test_create_run_is_idempotent_on_the_run_key(store: Store, clock: Clock) -> None:
    event, _ = store.add_event(push())
    run, created = store.create_run(new_run("r1", key="k", event_id=event.id))
    assert created
    assert (run.run_id, run.event_id, run.status, run.queued_at) == ("r1", event.id, RUN_QUEUED, T0)
    assert (run.attempts, run.cancel_requested, run.result, run.progress) == (0, False, None, None)
    clock.tick()
    again, created_again = store.create_run(new_run("r2", key="k", event_id=event.id))
    assert not created_again and again == run
    assert store.get_run("r2") is None
    assert store.get_run("r1") == run


def test_create_run_refuses_a_missing_event_and_a_reused_id(store: Store) -> None:
    with pytest.raises(StoreError, match="queuing run r1"):
        store.create_run(new_run("r1", event_id=404))  # foreign keys are on, SQLite too
    store.create_run(new_run("r1"))
    with pytest.raises(StoreError, match="queuing run r1"):
        store.create_run(new_run("r1", key="another key"))


def test_claim_run_goes_by_priority_then_queue_time(store: Store, clock: Clock) -> None:
    for run_id, priority in [("late-low", 5), ("early-normal", 0), ("late-normal", 0),
                             ("urgent", -1)]:  # fmt: skip
        clock.tick()
        store.create_run(new_run(run_id, priority=priority, group=run_id))
    assert [store.queue_position(r) for r in ("urgent", "early-normal", "late-normal")] == [1, 2, 3]
    assert store.queue_position("late-low") == 4
    order = [claim(store).run_id for _ in range(4)]
    assert order == ["urgent", "early-normal", "late-normal", "late-low"]
    assert store.claim_run("w1", 30) is None
    assert store.queue_position("urgent") is None  # running, not queued
    assert store.queue_position("nope") is None


def test_claim_sets_the_lease_and_start_time(store: Store, clock: Clock) -> None:
    store.create_run(new_run("r1"))
    clock.tick(5)
    run = claim(store, "w1", lease_s=30)
    assert (run.status, run.started_at, run.attempts) == (RUN_RUNNING, T0 + 5, 1)
    assert (run.lease_owner, run.lease_expires) == ("w1", T0 + 35)


def test_an_expired_run_lease_is_resumed_first(store: Store, clock: Clock) -> None:
    store.create_run(new_run("r1", group="a"))
    claim(store, "dead", lease_s=10)
    clock.tick()
    store.create_run(new_run("r2", priority=-5, group="b"))
    clock.tick(5)
    assert store.renew_run_lease("r1", "dead", lease_s=10)  # now expires at T0 + 16
    clock.tick(10)
    assert claim(store, "w2").run_id == "r2"  # r1's lease still holds
    clock.tick(1)
    resumed = claim(store, "w2", lease_s=10)
    assert resumed.run_id == "r1"
    assert (resumed.attempts, resumed.started_at, resumed.lease_owner) == (2, T0, "w2")
    assert not store.renew_run_lease("r1", "dead", lease_s=10)  # the dead worker lost it
    assert store.renew_run_lease("r1", "w2", lease_s=10)


def test_finish_run_records_the_outcome_and_releases(store: Store, clock: Clock) -> None:
    store.create_run(new_run("r1"))
    claim(store)
    store.update_run_progress("r1", {"stages": {"train": "running"}})
    assert store.get_run("r1").progress == {"stages": {"train": "running"}}  # type: ignore[union-attr]
    clock.tick(3)
    result = {"status": "failed", "metrics": {"accuracy": 0.5}, "stages": [{"name": "train"}]}
    store.finish_run("r1", RUN_FAILED, result=result, error=None)
    run = store.get_run("r1")
    assert run is not None and run.finished
    assert (run.status, run.result, run.error, run.finished_at) == (
        RUN_FAILED,
        result,
        None,
        T0 + 3,
    )
    assert (run.lease_owner, run.lease_expires) == (None, None)
    assert not store.renew_run_lease("r1", "w1", 30)
    with pytest.raises(ValueError, match="final run status"):
        store.finish_run("r1", RUN_RUNNING, result=None, error=None)
    with pytest.raises(StoreError, match="no such run"):
        store.finish_run("nope", RUN_SUCCEEDED, result=None, error=None)
    with pytest.raises(StoreError, match="no such run"):
        store.update_run_progress("nope", {})


def test_request_cancel(store: Store) -> None:
    store.create_run(new_run("running", group="a"))
    claim(store)
    store.create_run(new_run("queued", group="b"))
    cancelled = store.request_cancel("queued")
    assert cancelled is not None and cancelled.status == RUN_CANCELLED and cancelled.finished
    asked = store.request_cancel("running")
    assert asked is not None and (asked.status, asked.cancel_requested) == (RUN_RUNNING, True)
    store.finish_run("running", RUN_CANCELLED, result=None, error=None)
    finished = store.request_cancel("running")
    assert finished is not None and finished.status == RUN_CANCELLED
    assert store.request_cancel("nope") is None
    assert store.claim_run("w1", 30) is None


def test_supersede_retires_older_runs_of_the_group(store: Store, clock: Clock) -> None:
    group = "github:acme/digits:mr:7"
    for run_id in ("running", "queued", "other-group", "newest", "newer-still"):
        clock.tick()
        store.create_run(new_run(run_id, group="elsewhere" if run_id == "other-group" else group))
        if run_id == "running":
            claim(store)
    assert sorted(store.supersede(group, by_run_id="newest")) == ["queued", "running"]
    queued, running = store.get_run("queued"), store.get_run("running")
    assert queued is not None and running is not None
    assert (queued.status, queued.superseded_by, queued.finished_at) == (
        RUN_SUPERSEDED,
        "newest",
        T0 + 5,
    )
    assert (running.status, running.cancel_requested, running.superseded_by) == (
        RUN_RUNNING,
        True,
        "newest",
    )
    assert store.get_run("newer-still").status == RUN_QUEUED  # type: ignore[union-attr]
    assert store.get_run("other-group").status == RUN_QUEUED  # type: ignore[union-attr]
    assert store.supersede(group, by_run_id="newest") == []  # nothing left to touch
    # The merge request closed: every unfinished run of the group goes.
    assert sorted(store.supersede(group, by_run_id="")) == ["newer-still", "newest"]
    assert [r.run_id for r in store.list_runs(status=RUN_QUEUED)] == ["other-group"]


def test_list_runs_filters_and_orders_newest_first(store: Store, clock: Clock) -> None:
    for i, repo in enumerate(["acme/a", "acme/b", "acme/a", "acme/a"]):
        clock.tick()
        store.create_run(new_run(f"r{i}", repo=repo, group=None))
    claim(store)  # r0
    assert [r.run_id for r in store.list_runs()] == ["r3", "r2", "r1", "r0"]
    assert [r.run_id for r in store.list_runs(2)] == ["r3", "r2"]
    assert [r.run_id for r in store.list_runs(repo="acme/a")] == ["r3", "r2", "r0"]
    assert [r.run_id for r in store.list_runs(repo="acme/a", status=RUN_QUEUED)] == ["r3", "r2"]
    assert [r.run_id for r in store.list_runs(status=RUN_RUNNING)] == ["r0"]
    with pytest.raises(ValueError, match="run status"):
        store.list_runs(status="bogus")


def test_concurrent_workers_claim_each_run_once(url: str, clock: Clock) -> None:
    replicas = [Store.open(url, clock=clock), Store(url, clock=clock)]
    try:
        for i in range(20):
            replicas[0].create_run(new_run(f"r{i:02}", priority=i % 3, group=None))

        def drain(worker: int) -> list[str]:
            store, mine = replicas[worker % 2], []
            while (run := store.claim_run(f"w{worker}", lease_s=60)) is not None:
                mine.append(run.run_id)
            return mine

        counts = Counter(run_id for mine in together(6, drain) for run_id in mine)
    finally:
        for replica in replicas:
            replica.close()
    assert sorted(counts) == [f"r{i:02}" for i in range(20)] and set(counts.values()) == {1}
