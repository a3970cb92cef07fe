"""Link backends behind one interface: ``kernel`` (netns + veth + tc) and ``userspace`` (transport only).

Both hand each node a *binding* (namespace, address) for its transport endpoint and a
``PathModel`` per peer that the endpoint applies on receive. The kernel backend shapes rate in
tc on every hop and routes through intermediate namespaces; delay, jitter and loss are always in
the transport (no netem on this kernel; a kernel with netem could move them down later).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from testbed.config.models import LinkSpec
from testbed.errors import ConfigError, EmulationError, PrivilegeError
from testbed.lifecycle.cleanup import VETH_PREFIX, take_blackhole
from testbed.lifecycle.ledger import PREFIX, Ledger
from testbed.topology import Topology
from testbed.transport import PathModel

logger = logging.getLogger(__name__)


def host_ifnames(run_id: str, tag: int | str) -> tuple[str, str]:
    """Names a link's two ends carry in the host namespace before they move into the nodes' namespaces:
    unique across runs, with our prefix (so a leaked one is found), at most 15 characters."""
    t = f"{tag:x}" if isinstance(tag, int) else tag
    return f"{VETH_PREFIX}{run_id[:6]}{t}a", f"{VETH_PREFIX}{run_id[:6]}{t}b"


@dataclass(frozen=True)
class Binding:
    """Where a node's endpoint lives: namespace (None = current) and address."""

    netns: str | None
    address: str


class NetworkBackend(ABC):
    """Builds links for a topology; one instance per run."""

    name: str = ""

    def __init__(self, topology: Topology, run_id: str, ledger: Ledger) -> None:
        self.topology = topology
        self.run_id = run_id
        self.ledger = ledger
        self._holds: dict[int, set[str]] = {}  # link -> what holds it down (outages, partitions, absent nodes)
        self.tcp_rto_min_us: int | None = None  # TCP's minimum RTO in the namespaces, when stretched by k

    @abstractmethod
    def build(self) -> None:
        """Create everything (recorded in the ledger first)."""

    @abstractmethod
    def binding(self, node: str) -> Binding:
        """Where ``node``'s endpoint binds."""

    def path_model(self, src: str, dst: str) -> PathModel:
        """What the endpoint of ``dst`` emulates for traffic arriving from ``src``."""
        p = self.topology.path(src, dst)
        return PathModel(p.delay_ms, p.jitter_ms, p.loss_pct)

    def tx_rate(self, src: str, dst: str) -> float | None:
        """The rate at which ``src``'s transport must pace itself towards ``dst`` (None: the kernel shapes)."""
        return None

    def set_link(self, index: int, up: LinkSpec, down: LinkSpec) -> None:
        """Re-shape one link (scenario events); replaces earlier shaping."""

    def set_link_state(self, index: int, up: bool) -> None:
        """Take link ``index`` down (every packet on it dropped) or bring it back as it was shaped."""
        raise EmulationError(f"{self.name} links cannot go down: use the kernel link backend")

    def hold(self, index: int, reason: str, down: bool) -> None:
        """Take link ``index`` down for ``reason`` (``down=True``) or let go of it. Each reason holds the link
        down on its own: it comes back, with its current shaping, only when no reason holds it any more."""
        held = self._holds.setdefault(index, set())
        was_down = bool(held)
        if down:
            held.add(reason)
            if not was_down:
                self.set_link_state(index, False)
        else:
            held.discard(reason)
            if was_down and not held:
                self.set_link_state(index, True)

    def is_held(self, index: int) -> bool:
        return bool(self._holds.get(index))

    def scenario_started(self) -> None:
        """The scenario's clock starts now (a backend that moves nodes itself starts moving them)."""

    def teardown(self) -> None:
        """Remove what ``build`` made (idempotent)."""

    def info(self) -> dict[str, Any]:
        return {"name": self.name}


class UserspaceNetwork(NetworkBackend):
    """No root needed: rate by a token bucket at the sender, delay/jitter/loss at the receiver.

    Limits: the bucket is per sender and destination, so two senders sharing one emulated link
    do not contend for it; a multi-hop path is modelled by its bottleneck rate and summed delay.
    """

    name = "userspace"

    def build(self) -> None:
        pass

    def binding(self, node: str) -> Binding:
        return Binding(None, "127.0.0.1")

    def tx_rate(self, src: str, dst: str) -> float | None:
        return self.topology.path(src, dst).rate_mbit

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "rate": "transport token bucket (wire bytes)",
                "delay_jitter_loss": "transport receive hold (arrival + delay)"}


class KernelNetwork(NetworkBackend):
    """One namespace per node, a veth pair per link, TBF on each sending end, static shortest-path routes."""

    name = "kernel"
    teardown_kinds: tuple[str, ...] = ("netns", "veth", "blackhole")

    def __init__(self, topology: Topology, run_id: str, ledger: Ledger,
                 userspace_links: frozenset[int] = frozenset()) -> None:
        super().__init__(topology, run_id, ledger)
        self.built = False
        # links whose ends run on different Ray nodes: no TBF, the senders' transport paces them instead
        self.userspace_links = userspace_links

    def ns(self, node: str) -> str:
        return f"{PREFIX}{self.run_id}-{node}"

    def binding(self, node: str) -> Binding:
        return Binding(self.ns(node), self.topology.nodes[node].address)

    @staticmethod
    def check_host(topology: Topology) -> None:
        """Raise unless this host can run the kernel backend for ``topology``."""
        if os.geteuid() != 0:
            raise PrivilegeError("the kernel link backend needs root (network namespaces and tc); "
                                 "run as root, or choose backends: {links: userspace} in the experiment")
        if not os.access("/var/run", os.W_OK):
            raise PrivilegeError("/var/run is not writable: named network namespaces cannot be created")
        pool = ipaddress.ip_network(topology.address_pool)
        from pyroute2 import IPRoute

        with IPRoute() as ip:
            for r in ip.get_routes(family=2):
                dst, plen = r.get_attr("RTA_DST"), r["dst_len"]
                if not dst or plen == 0 or r["type"] == 6:  # default route, or a blackhole (ours)
                    continue
                if r.get_attr("RTA_TABLE") not in (254, None):  # main table only
                    continue
                net = ipaddress.ip_network(f"{dst}/{plen}", strict=False)
                if net.overlaps(pool):
                    raise ConfigError(
                        f"address pool {pool} collides with the host route {net}", file=topology.source,
                        path="address_pool", fix="choose an address_pool inside 198.18.0.0/15 that no host route uses")

    def build(self) -> None:
        from testbed import clock
        from testbed.emulation.netns import add_node_address, create_netns, create_veth, dilate_tcp_timers

        self.check_host(self.topology)
        topo = self.topology
        self._blackhole()
        for name, node in topo.nodes.items():
            self.ledger.record("netns", self.ns(name))
            create_netns(self.ns(name))
            add_node_address(self.ns(name), node.address)
            if clock.dilation() != 1.0:
                self.tcp_rto_min_us = dilate_tcp_timers(self.ns(name), clock.dilation())
        for link in topo.links:
            ha, hb = host_ifnames(self.run_id, link.index)
            self.ledger.record("veth", ha)
            create_veth(ha, hb, self.ns(link.a), self.ns(link.b), self._ifname(link.index),
                        self._ifname(link.index), link.a_address, link.b_address, link.prefixlen)
            self.ledger.forget("veth", ha)  # moved into the namespaces: goes with them
            self._shape(link.index)
        self._routes()
        self.built = True


    def _blackhole(self) -> None:
        take_blackhole("198.18.0.0/15", self.ledger)  # every run records its reliance on it

    def _shape(self, index: int) -> None:
        from testbed.emulation.tc import apply_rate

        link = self.topology.links[index]
        if index not in self.userspace_links:
            apply_rate(self.ns(link.a), self._ifname(index), link.up)
            apply_rate(self.ns(link.b), self._ifname(index), link.down)

    def _routes(self) -> None:
        """A /32 route to every other node through the next hop of its shortest path."""
        from testbed.emulation.netns import add_route

        topo = self.topology
        for src in topo.nodes:
            for dst, dnode in topo.nodes.items():
                if dst == src:
                    continue
                nxt, link = topo.next_hop(src, dst)
                gw = link.b_address if link.a == src else link.a_address
                add_route(self.ns(src), f"{dnode.address}/32", gw)

    @staticmethod
    def _ifname(index: int) -> str:
        return f"l{index}"

    def tx_rate(self, src: str, dst: str) -> float | None:
        """The slowest userspace-shaped hop on the path, if any (tc shapes the others)."""
        rates = [h.spec.rate_mbit for h in self.topology.path(src, dst).hops if h.link.index in self.userspace_links]
        return min(rates) if rates else None

    def set_link(self, index: int, up: LinkSpec, down: LinkSpec) -> None:
        from testbed.emulation.tc import apply_rate

        link = self.topology.links[index]
        if index in self.userspace_links:
            return  # paced by the transport, which reads the topology's new specs (Testbed.set_link)
        apply_rate(self.ns(link.a), self._ifname(index), up)
        apply_rate(self.ns(link.b), self._ifname(index), down)

    def set_link_state(self, index: int, up: bool) -> None:
        from testbed.emulation.tc import apply_rate, block, unshape

        link = self.topology.links[index]
        for ns, spec in ((self.ns(link.a), link.up), (self.ns(link.b), link.down)):
            if not up:
                block(ns, self._ifname(index))
            elif index in self.userspace_links:
                unshape(ns, self._ifname(index))
            else:
                apply_rate(ns, self._ifname(index), spec)

    def teardown(self) -> None:
        from testbed.lifecycle.cleanup import CleanReport, clean_entries

        report = CleanReport()
        clean_entries([e for e in self.ledger.pending() if e.kind in self.teardown_kinds],
                      self.ledger, report)
        if report.failed:
            logger.warning("network teardown left: %s", report.failed)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "rate": "tc tbf on each veth (egress), gso_max_size 1500",
                "delay_jitter_loss": "transport receive hold (arrival + delay); netem not used",
                "routing": "static /32 routes along shortest paths, forwarding in intermediate namespaces",
                "host_blackhole": "198.18.0.0/15",
                "link_backends": {str(lk.index): f"{lk.a}-{lk.b}: "
                                  + ("userspace (ends on different Ray nodes)" if lk.index in self.userspace_links
                                     else "kernel") for lk in self.topology.links}}
