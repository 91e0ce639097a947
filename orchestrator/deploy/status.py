"""What a run is doing, read from the store (manifest, heartbeats) and optionally the broker (queue depths)."""
from __future__ import annotations

import time

from broker.base import Broker
from broker.errors import BrokerError
from neuron.topology import Topology
from orchestrator.errors import OrchestratorError
from paramstore.base import Store
from paramstore.keys import run_ids
from paramstore.run import RunRecord

COLUMNS = ("neuron", "alive", "generation", "step", "in", "out", "rejected", "queue", "last heartbeat")


def find_run(store: Store, run_id: str | None) -> str:
    """`run_id`, or the store's only run, or the newest of its runs (run ids sort by time)."""
    runs = run_ids(store)
    if run_id is not None:
        if run_id not in runs:
            raise OrchestratorError(f"no run {run_id!r} in the store (runs: {', '.join(runs) or 'none'})")
        return run_id
    if not runs:
        raise OrchestratorError("the store holds no runs")
    return runs[-1]


def run_status(store: Store, broker: Broker | None, run_id: str, now: float | None = None) -> tuple[dict, list[tuple]]:
    """(summary, one row per actor) of run `run_id`."""
    record = RunRecord(store, run_id)
    manifest = record.manifest()
    if manifest is None or manifest.topology is None:
        raise OrchestratorError(f"run {run_id!r} has no topology in its manifest yet")
    topo = Topology.from_dict(dict(manifest.topology))
    beats, now = record.heartbeats(), time.time() if now is None else now
    names = zip(topo.actor_names(), topo.all_queues())  # both list the neurons, then the head
    rows = []
    for name, queue in names:
        beat = beats.get(name)
        depth = "-"
        if broker is not None:
            try:
                depth = str(broker.depth(queue))
            except BrokerError:
                depth = "?"
        stats = (beat or {}).get("stats", {})
        rows.append((name, "yes" if beat else "no", _text((beat or {}).get("generation")), _text((beat or {}).get("step")),
                     _text(stats.get("in")), _text(stats.get("out")), _text(stats.get("rejected", 0) if beat else None),
                     depth, f"{max(0.0, now - beat['time']):.1f} s ago" if beat and "time" in beat else "-"))
    summary = {"run": run_id, "status": manifest.status or "?", "generation": manifest.generation,
               "checkpoint": manifest.latest, "total_steps": manifest.state.get("total_steps"),
               "test_accuracy": manifest.test_accuracy, "alive": sum(r[1] == "yes" for r in rows),
               "actors": len(rows), "shards": list(topo.shards), "rescales": [r.to_json() for r in manifest.rescales]}
    return summary, rows


def format_status(summary: dict, rows: list[tuple]) -> str:
    """The summary line and an aligned table."""
    done = summary["checkpoint"]
    progress = (f"checkpoint {done} of {summary['total_steps']} steps ({100 * done / summary['total_steps']:.0f}%)"
                if done is not None and summary["total_steps"] else f"checkpoint {done}")
    acc = summary["test_accuracy"]
    head = (f"run {summary['run']}: {summary['status']}, generation {summary['generation']}, {progress}, "
            f"{summary['alive']}/{summary['actors']} neurons alive"
            + (f", test accuracy {acc:.4f}" if isinstance(acc, (int, float)) else ""))
    head += f"\nneurons per layer: {summary.get('shards')}"
    for r in summary.get("rescales", []):
        head += (f"\nrescaled layer {r.get('layer')}: refused ({r['refused']})" if "refused" in r else
                 f"\nrescaled layer {r.get('layer')}: {r.get('from')} -> {r.get('to')} neurons at checkpoint "
                 f"{r.get('version')} (generation {r.get('generation')}, paused {r.get('pause_s')} s)")
    table = [COLUMNS, *rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in table]
    return "\n".join([head, *lines])


def _text(value: object) -> str:
    return "-" if value is None else str(value)
