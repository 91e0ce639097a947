"""Loaded by every neuron process of bench/step_chain.py (through PYTHONPATH): timestamps of its work.

With CUTTLEFISH_CHAIN_TRACE set to a folder, every handled message, decode, publish and kernel of this
process is timed (CLOCK_MONOTONIC, shared by the processes of one machine) and written to
<folder>/<pid>.log at exit. Benchmark use only: it wraps functions of the running code.
"""
import atexit
import os
import time

_FOLDER = os.environ.get("CUTTLEFISH_CHAIN_TRACE")
if _FOLDER and os.environ.get("CUTTLEFISH_LAYER"):  # neuron processes only
    from pika.adapters import blocking_connection

    from neuron import actor, codec, dense

    _events: list = []
    _clock = time.perf_counter_ns

    def _dump() -> None:
        with open(os.path.join(_FOLDER, f"{os.getpid()}.log"), "w", encoding="utf-8") as out:
            out.writelines(" ".join(map(str, e)) + "\n" for e in _events)

    atexit.register(_dump)

    def _timed(module, name: str) -> None:
        inner = getattr(module, name)

        def timed(*args, **kwargs):
            t0 = _clock()
            result = inner(*args, **kwargs)
            _events.append(("K", t0, _clock(), name))
            return result
        setattr(module, name, timed)

    for _name in ("dense_forward", "dense_backward_params", "dense_backward_input", "activation_grad",
                  "scale_pixels", "apply_update"):
        _timed(dense, _name)
    _timed(codec, "outgoing")
    _received = codec.received

    def _received_timed(delivery, schema):
        t0 = _clock()
        msg = _received(delivery, schema)
        _events.append(("D", t0, _clock(), msg.kind, msg.step))
        return msg
    codec.received = _received_timed
    _handle = actor.Actor.handle

    def _handle_timed(self, delivery):
        t0 = _clock()
        _handle(self, delivery)
        _events.append(("H", t0, _clock(), self.name))
    actor.Actor.handle = _handle_timed
    _publish = blocking_connection.BlockingChannel.basic_publish

    def _publish_timed(self, exchange, routing_key, body, *args, **kwargs):
        t0 = _clock()
        result = _publish(self, exchange, routing_key, body, *args, **kwargs)
        _events.append(("P", t0, _clock(), routing_key))
        return result
    blocking_connection.BlockingChannel.basic_publish = _publish_timed
