"""One driver per run: a second one is refused, a superseded one stops without committing, lost data is noticed."""
from __future__ import annotations

import time

import pytest

from broker import connect
from orchestrator.errors import TrainingError
from orchestrator.training.options import DriverOptions
from orchestrator.training.runner import train_run
from paramstore import open_store
from paramstore.errors import LeaseLost, RunDataLost
from paramstore.lease import Lease
from paramstore.run import RunRecord
from tests.unit.test_hostile import CONFIG


def test_a_second_driver_is_refused_at_once_and_touches_nothing(small_mnist):
    train, test = small_mnist
    store = open_store("memory://")
    refused, results = [], []

    def second(step, loss, samples):
        if step == 2 and not refused:
            t0 = time.monotonic()
            with pytest.raises(TrainingError, match="driven by another driver .* a second driver is refused") as exc:
                train_run(CONFIG, train, test, run_id="one", max_steps=15, broker=connect("memory://"), store=store)
            refused.append((time.monotonic() - t0, str(exc.value)))

    results.append(train_run(CONFIG, train, test, run_id="one", max_steps=15, store=store,
                             options=DriverOptions(on_step=second)))
    assert refused and refused[0][0] < 1.0
    assert results[0].steps == 15
    manifest = RunRecord(store, "one").manifest()
    assert manifest.status == "done" and manifest.latest == 15 and manifest.state["token"] == 1


def test_a_superseded_driver_stops_without_committing(small_mnist):
    train, test = small_mnist
    store = open_store("memory://")
    record = RunRecord(store, "taken")

    def take_over(step, loss, samples):
        if step == 7:  # the lease expires (the driver was paused) and another driver takes the run
            store.put(record.keys.prefix + "lease", store.get(record.keys.prefix + "lease").replace(
                b'"expires":', b'"expires":1,"was":'))
            Lease(store, "taken").acquire()

    with pytest.raises(LeaseLost, match=r"token 1\) lost run taken to another driver .*token 2.* stops without"):
        train_run(CONFIG, train, test, run_id="taken", max_steps=15, store=store,
                  options=DriverOptions(on_step=take_over))
    assert record.manifest().latest == 5  # checkpoint 10 was never committed


def test_a_store_that_lost_the_run_ends_it_instead_of_recreating_it(small_mnist):
    train, test = small_mnist
    store = open_store("memory://")

    def forget(step, loss, samples):
        if step == 7:  # a Redis restarted without persistence
            for key in store.keys("cuttlefish/lost/"):
                store.delete(key)

    with pytest.raises((RunDataLost, TrainingError), match="lost run lost's data|no longer has the manifest"):
        train_run(CONFIG, train, test, run_id="lost", max_steps=15, store=store, options=DriverOptions(on_step=forget))
    assert RunRecord(store, "lost").manifest() is None  # not recreated


def test_the_lease_renews_in_the_background_and_notices_a_vanished_run():
    store = open_store("memory://")
    lease = Lease(store, "bg", ttl=0.6)
    lease.acquire()
    first = store.get(lease.key)
    lease.start_renewing(interval=0.1)
    time.sleep(0.35)
    assert store.get(lease.key) != first and lease.held() and lease.lost is None
    store.delete(lease.key)
    deadline = time.monotonic() + 2
    while lease.lost is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert isinstance(lease.lost, RunDataLost)
    with pytest.raises(RunDataLost):
        lease.check()
    lease.release()
    assert lease._thread is None
