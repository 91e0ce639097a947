"""Rescaling a layer of a running run: the request a `scale` command leaves in the store, and its record.

The driver looks for a request after each committed checkpoint. It then switches the run's topology
(manifest first, so new neuron processes read the new split), has the deployment stop the layer's
neurons and start the new set, and opens a new generation from that checkpoint in which every actor
adopts the new split. The manifest's `rescales` list records each change and how long training paused; the request and
the record are kept by paramstore.run.RunRecord.
"""
from __future__ import annotations

from neuron.topology import Topology
from orchestrator.errors import OrchestratorError
from paramstore.manifest import Rescale, ScaleRequest
from paramstore.run import RunRecord


class RescaleRequested(OrchestratorError):
    """A scale request is waiting; the driver ends the generation at the checkpoint just committed."""

    def __init__(self, request: ScaleRequest) -> None:
        super().__init__(f"rescale layer {request.layer} to {request.shards} neurons")
        self.request = request


def check_neuron_limit(topo: Topology, limit: int, layer: int) -> None:
    """ValueError, naming `limit` and what `layer` could have, if `topo` has more neurons than `limit` allows."""
    total = sum(topo.shards)
    if total <= limit:
        return
    room = limit - (total - topo.shards[layer - 1])
    fits = f"; layer {layer} can have at most {room}" if room >= 1 else ""
    raise ValueError(f"{total} neurons exceed the limit of {limit} per run{fits}")


def resolve(record: RunRecord, topo: Topology, request: ScaleRequest, *, can_replace: bool,
            limit: int) -> Topology | None:
    """The topology the request asks for, or None (recorded as refused in the manifest) if it cannot be.

    `limit` is the run's neurons at most: `scale` checks it too, but a request may come from elsewhere.
    """
    try:
        if not can_replace:
            raise ValueError("this deployment cannot replace neurons (rescale runs on --target local or compose)")
        new = topo.with_shards(request.layer, request.shards)
        check_neuron_limit(new, limit, request.layer)
        return new
    except ValueError as exc:
        record.add_rescale(Rescale(request, refused=str(exc)))
        record.clear_scale_request()
        return None
