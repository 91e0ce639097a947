"""Rescaling a layer of a running run: the request a `scale` command leaves in the store, and its record.

The driver looks for a request after each committed checkpoint. It then switches the run's topology
(manifest first, so new neuron processes read the new split), has the deployment stop the layer's
neurons and start the new set, and opens a new generation from that checkpoint in which every actor
adopts the new split. The manifest's `rescales` list records each change and how long training paused.
"""
from __future__ import annotations

import secrets
import time

from neuron.topology import Topology
from orchestrator.errors import OrchestratorError
from paramstore.base import Store
from paramstore.checkpoint import Checkpoints


class RescaleRequested(OrchestratorError):
    """A scale request is waiting; the driver ends the generation at the checkpoint just committed."""

    def __init__(self, request: dict) -> None:
        super().__init__(f"rescale layer {request.get('layer')} to {request.get('shards')} neurons")
        self.request = request


def request_key(run_id: str) -> str:
    """Store key of the run's pending scale request."""
    return f"cuttlefish/{run_id}/scale-request"


def request_scale(store: Store, run_id: str, layer: int, shards: int) -> str:
    """Leave a request for the run's driver; returns its id."""
    rid = secrets.token_hex(4)
    store.put_json(request_key(run_id), {"id": rid, "layer": layer, "shards": shards, "asked": time.time()})
    return rid


def pending(store: Store, run_id: str) -> dict | None:
    """The waiting request, if any and well-formed."""
    request = store.get_json(request_key(run_id))
    if not isinstance(request, dict) or not all(isinstance(request.get(k), int) for k in ("layer", "shards")):
        return None
    return request


def clear(store: Store, run_id: str) -> None:
    """Remove the run's request (it has been carried out or refused)."""
    store.delete(request_key(run_id))


def resolve(checkpoints: Checkpoints, topo: Topology, request: dict, *, can_replace: bool) -> Topology | None:
    """The topology the request asks for, or None (recorded as refused in the manifest) if it cannot be."""
    try:
        if not can_replace:
            raise ValueError("this deployment cannot replace neurons (rescale runs on --target local or compose)")
        return topo.with_shards(request["layer"], request["shards"])
    except ValueError as exc:
        record(checkpoints, {**request, "refused": str(exc)})
        clear(checkpoints.store, topo.run_id)
        return None


def record(checkpoints: Checkpoints, entry: dict) -> None:
    """Append `entry` to the manifest's `rescales` list."""
    history = list((checkpoints.manifest() or {}).get("rescales", []))
    checkpoints.update_manifest(rescales=[*history, entry])
