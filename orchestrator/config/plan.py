"""The plan: a pure function from a config to the run's topology, and its table for `orchestrator plan`."""
from __future__ import annotations

from neuron.topology import Topology
from orchestrator.config import Config


def build_plan(config: Config, run_id: str, steps_per_epoch: int = 0) -> Topology:
    """The topology of run `run_id` of `config`: layer sizes, shard splits, hyperparameters, queues.

    `steps_per_epoch` (known once the data is) is needed only for a learning-rate decay.
    """
    net, tr = config.network, config.training
    return Topology(
        run_id=run_id,
        sizes=net.sizes,
        shards=net.shards,
        activation=net.activation,
        dtype=tr.dtype,
        optimizer=tr.optimizer,
        learning_rate=tr.learning_rate,
        momentum=tr.momentum,
        batch_size=tr.batch_size,
        micro_batches=tr.micro_batches,
        lr_decay=tr.lr_decay,
        weight_decay=tr.weight_decay,
        steps_per_epoch=steps_per_epoch,
    )


def plan_rows(topo: Topology) -> list[dict]:
    """One row per neuron: id, layer, rows, fan-in, parameters, queue."""
    rows = []
    for role in topo.neurons():
        layer, index = role
        a, b = topo.splits(layer)[index]
        fan_in = topo.sizes[layer - 1]
        rows.append({
            "id": role.name,
            "layer": layer,
            "rows": f"{a}-{b}",
            "fan_in": fan_in,
            "params": (b - a) * (fan_in + 1),
            "queue": role.queue(topo.run_id),
        })
    return rows


def format_plan(topo: Topology) -> str:
    """The plan as a text table with totals."""
    rows = plan_rows(topo)
    head = ["id", "layer", "rows", "fan_in", "params", "queue"]
    cells = [head] + [[str(r[h]) for h in head] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c[i].rjust(widths[i]) if i in (1, 3, 4) else c[i].ljust(widths[i])
                       for i in range(len(head))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    total = sum(r["params"] for r in rows)
    sizes = "-".join(str(s) for s in topo.sizes)
    lines.append("")
    lines.append(f"network {sizes}, {len(rows)} neurons + loss head, {total} parameters, "
                 f"batch {topo.batch_size} in {topo.micro_batches} micro-batches, {topo.optimizer}, {topo.dtype}")
    return "\n".join(lines)
