"""``Topology``: the resolved, immutable graph of nodes and links. No side effects.

Pools are expanded into members, link classes and overrides are merged into full per-direction
``LinkSpec``s, addresses are assigned from the pool (link subnets from its first half, one /32
node address per node from its second half), and shortest paths are precomputed.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from testbed.config.models import HardwareClass, LinkSpec, Tier

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class Node:
    """One emulated node after pool expansion."""

    name: str
    tier: Tier
    hardware: HardwareClass
    address: str
    pool: str | None = None
    site: str | None = None


@dataclass(frozen=True)
class Link:
    """One link after resolution: ``up`` shapes a→b, ``down`` shapes b→a."""

    index: int
    a: str
    b: str
    up: LinkSpec
    down: LinkSpec
    link_class: str | None
    tx_energy_uj_per_bit: float | None
    a_address: str
    b_address: str
    prefixlen: int

    @property
    def name(self) -> str:
        return f"{self.a}--{self.b}"

    def spec(self, src: str) -> LinkSpec:
        """The shaping applied to traffic sent from ``src`` over this link."""
        return self.up if src == self.a else self.down


@dataclass(frozen=True)
class Hop:
    """One hop of a path: the link and the direction traffic takes over it."""

    link: Link
    src: str
    dst: str

    @property
    def spec(self) -> LinkSpec:
        return self.link.spec(self.src)


@dataclass(frozen=True)
class PathSpec:
    """What a message from one node to another crosses: bottleneck rate and summed delay/jitter/loss."""

    hops: tuple[Hop, ...]

    @property
    def rate_mbit(self) -> float:
        return min(h.spec.rate_mbit for h in self.hops)

    @property
    def delay_ms(self) -> float:
        return sum(h.spec.delay_ms for h in self.hops)

    @property
    def jitter_ms(self) -> float:
        # independent jitters add in variance
        return float(sum(h.spec.jitter_ms**2 for h in self.hops) ** 0.5)

    @property
    def loss_pct(self) -> float:
        keep = 1.0
        for h in self.hops:
            keep *= 1.0 - h.spec.loss_pct / 100.0
        return 100.0 * (1.0 - keep)


@dataclass(frozen=True)
class Topology:
    """The resolved graph. Build it with ``testbed.config.loader.load_topology``."""

    name: str
    nodes: dict[str, Node]
    links: tuple[Link, ...]
    address_pool: str
    source: str = "<memory>"
    pools: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        adj: dict[str, list[tuple[str, Link]]] = {n: [] for n in self.nodes}
        for link in self.links:
            adj[link.a].append((link.b, link))
            adj[link.b].append((link.a, link))
        for v in adj.values():
            v.sort(key=lambda t: t[0])
        object.__setattr__(self, "_adj", adj)
        # BFS trees per source: all-pairs path models at hundreds of nodes would otherwise redo them
        object.__setattr__(self, "_bfs_cache", {})

    def neighbours(self, name: str) -> list[str]:
        return [n for n, _ in self._adj[name]]  # type: ignore[attr-defined]

    def links_of(self, name: str) -> list[Link]:
        return [lk for _, lk in self._adj[name]]  # type: ignore[attr-defined]

    def _bfs(self, src: str) -> dict[str, tuple[str, Link] | None]:
        cache: dict[str, dict[str, tuple[str, Link] | None]] = self._bfs_cache  # type: ignore[attr-defined]
        if src in cache:
            return cache[src]
        prev: dict[str, tuple[str, Link] | None] = {src: None}
        queue = deque([src])
        while queue:
            cur = queue.popleft()
            for nxt, link in self._adj[cur]:  # type: ignore[attr-defined]
                if nxt not in prev:
                    prev[nxt] = (cur, link)
                    queue.append(nxt)
        cache[src] = prev
        return prev

    def components(self) -> list[set[str]]:
        """Connected components (a valid topology has exactly one)."""
        seen: set[str] = set()
        out = []
        for n in self.nodes:
            if n not in seen:
                comp = set(self._bfs(n))
                seen |= comp
                out.append(comp)
        return out

    def path(self, src: str, dst: str) -> PathSpec:
        """Shortest path in hops (ties broken by node name, so paths are deterministic)."""
        prev = self._bfs(src)
        if dst not in prev:
            raise KeyError(f"no path from {src!r} to {dst!r}")
        hops: list[Hop] = []
        cur = dst
        while (p := prev[cur]) is not None:
            hops.append(Hop(p[1], p[0], cur))
            cur = p[0]
        return PathSpec(tuple(reversed(hops)))

    def next_hop(self, src: str, dst: str) -> tuple[str, Link]:
        hop = self.path(src, dst).hops[0]
        return hop.dst, hop.link

    def nearest(self, src: str, tier: Tier) -> str:
        """The closest node of ``tier`` to ``src`` (fewest hops, then name)."""
        prev = self._bfs(src)
        best = [(len(self.path(src, n).hops), n) for n in prev if self.nodes[n].tier == tier and n != src]
        if not best:
            raise KeyError(f"no {tier.value} node reachable from {src!r}")
        return min(best)[1]

    def by_tier(self, tier: Tier) -> list[str]:
        return [n for n, node in self.nodes.items() if node.tier == tier]


def assign_addresses(pool: str, n_nodes: int, n_links: int) -> tuple[list[str], list[tuple[str, str, int]]]:
    """Node /32 addresses from the pool's upper half, /30 link subnets from its lower half.

    Raises
    ------
    ValueError
        If the pool is too small for the topology.
    """
    net = ipaddress.ip_network(pool, strict=True)
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 24:
        raise ValueError(f"address pool {pool} must be an IPv4 network of /24 or larger")
    low, high = list(net.subnets(prefixlen_diff=1))
    node_hosts = high.hosts()
    nodes = []
    for _ in range(n_nodes):
        try:
            nodes.append(str(next(node_hosts)))
        except StopIteration:
            raise ValueError(f"address pool {pool} has too few addresses for {n_nodes} nodes") from None
    if n_links > 2 ** (30 - low.prefixlen):
        raise ValueError(f"address pool {pool} has too few /30 subnets for {n_links} links")
    links = []
    subnets = low.subnets(new_prefix=30)
    for _ in range(n_links):
        sub = next(subnets)
        a, b = list(sub.hosts())
        links.append((str(a), str(b), 30))
    return nodes, links
