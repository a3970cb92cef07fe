"""Choosing a run's time-dilation factor ``k`` (DESIGN §8; ``testbed.clock`` applies it).

``auto`` takes the smallest ``k`` for which

(a) every node's class reaches its catalogued latency on the model it runs: the host's one-thread time for the
    model, times a headroom for load and spread (``HEADROOM``), must fit in the class's time stretched ``k``
    times: ``k >= HEADROOM * host_ms / class_ms``; and
(b) the nodes' summed CPU demand fits in ``UTILISATION`` of the host's cores: a node that computes without pause
    burns ``min(1, host_ms / (class_ms * k))`` of a core (one compute thread), and ``k`` is the smallest for which
    the sum fits. A device pool's devices share one process, which counts at most as many devices as the host
    has cores.

``k`` may come out below 1 (a light topology runs faster than real time), but never below ``MIN_K`` (below it the
per-hop transport and Ray call overheads, which are not dilated, would grow past the emulated link delays), nor
below what keeps every link's wall rate (``rate / k``) within ``LINK_MAX_WALL_MBIT``. A run with no compute to
emulate keeps ``k = 1``.
A class that cannot be reached within ``max_time_dilation`` refuses the run, unless the user lets it run as an
approximation (``approximate_classes: true``): ``k`` then reaches every other class, and the manifest and the
warnings name the approximated nodes.

Only figures in the catalog (published, measured, or derived there with their sources) drive ``k``. A model the
catalog has no figure for on a class (the small custom nets of the tests, FL and the chain workloads) gets a
figure derived at run time from the class's ratio to this host on its other models (``class_target_ms``). That
is an approximation already: it raises ``k`` neither for speed nor for CPU demand, and where ``k`` does not
reach it the node runs as fast as the host allows and is listed as approximated. (On accelerator classes the
ratio of large models makes a tiny net absurdly fast, e.g. 0.008 ms for a 2 ms CNN on a V100, which would ask
for a ``k`` of about 500.)

The headroom is 2.0 on the median: a CPU-burning competitor on every core halves the share of a core each
compute process gets, doubling the wall time of a forward (measured; docs/design-notes.md, "Time dilation").
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.calibration import CalibrationStore, class_target_ms, host_latency_ms
from testbed.errors import ConfigError
from testbed.topology import Topology

HEADROOM = 2.0
UTILISATION = 0.8
MIN_K = 0.25
# the fastest wall rate our shaping is measured to hold within its tolerance (host-facts §2.3: TBF -1.8..-3.1 % at
# 1 Gbit/s, the header overhead): k < 1 may not push a link's wall rate (rate / k) above it
LINK_MAX_WALL_MBIT = 1000.0


@dataclass(frozen=True)
class NodeNeed:
    node: str
    hardware_class: str
    model: str
    class_ms: float
    host_ms: float
    k_needed: float  # HEADROOM * host / class
    basis: str
    catalogued: bool  # the figure is in the catalog (else derived at run time, see the module docstring)


@dataclass
class DilationChoice:
    """The run's ``k`` and how it was chosen (recorded in the manifest)."""

    k: float
    mode: str  # auto | fixed
    k_speed: float  # from (a)
    k_demand: float  # from (b)
    demand_cores: float  # summed demand at k = 1
    host_cores: int
    max_time_dilation: float
    binding: str  # what set k
    approximated: list[str] = field(default_factory=list)  # nodes whose class is not reached at k
    needs: list[NodeNeed] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nice(k: float) -> float:
    """``k`` rounded up to two significant figures (readable in the manifest; cached fits repeat)."""
    if k <= 0:
        return k
    e = math.floor(math.log10(k)) - 1
    return float(round(math.ceil(k / 10**e - 1e-9) * 10**e, 6))


def node_needs(topology: Topology, models: dict[str, str | None], store: CalibrationStore) -> list[NodeNeed]:
    """What each node with a model asks of ``k``. Raises ConfigError for a class with no figure to run at."""
    out = []
    missing = []
    for n, node in topology.nodes.items():
        model = models.get(n)
        if model is None:
            continue
        target, basis = class_target_ms(store, node.hardware, model)
        if target is None:
            missing.append(f"{n} ({node.hardware.name}) on {model}")
            continue
        host = host_latency_ms(store, model)
        out.append(NodeNeed(n, node.hardware.name, model, target, host, HEADROOM * host / target, basis,
                            model in node.hardware.reference_latency_ms))
    if missing:
        raise ConfigError(f"no latency figure for: {', '.join(missing)}; the emulated speed of these nodes is unknown",
                          file="topologies/catalog/hardware.yaml", path="classes.<class>.reference_latency_ms",
                          fix="add a sourced figure for the model to the class (or run these nodes with "
                              "backends: {compute: none})")
    return out


def choose(topology: Topology, models: dict[str, str | None], store: CalibrationStore,
           requested: float | str = "auto", max_time_dilation: float = 100.0, approximate: bool = False,
           host_cores: int | None = None, source: str = "") -> DilationChoice:
    """The run's ``k`` (see the module docstring). Raises ConfigError when a class cannot be reached."""
    cores = host_cores or os.cpu_count() or 1
    needs = node_needs(topology, models, store)
    catalogued = [nd for nd in needs if nd.catalogued]
    pool_size: dict[str, int] = {}
    for node in topology.nodes.values():
        if node.pool:
            pool_size[node.pool] = pool_size.get(node.pool, 0) + 1
    weights = []
    for nd in needs:
        if not nd.catalogued or nd.k_needed > max_time_dilation:  # approximations do not raise k (see above)
            continue
        pool = topology.nodes[nd.node].pool
        weights.append((1.0 if pool is None else min(pool_size[pool], cores) / pool_size[pool],
                        nd.host_ms / nd.class_ms))
    demand = sum(w * r for w, r in weights)

    def cores_at(k: float) -> float:  # a node computing without pause uses at most its one thread
        return sum(w * min(1.0, r / k) for w, r in weights)
    unreachable = [nd for nd in catalogued if nd.k_needed > max_time_dilation]
    k_speed = max((nd.k_needed for nd in catalogued if nd.k_needed <= max_time_dilation), default=0.0)
    budget = UTILISATION * cores
    if cores_at(1e-9) <= budget:
        k_demand = 0.0
    elif cores_at(max_time_dilation) > budget:
        k_demand = math.inf
    else:  # the smallest k whose demand fits (cores_at falls as k grows)
        lo, hi = 1e-6, max_time_dilation
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if cores_at(mid) <= budget else (mid, hi)
        k_demand = hi
    warnings: list[str] = []
    if requested == "auto":
        mode = "auto"
        if unreachable and not approximate:
            need = max(nd.k_needed for nd in unreachable)
            raise ConfigError(
                f"reaching every class's speed needs time_dilation {need:.1f}, above max_time_dilation "
                f"{max_time_dilation:g} (" + ", ".join(f"{nd.node}: {nd.hardware_class} {nd.class_ms:g} ms on "
                                                      f"{nd.model}, host {nd.host_ms:.1f} ms" for nd in unreachable)
                + ")", file=source or None, path="max_time_dilation",
                fix=f"raise max_time_dilation to {_nice(need):g} (the run takes that many times longer), or set "
                    "approximate_classes: true to reach the other classes and run these as fast as the host allows")
        k_links = max((max(lk.up.rate_mbit, lk.down.rate_mbit) for lk in topology.links), default=0.0) \
            / LINK_MAX_WALL_MBIT
        # k < 1 only to go faster than the world where catalogued classes run; otherwise real time at least
        floor = MIN_K if catalogued else 1.0
        raw = max(k_speed, min(k_demand, max_time_dilation), k_links, floor)
        reach = [nd for nd in catalogued if nd.k_needed <= max_time_dilation]
        binding = ("class speed: " + max(reach, key=lambda nd: nd.k_needed).node if raw == k_speed and reach
                   else "CPU demand" if raw == k_demand else "link rate" if raw == k_links
                   else "floor" if catalogued else "real time: no catalogued figure to reach")
        k = min(_nice(raw), max_time_dilation)
        if k_demand > max_time_dilation:
            warnings.append(f"the nodes' CPU demand does not fit {UTILISATION:.0%} of the {cores} cores even at "
                            f"max_time_dilation {max_time_dilation:g}: nodes contend when they compute at once")
            binding = "max_time_dilation"
    else:
        mode = "fixed"
        k = float(requested)
        binding = "set in the experiment"
        if k_demand > k:
            warnings.append(f"time_dilation {k:g} is below the {k_demand:.1f} the nodes' CPU demand needs: nodes "
                            "contend when they compute at once")
    approximated = [nd.node for nd in needs if nd.k_needed > k * 1.000001]
    for nd in needs:
        if nd.node in approximated:
            what = "its catalogued" if nd.catalogued else "a run-time derived (approximate)"
            warnings.append(f"node {nd.node} ({nd.hardware_class}) may not reach {what} {nd.class_ms:.3g} ms on "
                            f"{nd.model} at time_dilation {k:g} (needs {nd.k_needed:.1f}): it runs as fast as the host "
                            "allows")
    return DilationChoice(k, mode, k_speed, k_demand, demand, cores, max_time_dilation, binding, approximated, needs,
                          warnings)


def check_link_rates(topology: Topology, k: float, source: str | None, fix: str) -> None:
    """Refuse (ConfigError at ``time_dilation``) a ``k`` at which some link's wall rate is below what a TBF can
    be programmed at: ``tc.check_rate`` on every link, both directions, before anything is built."""
    from testbed.emulation.tc import check_rate

    for lk in topology.links:
        for d, spec in (("up", lk.up), ("down", lk.down)):
            try:
                check_rate(spec.rate_mbit, k)
            except ValueError as e:
                raise ConfigError(f"link {lk.name} ({d}): {e}", file=source, path="time_dilation", fix=fix) from e
