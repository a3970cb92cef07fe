"""Split planners: where to cut a chain of blocks across device, edge and cloud.

A plan is two cut indices ``(c1, c2)`` with ``0 <= c1 <= c2 <= n``: the device runs blocks
``[0, c1)``, the edge ``[c1, c2)``, the cloud ``[c2, n)``. The cost model predicts a plan's latency and
device energy from block profiles (ms per block on each node) and the link state (path rate and
delay), the way Neurosurgeon predicts from per-layer profiles and the current bandwidth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from testbed.registry import Registry
from testbed.transport import wire_bytes

FRAME_OVERHEAD = 160  # bytes of our framing and metadata per message (measured: header 24 + JSON ~130)
PER_MESSAGE_MS = 0.35  # per message: transport both ends plus the handler hand-off
PER_COMPUTE_MS = 1.5  # per compute segment: the NodeActor -> ComputeActor call and tensor conversion


@dataclass(frozen=True)
class PathState:
    """A path's state as the planner sees it: bottleneck rate and one-way delay."""

    rate_mbit: float
    delay_ms: float

    def transfer_ms(self, nbytes: int) -> float:
        return wire_bytes(nbytes + FRAME_OVERHEAD) * 8 / (self.rate_mbit * 1e3) + self.delay_ms + PER_MESSAGE_MS


@dataclass(frozen=True)
class SplitProfile:
    """Everything a planner needs for one device: per-block ms on each tier, bytes at each cut, paths."""

    device_ms: tuple[float, ...]
    edge_ms: tuple[float, ...]
    cloud_ms: tuple[float, ...]
    cut_bytes: tuple[int, ...]  # len n+1: bytes crossing a cut before block k (k = n: the output)
    paths: dict[str, PathState]  # "d>e", "e>d", "e>c", "c>e", "d>c", "c>d"
    device_busy_w: float = 0.0
    device_idle_w: float = 0.0
    tx_uj_per_bit: float = 0.0

    @property
    def n(self) -> int:
        return len(self.device_ms)


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    device_energy_j: float
    parts: dict[str, float]


def predict(p: SplitProfile, c1: int, c2: int) -> Prediction:
    """Predicted end-to-end latency and device energy of plan ``(c1, c2)``."""
    n = p.n
    if not 0 <= c1 <= c2 <= n:
        raise ValueError(f"invalid plan ({c1}, {c2}) for {n} blocks")
    dev = sum(p.device_ms[:c1]) + (PER_COMPUTE_MS if c1 > 0 else 0.0)
    edge = sum(p.edge_ms[c1:c2]) + (PER_COMPUTE_MS if c2 > c1 else 0.0)
    cloud = sum(p.cloud_ms[c2:]) + (PER_COMPUTE_MS if n > c2 else 0.0)
    parts = {"device": dev, "edge": edge, "cloud": cloud, "up": 0.0, "mid": 0.0, "down": 0.0}
    sent = 0
    if c1 < n:  # something leaves the device
        out = p.cut_bytes[n]
        sent = p.cut_bytes[c1]
        if c1 < c2 and c2 < n:  # device -> edge -> cloud, reply cloud -> edge -> device
            parts["up"] = p.paths["d>e"].transfer_ms(p.cut_bytes[c1])
            parts["mid"] = p.paths["e>c"].transfer_ms(p.cut_bytes[c2]) + p.paths["c>e"].transfer_ms(out)
            parts["down"] = p.paths["e>d"].transfer_ms(out)
        elif c1 < c2:  # device -> edge only
            parts["up"] = p.paths["d>e"].transfer_ms(p.cut_bytes[c1])
            parts["down"] = p.paths["e>d"].transfer_ms(out)
        else:  # device -> cloud directly (edge does nothing)
            parts["up"] = p.paths["d>c"].transfer_ms(p.cut_bytes[c1])
            parts["down"] = p.paths["c>d"].transfer_ms(out)
    latency = sum(parts.values())
    waiting_s = (latency - dev) / 1e3
    energy = p.device_busy_w * dev / 1e3 + p.tx_uj_per_bit * sent * 8 / 1e6 + p.device_idle_w * waiting_s
    return Prediction(latency, energy, parts)


class Planner(ABC):
    """Answers one question: where to cut, given the profile and the link state.

    ``adaptive`` planners are asked again when the link state changes during a run; the others keep
    the plan they made at the start.
    """

    adaptive = False

    def __init__(self, **params: Any) -> None:
        self.params = params

    @abstractmethod
    def choose(self, p: SplitProfile) -> tuple[int, int]:
        """Return the plan ``(c1, c2)``."""


PLANNERS: Registry[type[Planner]] = Registry("planner")


@PLANNERS.register("device_only")
class DeviceOnly(Planner):
    def choose(self, p: SplitProfile) -> tuple[int, int]:
        return p.n, p.n


@PLANNERS.register("edge_only")
class EdgeOnly(Planner):
    def choose(self, p: SplitProfile) -> tuple[int, int]:
        return 0, p.n


@PLANNERS.register("cloud_only")
class CloudOnly(Planner):
    def choose(self, p: SplitProfile) -> tuple[int, int]:
        return 0, 0


@PLANNERS.register("fixed")
class FixedCut(Planner):
    """Blocks ``[0, k)`` on the device, the rest on the edge (``tier: cloud`` sends the rest to the cloud)."""

    def choose(self, p: SplitProfile) -> tuple[int, int]:
        k = max(0, min(p.n, int(self.params.get("k", 1))))
        return (k, k) if self.params.get("tier") == "cloud" else (k, p.n)


@PLANNERS.register("neurosurgeon_latency")
class NeurosurgeonLatency(Planner):
    """Neurosurgeon: one cut between the device and its server (the edge), minimum predicted latency."""

    objective = "latency_ms"

    def choose(self, p: SplitProfile) -> tuple[int, int]:
        return min(((k, p.n) for k in range(p.n + 1)),
                   key=lambda c: (getattr(predict(p, *c), self.objective), -c[0]))


@PLANNERS.register("neurosurgeon_energy")
class NeurosurgeonEnergy(NeurosurgeonLatency):
    """Neurosurgeon: one cut, minimum predicted device energy (compute, radio, idle wait)."""

    objective = "device_energy_j"


@PLANNERS.register("adaptive_neurosurgeon")
class AdaptiveNeurosurgeon(NeurosurgeonLatency):
    """Neurosurgeon latency, re-planned whenever the link state changes during a run."""

    adaptive = True


@PLANNERS.register("exhaustive")
class Exhaustive(Planner):
    """The optimum over every two-cut, three-tier plan (O(n^2) predictions)."""

    def choose(self, p: SplitProfile) -> tuple[int, int]:
        plans = [(c1, c2) for c1 in range(p.n + 1) for c2 in range(c1, p.n + 1)]
        return min(plans, key=lambda c: (predict(p, *c).latency_ms, -c[0], -c[1]))
