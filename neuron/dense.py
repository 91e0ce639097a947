"""A neuron: the actor owning rows [start, stop) of one dense layer, with its forward/backward state machine."""
from __future__ import annotations

import numpy as np

from broker.base import Broker
from neuron import codec, protocol
from neuron.actor import Actor
from neuron.errors import CheckpointMissing, ProtocolError, TrainingDiverged
from neuron.kernels import activation_grad, dense_backward_input, dense_backward_params, dense_forward, scale_pixels
from neuron.optim import apply_update, state_names
from neuron.role import HEAD, Role
from neuron.topology import Topology
from paramstore.checkpoint import Checkpoints
from paramstore.errors import CheckpointError


class DenseNeuron(Actor):
    """Neuron (layer, index): gathers activations, computes its slice, returns gradients, updates once per step."""

    def __init__(self, topo: Topology, layer: int, index: int, broker: Broker, checkpoints: Checkpoints) -> None:
        super().__init__(topo, layer, index, broker)
        if not 1 <= layer <= topo.depth:
            raise ValueError(f"layer {layer} is not a dense layer of a {topo.depth}-layer network")
        self.checkpoints = checkpoints
        self.activation = topo.activation_of(layer)
        self.state_names = state_names(topo.optimizer)
        self.on_topology()
        self.params: dict[str, np.ndarray] = {}
        self.opt_state: dict[str, np.ndarray] = {}
        self._reset()

    def on_topology(self) -> None:
        """This neuron's rows and its neighbours' splits and queues under the current topology."""
        topo, layer = self.topo, self.layer
        self.rows = topo.splits(layer)[self.index]
        self.prev_splits = topo.splits(layer - 1)
        self.next_queues = [HEAD.queue(topo.run_id)] if layer == topo.depth else [
            topo.queue(layer + 1, s) for s in range(topo.shards[layer])]
        self.prev_queues = [topo.queue(layer - 1, s) for s in range(len(self.prev_splits))] if layer > 1 else []

    def _reset(self) -> None:
        self._fwd: dict[tuple[int, int, int], dict[int, np.ndarray]] = {}  # (eval, step, micro) -> parts
        self._bwd: dict[tuple[int, int], dict[int, np.ndarray]] = {}  # (step, micro) -> parts
        self._meta: dict[int, tuple[int, int]] = {}  # step -> (nmicro, flags) of its training messages
        self._saved: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # micro -> (x, z, a)
        self._grads: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # micro -> (dW, db) of that micro-batch

    def on_start(self, version: int) -> None:
        """Load rows [start, stop) of the committed checkpoint `version` (any earlier split works)."""
        a, b = self.rows
        try:
            arrays = self.checkpoints.read_rows(version, self.layer, a, b, ("W", "b", *self.state_names))
        except CheckpointError as exc:
            raise CheckpointMissing(f"{self.name}: cannot load checkpoint {version}: {exc}") from exc
        self._reset()
        dtype = self.topo.np_dtype
        self.params = {k: np.array(arrays[k], dtype=dtype) for k in ("W", "b")}
        self.opt_state = {k: np.array(arrays[k], dtype=dtype) for k in self.state_names}
        self.stats["loads"] += 1

    def on_data(self, msg: codec.Message) -> None:
        """Buffer an activation or gradient part after checking it agrees with its siblings."""
        rows = msg.values.shape[0]
        if msg.kind == protocol.ACT:
            evaluating = msg.flags & protocol.EVAL
            if not evaluating:
                self._check_step_meta(msg)
            parts = self._fwd.setdefault((evaluating, msg.step, msg.micro), {})
        elif msg.kind == protocol.GRAD:
            # a gradient answers this neuron's forward of the same micro-batch, so that must have happened
            saved = self._saved.get(msg.micro) if msg.step == self.step else None
            if saved is None or saved[0].shape[0] != rows:
                raise ProtocolError(f"gradient for step {msg.step} micro {msg.micro} matches no forward")
            parts = self._bwd.setdefault((msg.step, msg.micro), {})
        else:
            raise ProtocolError(f"a neuron takes no {protocol.KINDS[msg.kind]} messages")
        if parts and next(iter(parts.values())).shape[0] != rows:
            raise ProtocolError(f"{protocol.KINDS[msg.kind]} part of {rows} rows disagrees with its siblings")
        values = msg.values
        if values.dtype == codec.PIXELS:  # the driver's raw pixels (layer 1 only), scaled now: off the step's critical path
            values = scale_pixels(values, self.topo.np_dtype)  # (n, f)
        parts[msg.src_index] = values

    def _check_step_meta(self, msg: codec.Message) -> None:
        meta = (msg.nmicro, msg.flags & protocol.CHECKPOINT)
        if not (1 <= msg.nmicro <= self.topo.micro_batches and msg.micro < msg.nmicro):
            raise ProtocolError(f"micro-batch {msg.micro} of {msg.nmicro} (at most {self.topo.micro_batches})")
        known = self._meta.setdefault(msg.step, meta)
        if known != meta:
            raise ProtocolError(f"step {msg.step} announced as {known}, now as {meta}")

    def progress(self) -> None:
        """Run every forward, backward and update whose inputs are complete, in a fixed order."""
        n_prev, n_next = len(self.prev_splits), len(self.next_queues)
        while True:
            step = self.step  # only an update, after these, moves it
            ready_fwd = sorted(k for k, p in self._fwd.items()
                               if k[1] == step and len(p) == n_prev) if self._fwd else ()
            for key in ready_fwd:
                self._forward(key, self._fwd.pop(key))
            ready_bwd = sorted(k for k, p in self._bwd.items()
                               if k[0] == step and len(p) == n_next and k[1] in self._saved) if self._bwd else ()
            for step_micro in ready_bwd:
                self._backward(step_micro[1], self._bwd.pop(step_micro))
            nmicro = self._meta.get(self.step, (0, 0))[0]
            if nmicro and len(self._grads) == nmicro:
                self._update(nmicro)
            elif not (ready_fwd or ready_bwd):
                return

    def _forward(self, key: tuple[int, int, int], parts: dict[int, np.ndarray]) -> None:
        evaluating, step, micro = key
        x = parts[0] if len(parts) == 1 else np.concatenate([parts[s] for s in range(len(parts))], axis=1)  # (n, f)
        z, a = dense_forward(x, self.params["W"], self.params["b"], self.activation)  # (n, u), (n, u)
        _check_finite(a, self.name, "activations", step)
        if evaluating:
            self.send(self.next_queues, protocol.ACT, step, micro=micro, flags=protocol.EVAL, array=a)
            return
        nmicro, flags = self._meta[step]
        self._saved[micro] = (x, z, a)
        self.send(self.next_queues, protocol.ACT, step, micro=micro, nmicro=nmicro, flags=flags, array=a)

    def _backward(self, micro: int, parts: dict[int, np.ndarray]) -> None:
        grad_a = parts[0]  # (n, u)
        for s in range(1, len(parts)):
            grad_a = grad_a + parts[s]  # (n, u): contributions summed in source order, always the same
        x, z, a = self._saved[micro]
        grad_z = activation_grad(z, a, grad_a, self.activation)  # (n, u)
        if self.prev_queues:
            grad_x = dense_backward_input(grad_z, self.params["W"])  # (n, f)
            _check_finite(grad_x, self.name, "gradients", self.step)
            for s, (c0, c1) in enumerate(self.prev_splits):
                self.send([self.prev_queues[s]], protocol.GRAD, self.step, micro=micro, array=grad_x[:, c0:c1],
                          to=Role(self.role.layer - 1, s))
        # parameter gradients now, while the previous layer works on grad_x, not all at the step's end
        self._grads[micro] = dense_backward_params(x, grad_z)  # (u, f), (u,)

    def _update(self, nmicro: int) -> None:
        dw, db = self._grads[0]  # (u, f), (u,)
        for m in range(1, nmicro):
            dw = dw + self._grads[m][0]  # (u, f): summed in micro-batch order, whatever order they came in
            db = db + self._grads[m][1]  # (u,)
        flags = self._meta.pop(self.step)[1]
        apply_update(self.topo.optimizer, self.params, {"W": dw, "b": db}, self.opt_state,
                     self.topo.learning_rate_at(self.step), self.topo.momentum, self.step + 1,
                     self.topo.weight_decay)
        self.step += 1
        self._saved.clear()
        self._grads.clear()
        self.forget_before(self.step)
        if self._fwd:
            self._fwd = {k: v for k, v in self._fwd.items() if k[1] >= self.step}
        if self._bwd:
            self._bwd = {k: v for k, v in self._bwd.items() if k[0] >= self.step}
        self.stats["steps"] += 1
        if flags & protocol.CHECKPOINT:
            self.write_checkpoint()

    def write_checkpoint(self) -> None:
        """Write this slice's parameters and optimizer state as version `step`, then tell the driver."""
        a, b = self.rows
        self.checkpoints.write_slice(self.step, self.layer, a, b, {**self.params, **self.opt_state})
        self.report(protocol.Saved(self.name, self.step, self.layer, [a, b]))


def _check_finite(array: np.ndarray, name: str, what: str, step: int) -> None:
    # peers reject non-finite values as hostile, so a diverging run must end here, loudly
    if not np.isfinite(array).all():
        raise TrainingDiverged(f"training diverged: {name} computed non-finite {what} at step {step}")
