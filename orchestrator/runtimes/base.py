"""The interface every runtime implements: start the actors of a run, watch them, replace a layer, stop."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar

from broker.base import Broker, Delivery
from neuron.topology import Topology
from paramstore.checkpoint import Checkpoints


@dataclass(frozen=True)
class Services:
    """What a runtime may use: the run's open broker and checkpoints, and the URLs for processes of its own."""

    broker: Broker
    checkpoints: Checkpoints
    broker_url: str
    store_url: str


class Runtime(ABC):
    """Where the actors of one run live; a context manager that starts them on entry and stops them on exit."""

    can_replace: ClassVar[bool] = False  # whether replace_layer works, so the driver may rescale a layer

    @classmethod
    @abstractmethod
    def create(cls, topo: Topology, services: Services) -> Runtime:
        """A runtime for the actors of `topo`, not started yet."""

    @abstractmethod
    def start(self) -> None:
        """Start every actor (or, for actors run elsewhere, begin watching them)."""

    @abstractmethod
    def check(self) -> None:
        """Raise NeuronLost (the driver recovers) or TrainingError (the run ends) if an actor is gone."""

    @abstractmethod
    def stop(self) -> None:
        """Stop what start() started; the driver has already told the actors to exit."""

    def wait_for(self, broker: Broker, queue: str, timeout: float) -> Delivery | None:
        """The driver's next delivery of `queue`; a runtime whose actors share the driver's thread runs them meanwhile."""
        return broker.get(queue, timeout=timeout)

    def replace_layer(self, topo: Topology, layer: int) -> None:
        """Replace the neurons of `layer` by the set `topo` splits it into; only where can_replace is true."""
        raise NotImplementedError(f"{type(self).__name__} cannot replace neurons")

    def stats(self) -> dict[str, dict]:
        """Per-actor figures the runtime knows (message counters, processes), by actor name."""
        return {}

    def __enter__(self) -> Runtime:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
