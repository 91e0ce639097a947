"""Who an actor is: a (layer, index) pair, with its name, queue, environment and service name in one place.

Layer 0 is the driver, layers 1..depth the dense neurons, and HEAD_LAYER the loss head. The head has the
one number HEAD_LAYER everywhere (in memory and in message headers) and the one word "head" wherever a
person or a deployment spells it (names, CUTTLEFISH_LAYER, service names).
"""
from __future__ import annotations

from typing import NamedTuple

DRIVER_LAYER = 0
HEAD_LAYER = 0xFFFF  # the largest layer number a message header holds, so no real layer can take it
HEAD_WORD = "head"
MAX_LAYER = HEAD_LAYER - 1  # the deepest dense layer a network may have


class Role(NamedTuple):
    """One participant of a run: the driver (0, 0), neuron (layer, index) or the loss head (HEAD_LAYER, 0)."""

    layer: int
    index: int = 0  # type: ignore[assignment]  # the issue's name for it, shadowing tuple.index on purpose

    @property
    def is_head(self) -> bool:
        """Whether this is the loss head."""
        return self.layer == HEAD_LAYER

    @property
    def is_driver(self) -> bool:
        """Whether this is the driver."""
        return self.layer == DRIVER_LAYER

    @property
    def name(self) -> str:
        """Human name: "L2.1", "head" or "driver" (heartbeat keys and status rows use it)."""
        if self.is_head:
            return HEAD_WORD
        if self.is_driver:
            return "driver"
        return f"L{self.layer}.{self.index}"

    @property
    def slug(self) -> str:
        """The name as a DNS-safe service suffix: "l2-1" or "head" (ECS service and task names)."""
        return self.name.lower().replace(".", "-")

    @property
    def compose_service(self) -> str:
        """The docker-compose service that runs this actor, e.g. "neuron-l2-1"."""
        return f"neuron-{self.slug}"

    def queue(self, run_id: str) -> str:
        """The inbound queue of this actor in run `run_id`."""
        if self.is_driver:
            return f"cf.{run_id}.driver"
        if self.is_head:
            return f"cf.{run_id}.{HEAD_WORD}"
        return f"cf.{run_id}.L{self.layer}.{self.index}"

    def env(self) -> dict[str, str]:
        """The environment variables that tell `python -m neuron` to be this actor."""
        layer = HEAD_WORD if self.is_head else str(self.layer)
        return {"CUTTLEFISH_LAYER": layer, "CUTTLEFISH_INDEX": str(self.index)}

    @classmethod
    def parse(cls, layer: str, index: str = "0") -> Role:
        """The role that CUTTLEFISH_LAYER / --layer (a number or "head") and the index spell; ValueError if none."""
        number = HEAD_LAYER if layer == HEAD_WORD else int(layer)
        role = cls(number, int(index))
        if not (role.is_head or 1 <= number <= MAX_LAYER) or role.index < 0:
            raise ValueError(f"no neuron at layer {layer}, index {index}")
        return role


DRIVER = Role(DRIVER_LAYER, 0)
HEAD = Role(HEAD_LAYER, 0)
