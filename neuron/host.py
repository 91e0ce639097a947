"""Several actors on one thread: messages between them stay in the process, the rest go through the broker.

The loss head next to a single-shard output layer is the case that pays: the logits and their gradient
never cross the broker, two hops fewer on every step's critical path. The actors and the protocol are
unchanged (each message is still encoded, decoded and validated once); only the transport is shorter.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Iterable

from broker.base import Broker, Delivery, HandedDelivery
from neuron.actor import Actor

log = logging.getLogger(__name__)

_LOCAL = object()  # the tag of a delivery that never left the process


class Colocated(Broker):
    """The broker as actors sharing a thread see it: a publish to one of their queues is a local hand-off."""

    def __init__(self, broker: Broker, queues: Iterable[str]) -> None:
        self.inner = broker
        self.url = broker.url
        self._local: dict[str, collections.deque] = {queue: collections.deque() for queue in queues}

    @property
    def reconnects(self) -> int:
        """The reconnects of the broker underneath."""
        return self.inner.reconnects

    @property
    def alarm(self) -> str | None:
        """The alarm of the broker underneath."""
        return self.inner.alarm

    def next(self, timeout: float | None) -> Delivery | None:
        """The next delivery for any of the actors: local ones first, then the broker's."""
        for local in self._local.values():
            if local:
                return local.popleft()
        return self.inner.get_any(self._local, timeout)

    def get(self, queue: str, timeout: float | None = None) -> Delivery | None:
        """The next delivery of `queue`, local ones first."""
        local = self._local.get(queue)
        if local:
            return local.popleft()
        return self.inner.get(queue, timeout)

    def publish(self, queue: str, body: bytes) -> None:
        """Hand `body` to a local actor, or publish it."""
        self.publish_many((queue,), body)

    def publish_many(self, queues, body: bytes) -> None:
        """Hand `body` to the local actors among `queues` and publish it once to the others."""
        remote = self._hand_over(queues, lambda queue: Delivery(queue, body, tag=_LOCAL))
        if remote:
            self.inner.publish_many(remote, body)

    def publish_object(self, queues, message: object, encode) -> None:
        """Hand `message` itself to the local actors among `queues`; the broker decides for the others."""
        remote = self._hand_over(queues, lambda queue: HandedDelivery(queue, message, encode, tag=_LOCAL))
        if remote:
            self.inner.publish_object(remote, message, encode)

    def _hand_over(self, queues, delivery) -> list[str]:
        """Queue `delivery(queue)` for each local queue of `queues`; returns the others."""
        remote = []
        for queue in queues:
            local = self._local.get(queue)
            if local is None:
                remote.append(queue)
            else:
                local.append(delivery(queue))
        return remote

    def ack(self, delivery: Delivery) -> None:
        """Confirm a broker delivery (a local one has nothing to confirm)."""
        if delivery.tag is not _LOCAL:
            self.inner.ack(delivery)

    def reject(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter a broker delivery; a refused local one (from an actor of this thread) is logged."""
        if delivery.tag is _LOCAL:
            log.warning("a message between actors of one thread was refused: %s", reason)
        else:
            self.inner.reject(delivery, reason)

    def declare(self, queue: str, *, dead_letter: str | None = None) -> None:
        """Declare on the broker."""
        self.inner.declare(queue, dead_letter=dead_letter)

    def depth(self, queue: str) -> int:
        """Waiting messages of `queue`, local ones included."""
        return len(self._local.get(queue, ())) + self.inner.depth(queue)

    def purge(self, queue: str) -> int:
        """Drop the waiting messages of `queue`, local ones included."""
        local = self._local.get(queue)
        dropped = len(local) if local else 0
        if local:
            local.clear()
        return dropped + self.inner.purge(queue)

    def delete(self, queue: str) -> None:
        """Delete `queue` on the broker."""
        self.inner.delete(queue)

    def close(self) -> None:
        """The broker belongs to whoever opened it: nothing to close here."""


class Together:
    """The actors of one thread and their router: the next delivery for any of them, and whose it is."""

    def __init__(self, actors: list[Actor], router: Colocated) -> None:
        self.actors, self.router = actors, router
        self._by_queue = {actor.queue: actor for actor in actors}
        self._reconnects = router.reconnects

    def next(self, timeout: float | None) -> Delivery | None:
        """The next delivery for any of the actors, waiting up to `timeout` seconds."""
        delivery = self.router.next(timeout)
        if self.router.reconnects != self._reconnects:  # what they sent may be gone: the driver replays at once
            self._reconnects = self.router.reconnects
            self.actors[0].announce_reconnect()
        return delivery

    def actor_of(self, delivery: Delivery) -> Actor | None:
        """The actor `delivery` is for; None if it has stopped (its leftovers stay unsettled, as a stopped process leaves them)."""
        actor = self._by_queue[delivery.queue]
        return actor if actor.running else None


def run_together(actors: list[Actor], router: Colocated, stop: threading.Event | None = None,
                 poll: float = 0.2) -> None:
    """Handle the messages of `actors` (built on `router`) on this thread until each is told to stop; an actor's exception ends it."""
    together = Together(actors, router)
    while any(actor.running for actor in actors) and not (stop is not None and stop.is_set()):
        delivery = together.next(poll)
        if delivery is None:
            continue
        actor = together.actor_of(delivery)
        if actor is not None:
            actor.handle(delivery)
