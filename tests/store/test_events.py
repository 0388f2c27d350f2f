"""The event inbox: one row per delivery, claimed by one worker at a time."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from tests.store.conftest import T0, Clock, merge_request, push
from trainops.errors import StoreError
from trainops.models import Event
from trainops.store import (
    EVENT_IGNORED,
    EVENT_PROCESSED,
    EVENT_PROCESSING,
    EVENT_RECEIVED,
    EventRecord,
    Store,
)

T = TypeVar("T")


def together(count: int, task: Callable[[int], T]) -> list[T]:
    """Run ``task(i)`` on ``count`` threads released at the same instant."""
    barrier = threading.Barrier(count)

    def start(i: int) -> T:
        barrier.wait()
        return task(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


@pytest.mark.parametrize("event", [push(), merge_request()], ids=["push", "merge_request"])
def test_event_round_trips_through_json(store: Store, event: Event) -> None:
    record, created = store.add_event(event)
    assert created
    assert record.event == event
    assert (record.forge, record.delivery_id) == (event.forge, event.delivery_id)
    assert record.kind == event.kind
    assert record.repo == "acme/digits"
    assert (record.status, record.attempts, record.received_at) == (EVENT_RECEIVED, 0, T0)
    [listed] = store.list_events()
    assert listed == record
    assert store.get_event(record.id) == record


def test_add_event_is_idempotent_on_the_delivery_id(store: Store, clock: Clock) -> None:
    first, created = store.add_event(push("d-1"))
    clock.tick()
    again, created_again = store.add_event(push("d-1", sha="f" * 40))
    assert created and not created_again
    assert again == first  # the stored delivery, not the redelivered one
    other_forge = Event(forge="gitlab", delivery_id="d-1", kind="push", repo=None)
    _, created_other = store.add_event(other_forge)
    assert created_other  # unique per forge, not globally
    assert len(store.list_events()) == 2


def test_fifty_threads_storing_one_delivery_make_one_row(store: Store) -> None:
    results = together(50, lambda _: store.add_event(push("d-race")))
    assert sum(created for _, created in results) == 1
    assert len({record.id for record, _ in results}) == 1
    assert len(store.list_events()) == 1


def test_an_event_can_be_stored_already_decided(store: Store) -> None:
    ping = Event(forge="github", delivery_id="p-1", kind="ping", repo=None)
    record, _ = store.add_event(ping, status=EVENT_IGNORED, note="ping")
    assert (record.status, record.note, record.repo) == (EVENT_IGNORED, "ping", None)
    assert store.claim_event("w1", 30) is None
    with pytest.raises(ValueError, match="event status"):
        store.add_event(push("p-2"), status="bogus")


def test_claim_event_takes_the_oldest_and_leases_it(store: Store, clock: Clock) -> None:
    first, _ = store.add_event(push("d-1"))
    clock.tick()
    second, _ = store.add_event(push("d-2"))
    claimed = store.claim_event("w1", lease_s=30)
    assert claimed is not None and claimed.id == first.id
    assert (claimed.status, claimed.attempts) == (EVENT_PROCESSING, 1)
    claimed_next = store.claim_event("w2", lease_s=30)
    assert claimed_next is not None and claimed_next.id == second.id
    assert store.claim_event("w3", lease_s=30) is None


def test_an_expired_lease_makes_the_event_claimable_again(store: Store, clock: Clock) -> None:
    store.add_event(push())
    assert store.claim_event("dead-worker", lease_s=10) is not None
    clock.tick(9)
    assert store.claim_event("w2", lease_s=10) is None  # still leased
    clock.tick(2)
    taken = store.claim_event("w2", lease_s=10)
    assert taken is not None and taken.attempts == 2
    store.finish_event(taken.id, EVENT_PROCESSED, "run r1")
    clock.tick(60)
    assert store.claim_event("w3", lease_s=10) is None  # finished events stay finished


def test_finish_event(store: Store) -> None:
    record, _ = store.add_event(push(), note="from the reconciler")
    store.finish_event(record.id, EVENT_IGNORED)
    [done] = store.list_events()
    assert (done.status, done.note) == (EVENT_IGNORED, "from the reconciler")
    store.finish_event(record.id, EVENT_PROCESSED, "run r1")
    assert store.list_events()[0].note == "run r1"
    with pytest.raises(StoreError, match="no such event"):
        store.finish_event(404, EVENT_PROCESSED)
    with pytest.raises(ValueError, match="final event status"):
        store.finish_event(record.id, EVENT_RECEIVED)


def test_list_events_is_newest_first_and_limited(store: Store, clock: Clock) -> None:
    for i in range(5):
        clock.tick()
        store.add_event(push(f"d-{i}"))
    assert [e.delivery_id for e in store.list_events(limit=3)] == ["d-4", "d-3", "d-2"]


def test_concurrent_workers_claim_each_event_once(url: str, clock: Clock) -> None:
    """Two replicas (own engines) with three threads each drain 20 events."""
    replicas = [Store.open(url, clock=clock), Store(url, clock=clock)]
    try:
        for i in range(20):
            replicas[0].add_event(push(f"d-{i:02}"))

        def drain(worker: int) -> list[EventRecord]:
            store, mine = replicas[worker % 2], []
            while (record := store.claim_event(f"w{worker}", lease_s=60)) is not None:
                mine.append(record)
            return mine

        claims = [record for mine in together(6, drain) for record in mine]
    finally:
        for replica in replicas:
            replica.close()
    counts = Counter(record.delivery_id for record in claims)
    assert sorted(counts) == [f"d-{i:02}" for i in range(20)]
    assert set(counts.values()) == {1}
    assert {record.attempts for record in claims} == {1}
