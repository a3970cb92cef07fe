"""``NodeRuntime``: the logic of one emulated node, hosted by a ``NodeActor`` (actors/node.py).

It owns the node's transport endpoint (uncapped process: delay holding must not be throttled),
dispatches messages to the node's roles, talks to the node's capped compute process and records
spans. Roles are plain classes registered in ``testbed.workload.ROLES``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from testbed import clock
from testbed.config.models import HardwareClass, Tier
from testbed.metrics import SpanBuffer, make_span
from testbed.transport import Endpoint, Message

logger = logging.getLogger(__name__)


class NodeRuntime:
    """One node: endpoint, roles, compute client and span buffer."""

    def __init__(self, name: str, tier: Tier, hardware: HardwareClass, netns: str | None, address: str,
                 run_id: str, seed: int,
                 compute: Callable[..., tuple[np.ndarray, dict[str, Any]]],
                 tx_energy_uj_per_bit: dict[str, float], spans: SpanBuffer) -> None:
        self.name = name
        self.tier = tier
        self.hardware = hardware
        self.run_id = run_id
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._compute = compute
        self.tx_energy = tx_energy_uj_per_bit
        self.spans = spans
        self.roles: dict[str, Any] = {}
        self.phase = ""
        self.away = False  # the node has left (scenario churn): roles stop starting new work
        self.endpoint = Endpoint(name, address, netns, handler=self._on_message, seed=seed)
        self.compute_actor: Any = None  # the Ray handle of the capped compute process, set by the host actor

    def begin_request(self) -> None:
        """A workload is starting a request that it will record (its ``request`` span), unless interrupted: the
        difference is what a run lost in flight (the manifest's ``requests``)."""
        self.spans.begin(self.name)

    def span(self, kind: str, start_ns: int, end_ns: int, **kw: Any) -> None:
        kw.setdefault("phase", self.phase)
        self.spans.add(make_span(self.run_id, self.name, kind, start_ns, end_ns, **kw))

    def compute(self, key: str, array: np.ndarray, request_id: int = -1, start: int = 0,
                end: int | None = None, method: str | None = None, kwargs: dict[str, Any] | None = None) -> np.ndarray:
        """Run model ``key`` (blocks ``start..end-1`` of a chain, or the model's entry point ``method``
        with ``kwargs``) on the node's capped compute process. Records a compute span.
        """
        out, st = self._compute(key, array, start, end, method, kwargs)
        # the wait for the node's one compute process (other calls ahead of this one, and the Ray call itself):
        # queueing, not overhead; at a shared edge it is most of a request's latency
        self.span("queue", st["sent_ns"], st["start_ns"], request_id=request_id, at="compute", model=key)
        busy_w = self.hardware.power_busy_w or 0.0
        self.span("compute", st["start_ns"], st["end_ns"], request_id=request_id, cpu_ms=st["cpu_ns"] / 1e6,
                  class_ms=st["class_ns"] / 1e6, energy_j=busy_w * st["class_ns"] / 1e9, model=key,
                  wall_compute_ms=st["wall_ns"] / 1e6, call_overhead_ms=st.get("call_overhead_ms"),
                  blocks=[start, end])
        return out

    def tx_energy_j(self, src: str, dst: str, nbytes: int) -> float:
        """Radio energy the sender spends on the first hop of the path src→dst."""
        return self.tx_energy.get(f"{src}>{dst}", 0.0) * nbytes * 8 / 1e6

    def request(self, dst: str, kind: str, array: np.ndarray | None, meta: dict[str, Any],
                request_id: int, channel: str = "data", timeout: float = 120.0) -> Message:
        """Send a request and wait for the reply; records the downlink transfer span of the reply.

        ``channel="bulk"`` sends on a connection of its own (e.g. model weights), so it shares the
        link with request traffic instead of blocking it.
        """
        reply = self.endpoint.request(dst, kind, array, dict(meta, request_id=request_id, phase=self.phase),
                                      timeout, channel)
        self.span("transfer", reply.send_ns, reply.release_ns, request_id=request_id, nbytes=reply.payload_bytes,
                  src=reply.src, dst=self.name, held_ms=reply.added_delay_ns / 1e6,
                  energy_j=self.tx_energy_j(reply.src, self.name, reply.payload_bytes))
        if reply.kind == "error":
            raise RuntimeError(f"{dst} failed on {kind}: {reply.meta.get('error')}")
        return reply

    def _on_message(self, msg: Message) -> Any:
        rid = int(msg.meta.get("request_id", -1))
        phase = str(msg.meta.get("phase", self.phase))
        # uplink transfer as seen at its end: sender's send time to our release time
        self.span("transfer", msg.send_ns, msg.release_ns, request_id=rid, phase=phase, nbytes=msg.payload_bytes,
                  src=msg.src, dst=self.name, held_ms=msg.added_delay_ns / 1e6,
                  energy_j=self.tx_energy_j(msg.src, self.name, msg.payload_bytes))
        role = self.roles.get(str(msg.meta.get("role", "")))
        if role is None:
            if len(self.roles) == 1:
                role = next(iter(self.roles.values()))
            else:
                raise RuntimeError(f"{self.name}: no role for message {msg.kind!r}")
        handled_at = clock.now_ns()
        self.span("queue", msg.release_ns, handled_at, request_id=rid, phase=phase, at="handler")
        return role.on_message(self, msg)
