"""The ``chain`` role: the node that hosts it is the chain's entry point on the emulated network.

Nodes send it signed raw transactions, calls and log queries (``ChainClient`` over ``over_links``);
it hands them to the run's ``ChainActor`` and returns the receipt once the transaction is mined.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from testbed import clock
from testbed.chain.client import serve
from testbed.transport import Message
from testbed.workload import ROLES


@ROLES.register("chain")
class ChainGatewayRole:
    def __init__(self, rt: Any, params: dict[str, Any]) -> None:
        self.chain = params["chain"]  # Ray handle of the ChainActor

    def _go(self, fn: str, *args: Any) -> Any:
        import ray

        return ray.get(getattr(self.chain, fn).remote(*args), timeout=clock.wall(120))

    def on_message(self, rt: Any, msg: Message) -> tuple[str, np.ndarray | None, dict[str, Any]]:
        payload = msg.array.tobytes() if msg.array is not None else None
        t0 = clock.now_ns()
        out, meta = serve(self._go, msg.kind, payload, msg.meta)
        rt.span("chain_exec", t0, clock.now_ns(), request_id=int(msg.meta.get("request_id", -1)),
                fn=str(msg.meta.get("fn", msg.kind)), src=msg.src)
        return "chain_reply", (np.frombuffer(out, np.uint8) if out else None), meta


@ROLES.register("chain_probe")
class ChainProbeRole:
    """Sends transactions one after another from its node and times each until its receipt is back
    (``testbed bench chain``)."""

    def __init__(self, rt: Any, params: dict[str, Any]) -> None:
        self.cfg = params

    def run(self, rt: Any, n: int, spread_ms: float = 0.0) -> list[float]:
        from testbed.chain import keccak
        from testbed.chain.client import node_wallet

        w = node_wallet(rt, self.cfg)
        w.transact("register", False, value=int(self.cfg["deposit_wei"]))
        out = []
        for i in range(n):
            if spread_ms:
                clock.sleep(float(rt.rng.uniform(0, spread_ms)) / 1e3)  # land anywhere in the block interval
            t0 = clock.now_ns()
            w.transact("require_task", keccak(f"probe/{i}".encode()), keccak(b"probe"), value=1, request_id=i)
            out.append((clock.now_ns() - t0) / 1e6)
        return out
