"""Cost of message authentication: HMAC-SHA256 per message, against the whole encode and decode.

Writes bench/results/mac.json. For each body size: microseconds per message of encode() plus decode()
(which sign and verify), of the signature alone (one HMAC over the body), and the share of the latter.
"""
from __future__ import annotations

import hmac
import json
import pathlib
import platform
import time

import numpy as np

from neuron import codec
from neuron.topology import Topology

OUT = pathlib.Path(__file__).resolve().parent / "results" / "mac.json"
KEY = bytes(range(32))
SIZES = (16, 1024, 32 * 1024, 256 * 1024)  # float32 elements: 64 B, 4 KB, 128 KB, 1 MB payloads


def _per_call(fn, min_seconds: float = 0.5) -> float:
    """Best of 3 timings of `fn`, in microseconds per call."""
    best = float("inf")
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < min_seconds:
            for _ in range(20):
                fn()
            n += 20
        best = min(best, elapsed / n * 1e6)
    return best


def main() -> int:
    """Run the benchmark and write its results."""
    rows = []
    for elements in SIZES:
        cols = 16 if elements >= 16 else elements
        x = np.random.default_rng(0).standard_normal((elements // cols, cols)).astype("<f4")
        topo = Topology("bench-mac", sizes=(cols, cols, 2), shards=(1, 1), batch_size=x.shape[0]).with_key(KEY)
        schema = topo.schema_for(1, 0)
        body = codec.encode(codec.ACT, topo.run_tag, 1, 0, nmicro=1, array=x, key=KEY)
        codec.decode(body, schema)  # it must be valid
        signed = memoryview(body)[:-codec.MAC_SIZE]
        # default arguments bind this size's values (the calls run before the loop moves on anyway)
        round_trip = _per_call(lambda topo=topo, x=x, schema=schema: codec.decode(
            codec.encode(codec.ACT, topo.run_tag, 1, 0, nmicro=1, array=x, key=KEY), schema))
        mac = _per_call(lambda signed=signed: hmac.digest(KEY, signed, "sha256"))
        # sign (encode) and verify (decode) are one HMAC each
        rows.append({"body_bytes": len(body), "encode_decode_us": round(round_trip, 2), "one_hmac_us": round(mac, 2),
                     "mac_share_of_encode_decode": round(2 * mac / round_trip, 3),
                     "hmac_mb_per_s": round(len(body) / mac, 1)})
        print(rows[-1])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"what": "HMAC-SHA256 message authentication cost per message",
                               "python": platform.python_version(), "results": rows}, indent=2) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
