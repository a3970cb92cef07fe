"""``Testbed``: the live system. Building a ``Topology`` onto Ray, links and caps happens only here.

``with Testbed(...) as tb:`` composes every resource with an ``ExitStack`` so a failure halfway
through setup unwinds what already exists, in reverse order; each kernel object is in the run's
ledger before it is created.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from testbed import clock
from testbed.calibration import CalibrationStore, ComputePlan, fit_key, plan_compute
from testbed.config.models import LinkSpec, MobilitySpec
from testbed.control import init_ray
from testbed.dilation import DilationChoice
from testbed.emulation.network import KernelNetwork, NetworkBackend, UserspaceNetwork
from testbed.errors import EmulationError, PrivilegeError, ResourceError
from testbed.lifecycle.ledger import PREFIX, Ledger
from testbed.topology import Topology

logger = logging.getLogger(__name__)


@dataclass
class Group:
    """Nodes hosted by one NodeActor (one node, or a device pool) and their compute actor."""

    name: str
    nodes: list[str]
    node_actor: Any = None
    compute_actor: Any = None
    cgroup: dict[str, Any] | None = None
    plans: dict[str, ComputePlan] = field(default_factory=dict)
    pids: tuple[int, int] = (0, 0)  # node actor, compute actor


class Testbed:
    """The live testbed for one run.

    Parameters
    ----------
    topology:
        The resolved topology.
    run_id:
        Eight hex digits; prefixes every kernel object (``tb-<run_id>-...``).
    links, compute:
        Backends: ``kernel``/``userspace``/``mininet``/``mininet-wifi`` and ``cgroup``/``dilation``/``none``
        (already resolved).
    models:
        node -> the model it will run (calibration and caps depend on it); ``None`` for none.
    address:
        A Ray cluster address, or ``None`` to start (and stop) a local Ray.
    time_dilation:
        The run's factor ``k`` (``testbed.clock``), or ``"auto"`` to choose it from the classes and the host
        (``testbed.dilation``); ``max_time_dilation`` and ``approximate_classes`` bound ``auto``. The factor is
        configured in this process for the testbed's lifetime and in every actor it starts.
    """

    __test__ = False  # not a pytest class

    def __init__(self, topology: Topology, run_id: str, seed: int, links: str, compute: str,
                 models: dict[str, str | None], address: str | None = None,
                 mobility: list[MobilitySpec] | None = None, time_dilation: float | str = 1.0,
                 max_time_dilation: float = 100.0, approximate_classes: bool = False, source: str = "") -> None:
        self.topology = topology
        self.run_id = run_id
        self.seed = seed
        self.links_backend = links
        # backends whose nodes live in network namespaces on this machine
        self.namespaced = links in ("kernel", "mininet", "mininet-wifi")
        self.mobility = list(mobility or [])
        self.compute_backend = compute
        self.models = models
        self.address = address
        self.requested_dilation = time_dilation
        self.max_time_dilation = max_time_dilation
        self.approximate_classes = approximate_classes
        self.source = source
        self.dilation: DilationChoice | None = None
        self.k = 1.0
        self.ledger = Ledger(run_id)
        self.network: NetworkBackend | None = None
        self.groups: dict[str, Group] = {}
        self.node_group: dict[str, Group] = {}
        self.warnings: list[str] = []
        self.timings: dict[str, float] = {}
        self._stack = ExitStack()
        # what set each node up (roles, models), replayed when a crashed node restarts
        self._setup_calls: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
        self._crashed: set[str] = set()
        self.absent: set[str] = set()  # nodes that left (scenario churn)
        self._pending_spans: list[dict[str, Any]] = []
        self._ray_pids: list[tuple[int, float]] = []  # the processes of a Ray this run started (pid, start time)
        self._not_ray: set[int] = set()  # this process's children from before it started Ray
        # per node, requests begun and recorded: as of the last drain, and what crashed processes had counted
        self._request_counts: dict[str, dict[str, int]] = {}
        self._retired_counts: dict[str, dict[str, int]] = {}
        self._pending_samples: list[dict[str, Any]] = []
        self._ports: dict[str, int] = {}

    def _live_groups(self) -> list[Group]:
        """Groups whose actors are up (not crashed by a scenario)."""
        return [g for g in self.groups.values() if not (set(g.nodes) & self._crashed)]

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Testbed:
        try:
            self._build()
        except BaseException:
            self._stack.close()
            self.ledger.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Tear everything down (LIFO; safe to call twice)."""
        try:
            self._stack.close()
        finally:
            self.ledger.close()

    def _build(self) -> None:
        import psutil
        import ray

        t0 = time.monotonic()  # wall: set-up timings
        if self.namespaced:
            KernelNetwork.check_host(self.topology)
        if self.links_backend in ("mininet", "mininet-wifi"):
            from testbed.emulation.mnbackend import MininetNetwork

            MininetNetwork.check_mininet(self.links_backend == "mininet-wifi")
        if self.compute_backend == "cgroup" and os.geteuid() != 0:
            raise PrivilegeError("the cgroup compute backend needs root; use backends: {compute: dilation}")
        own_ray = not ray.is_initialized()
        if own_ray:
            # what this process had already started is not Ray's, and never ours to end (a notebook's own
            # subprocesses, say): only what appears from here on is recorded as the run's Ray
            self._not_ray = {p.pid for p in psutil.Process().children(recursive=True)}
            init_ray(self.address)
            self._stack.callback(self._shutdown_ray)
            if self.address is None:
                self._record_ray_processes()
        self.timings["ray_init_s"] = time.monotonic() - t0  # wall: set-up timings
        store = CalibrationStore.load()
        self._choose_dilation(store)

        self._resolve_sites()
        net: NetworkBackend
        if self.links_backend == "kernel":
            cross = frozenset(lk.index for lk in self.topology.links if self._host(lk.a) != self._host(lk.b))
            net = KernelNetwork(self.topology, self.run_id, self.ledger, cross)
        elif self.links_backend in ("mininet", "mininet-wifi"):
            from testbed.emulation.mnbackend import MininetNetwork

            if any(self._host(n) != self._here for n in self.topology.nodes):
                raise ResourceError(f"the {self.links_backend} link backend builds every node on this machine: "
                                    "drop 'site' from the nodes, or use backends: {links: kernel}")
            net = MininetNetwork(self.topology, self.run_id, self.ledger, self.links_backend == "mininet-wifi",
                                 self.mobility, self.seed)
        else:
            net = UserspaceNetwork(self.topology, self.run_id, self.ledger)
        self.network = net
        self._stack.callback(net.teardown)
        t1 = time.monotonic()  # wall: set-up timings
        net.build()
        self.timings["network_build_s"] = time.monotonic() - t1  # wall: set-up timings

        plans = {n: plan_compute(n, node.hardware, self.models.get(n), self._node_compute_backend(n), store, self.k)
                 for n, node in self.topology.nodes.items()}
        self._check_oversubscription(plans)
        for n, node in self.topology.nodes.items():
            gname = node.pool or n
            g = self.groups.setdefault(gname, Group(gname, []))
            g.nodes.append(n)
            g.plans[n] = plans[n]
            self.node_group[n] = g
        t2 = time.monotonic()  # wall: set-up timings
        self._start_actors()
        self.timings["actors_start_s"] = time.monotonic() - t2  # wall: set-up timings
        if own_ray and self.address is None:
            self._record_ray_processes()

    def _choose_dilation(self, store: CalibrationStore) -> None:
        """Resolve ``k`` (before any link or cap is set: both depend on it) and configure it in this process."""
        from testbed.dilation import choose

        models = self.models if self.compute_backend != "none" else {}
        self.dilation = choose(self.topology, models, store, self.requested_dilation, self.max_time_dilation,
                               self.approximate_classes, source=self.source)
        self.k = self.dilation.k
        if self.links_backend == "mininet-wifi" and self.k != 1.0:
            from testbed.errors import ConfigError

            raise ConfigError(f"mininet-wifi shapes its radio links itself, in wall time, so they cannot be dilated "
                              f"(time_dilation {self.k:g})", file=self.source or None, path="time_dilation",
                              fix="set time_dilation: 1 (classes faster than the host then run as approximations: "
                                  "add approximate_classes: true), or use backends: {links: kernel}")
        prev = clock.dilation()
        clock.configure(self.k)
        self._stack.callback(clock.configure, prev)
        if self.links_backend in ("kernel", "mininet", "mininet-wifi"):
            from testbed.dilation import check_link_rates

            check_link_rates(self.topology, self.k, self.source or None,
                             "a smaller time_dilation or max_time_dilation, or a faster link")
        self.warnings += self.dilation.warnings

    def _node_compute_backend(self, node: str) -> str:
        # A pool shares one compute process; per-device CFS quotas cannot apply, so pools use dilation.
        if self.compute_backend == "cgroup" and self.topology.nodes[node].pool is not None:
            return "dilation"
        return self.compute_backend

    def _check_oversubscription(self, plans: dict[str, ComputePlan]) -> None:
        host = os.cpu_count() or 1
        # a dilated node burns 1/(slowdown k) of a core while it computes; a cgroup node at most its quota; a node at
        # host speed a whole thread. A pool's devices share one process: it counts at most as many as there are cores
        per_group: dict[str, list[float]] = {}
        for p in plans.values():
            if p.model is None:
                continue
            use = p.cpu_cores if p.cpu_cores is not None else p.threads / max(1.0, p.slowdown * self.k)
            per_group.setdefault(self.topology.nodes[p.node].pool or p.node, []).append(use)
        total = sum(sum(sorted(v, reverse=True)[:host]) for v in per_group.values())
        if total > host:
            self.warnings.append(
                f"the compute caps add up to {total:.2f} cores on a {host}-core host: timings stay faithful only "
                "while nodes do not all compute at once (host-facts: quotas are ceilings, not reservations)")
        for p in plans.values():
            if p.host_speed and p.model:
                self.warnings.append(f"node {p.node} ({p.hardware_class}) runs {p.model} at host speed: {p.basis}")

    def _resolve_sites(self) -> None:
        """Map each site the topology names to the Ray node offering ``testbed_site_<site>``.

        With the kernel backend every site's Ray node must be on this machine (the namespaces are here);
        links between sites on different Ray nodes are then shaped in userspace."""
        import ray

        self._here = ray.get_runtime_context().get_node_id()
        self.site_nodes: dict[str, str] = {}
        sites = sorted({n.site for n in self.topology.nodes.values() if n.site})
        if not sites:
            return
        alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
        here_ip = next((n["NodeManagerAddress"] for n in alive if n["NodeID"] == self._here), None)
        for s in sites:
            offers = sorted((n for n in alive if n.get("Resources", {}).get(f"testbed_site_{s}", 0) > 0),
                            key=lambda n: n["NodeID"])
            if not offers:
                raise ResourceError(
                    f"no Ray node offers the resource testbed_site_{s} that site {s!r} of the topology needs; start "
                    f"one with: ray start --resources '{{\"testbed_site_{s}\": 1000}}' (or drop 'site' from the nodes)")
            node = offers[0]
            if self.namespaced and node["NodeManagerAddress"] != here_ip:
                raise ResourceError(
                    f"site {s!r} is on Ray node {node['NodeManagerAddress']}, another machine: the kernel link "
                    "backend's namespaces live on this machine only; use backends: {links: userspace}")
            self.site_nodes[s] = node["NodeID"]

    def _host(self, node: str) -> str:
        """The Ray node that will host ``node``'s actors (kernel backend: its site's, or this one)."""
        site = self.topology.nodes[node].site
        return self.site_nodes[site] if site else self._here

    def _placement(self, node: str) -> dict[str, float]:
        """Custom resources the actors of ``node`` ask for: its site's, else (userspace links) its tier's."""
        import ray

        site = self.topology.nodes[node].site
        if site:
            return {f"testbed_site_{site}": 0.001}
        res = f"testbed_{self.topology.nodes[node].tier.value}"
        if self.namespaced:
            return {}
        return {res: 0.001} if res in ray.cluster_resources() else {}  # type: ignore[no-untyped-call]

    def _actor_options(self, node: str, concurrency: int | None = None) -> dict[str, Any]:
        """Ray options: kernel-backend actors must run on this machine, on their site's Ray node if they have
        one (where their namespaces are reachable), else on the driver's."""
        opts: dict[str, Any] = {"resources": self._placement(node)}
        if concurrency is not None:
            opts["max_concurrency"] = concurrency
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if self.namespaced:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=self._host(node), soft=False)
        elif not opts["resources"]:
            # nothing asked: stay with the process that runs the testbed (a sweep point keeps its run on its
            # own Ray node, so losing another node cannot take half of this run with it)
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=self._here, soft=False)
        return opts

    def _start_actors(self) -> None:
        import ray

        from testbed.emulation.cgroups import CgroupLeaf, cgroup_mode
        from testbed.workload import ACTORS

        ComputeActor, NodeActor = ACTORS.get("compute"), ACTORS.get("node")
        topo = self.topology
        for g in self.groups.values():
            plan0 = g.plans[g.nodes[0]]
            if self._node_compute_backend(g.nodes[0]) == "cgroup":  # a node on dilation keeps its memory cap
                leaf = CgroupLeaf.plan(f"{PREFIX}{self.run_id}-{g.name}", cgroup_mode())
                self.ledger.record("cgroup", leaf.name, mode=leaf.mode, dirs=list(leaf.dirs))
                self._stack.callback(self._remove_cgroup, leaf)
                leaf.create(plan0.cpu_cores, plan0.memory_bytes, plan0.period_us)
                g.cgroup = {"name": leaf.name, "mode": leaf.mode, "dirs": list(leaf.dirs)}
            opts = self._actor_options(g.nodes[0], max(1, len(g.nodes)))
            g.compute_actor = ComputeActor.options(**opts).remote(
                {n: p.to_dict() for n, p in g.plans.items()}, g.cgroup, self.seed, self.k)
            self._stack.callback(ray.kill, g.compute_actor, no_restart=True)
        # every process is asked for before any is waited on: Ray starts them side by side
        for g in self.groups.values():
            g.node_actor = NodeActor.options(**self._actor_options(g.nodes[0])).remote(
                self.run_id, self._node_specs(g), g.compute_actor, self.seed, time_dilation=self.k)
            self._stack.callback(ray.kill, g.node_actor, no_restart=True)
        for g in self.groups.values():
            pid, start = ray.get(g.compute_actor.pid.remote(), timeout=120)
            self.ledger.record("pid", str(pid), pid=pid, start=start)
            self._stack.callback(self._kill_and_wait, g.compute_actor, pid)
            g.pids = (0, pid)
        hosts = set()
        nice = 0
        for g in self.groups.values():
            w = ray.get(g.node_actor.where.remote(), timeout=120)
            hosts.add(w["host"])
            nice = max(nice, w["nice"])
            self.ledger.record("pid", str(w["pid"]), pid=w["pid"], start=w["start"])
            self._stack.callback(self._stop_node_actor, g.node_actor, w["pid"])
            g.pids = (w["pid"], g.pids[1])
        if nice > 0:
            self.warnings.append(
                f"the nodes' processes run at nice {nice} (Ray's worker_niceness): beside any other load on the "
                "host they get a few percent of a core, and emulated times follow that load; start the cluster's "
                "Ray with RAY_worker_niceness=0 (testbed/control.py)")
        if len(hosts) > 1:
            raise ResourceError(
                f"the actors landed on {len(hosts)} hosts ({', '.join(sorted(hosts))}), but emulated links only run "
                "on one host so far (no packet of the testbed may leave the machine); remove the testbed_<tier> "
                "resources from other hosts, or run on one host")
        pids = {gname: ray.get(g.compute_actor.pid.remote())[0] for gname, g in self.groups.items()}
        ports: dict[str, int] = {}
        for gname, g in self.groups.items():
            ports.update(ray.get(g.node_actor.start.remote(pids[gname], g.cgroup), timeout=120))
        self._ports = ports
        peers = {n: (self._net.binding(n).address, ports[n]) for n in topo.nodes}
        for g in self.groups.values():
            paths = {n: {src: vars(self._net.path_model(src, n)) for src in topo.nodes if src != n} for n in g.nodes}
            rates = {n: {dst: self._net.tx_rate(n, dst) for dst in topo.nodes if dst != n} for n in g.nodes}
            ray.get(g.node_actor.set_peers.remote(peers, paths, rates))

    def _node_specs(self, g: Group) -> list[dict[str, Any]]:
        """What a NodeActor needs to host the nodes of ``g``."""
        topo = self.topology
        specs = []
        for n in g.nodes:
            node = topo.nodes[n]
            b = self._net.binding(n)
            energy = {}
            for other in topo.nodes:
                if other != n:
                    first = topo.path(other, n).hops[0]
                    energy[f"{other}>{n}"] = first.link.tx_energy_uj_per_bit or 0.0
            specs.append({"name": n, "tier": node.tier, "hardware": node.hardware, "netns": b.netns,
                          "address": b.address, "tx_energy": energy})
        return specs

    def _restart_group(self, g: Group) -> None:
        """New compute and node actors for ``g`` (after a crash), registered for teardown like the first."""
        import ray

        from testbed.workload import ACTORS

        ComputeActor, NodeActor = ACTORS.get("compute"), ACTORS.get("node")
        g.compute_actor = ComputeActor.options(**self._actor_options(g.nodes[0], max(1, len(g.nodes)))).remote(
            {n: p.to_dict() for n, p in g.plans.items()}, g.cgroup, self.seed, self.k)
        self._stack.callback(ray.kill, g.compute_actor, no_restart=True)
        pid, start = ray.get(g.compute_actor.pid.remote(), timeout=120)
        self.ledger.record("pid", str(pid), pid=pid, start=start)
        self._stack.callback(self._kill_and_wait, g.compute_actor, pid)
        g.node_actor = NodeActor.options(**self._actor_options(g.nodes[0])).remote(
            self.run_id, self._node_specs(g), g.compute_actor, self.seed, time_dilation=self.k)
        self._stack.callback(ray.kill, g.node_actor, no_restart=True)
        w = ray.get(g.node_actor.where.remote(), timeout=120)
        self.ledger.record("pid", str(w["pid"]), pid=w["pid"], start=w["start"])
        self._stack.callback(self._stop_node_actor, g.node_actor, w["pid"])
        g.pids = (w["pid"], pid)

    @property
    def _net(self) -> NetworkBackend:
        if self.network is None:
            raise EmulationError("the network is not built")
        return self.network

    def _stop_node_actor(self, actor: Any, pid: int) -> None:
        import ray

        try:
            ray.get(actor.stop.remote(), timeout=10)
        except Exception:  # the node may have crashed; it is killed next anyway
            pass
        self._kill_and_wait(actor, pid)

    def _record_ray_processes(self) -> None:
        """A Ray this run started on this machine is the run's too: its GCS, raylet, agents and idle workers are
        recorded, so that ``testbed clean`` ends them if the runner alone is killed (found by ``testbed bench
        soak``: a runner SIGKILLed during teardown left Ray's dashboard and runtime-env agents running). They exist
        only once ``ray.init`` has started them, so they are recorded just after, not before: once then, and again
        once the actors are up (what Ray started meanwhile; the actors' own processes are recorded already)."""
        import psutil

        known = ({str(p) for g in self.groups.values() for p in g.pids if p} | {str(p) for p, _ in self._ray_pids}
                 | {str(p) for p in self._not_ray})
        for p in psutil.Process().children(recursive=True):
            try:
                if str(p.pid) not in known:
                    self.ledger.record("pid", f"ray-{p.pid}", pid=p.pid, start=p.create_time())
                    self._ray_pids.append((p.pid, p.create_time()))
            except psutil.NoSuchProcess:
                continue

    def _shutdown_ray(self) -> None:
        """Stop the Ray this run started, then make sure its processes are gone (killing any that linger)."""
        import psutil
        import ray

        ray.shutdown()
        procs = []
        for pid, start in self._ray_pids:
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - start) < 1.0:
                    procs.append(p)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for pid, _ in self._ray_pids:
            self.ledger.forget("pid", f"ray-{pid}")

    def _kill_and_wait(self, actor: Any, pid: int) -> None:
        """Kill an actor and wait for its process to exit: a process with sockets in a namespace keeps
        the namespace alive (unnamed) after ``ip netns del``, and a cgroup cannot go while it has tasks."""
        import psutil
        import ray

        ray.kill(actor, no_restart=True)
        try:
            psutil.Process(pid).wait(10)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            logger.warning("actor process %s still alive 10 s after ray.kill; left in the ledger", pid)
            return
        self.ledger.forget("pid", str(pid))

    def _remove_cgroup(self, leaf: Any) -> None:
        leaf.remove()
        self.ledger.forget("cgroup", leaf.name)


    # -- calibration in place --------------------------------------------------------------
    def fit_caps(self, tolerance_pct: float = 3.0, iters: int = 15, rounds: int = 6) -> dict[str, dict[str, float]]:
        """Fit each node's cap so its median latency matches its class target; cache the result per host.

        Runs at the start of every run, in the node's own compute process and through the same call
        path requests take, one node at a time. A cached fit is the starting point and is only
        re-checked (one round) when it still holds, since this shared host drifts between runs. Further
        nodes of a (class, model) fitted in this run get its quota and a short check (one round of
        ``iters // 5`` calls), so seven Pi 3Bs on VGG-16 cost one fit, not seven.

        Only ``cgroup`` nodes are fitted (CFS quota corrected by measured / target): a ``dilation`` node's
        whole-model calls are paced to the class's figure itself (actors/compute.py).
        """
        import ray

        store = CalibrationStore.load()
        out: dict[str, dict[str, float]] = {}
        done: dict[tuple[str, str], float] = {}
        fitted: dict[str, float] = {}  # cgroup quotas fitted in this run, by class/model

        def fits(p: ComputePlan) -> bool:  # dilation nodes need no fit: whole-model calls are paced to the figure
            return p.backend == "cgroup" and not p.host_speed and p.model is not None and p.target_ms is not None

        # the models load in every compute process at once (seconds of CPU each); the fits run one node at a time
        ray.get([g.compute_actor.load.remote(m, m, self.seed) for g in self.groups.values()
                 for m in {p.model for p in g.plans.values() if fits(p) and p.model}])
        for g in self.groups.values():
            for n, p in list(g.plans.items()):
                if not fits(p):
                    continue
                assert p.model is not None and p.target_ms is not None
                key = fit_key(p.hardware_class, p.model, self.k)
                cache = store.cgroup_cores
                if (g.name, key) in done:  # another member of the same pool: same process, same value
                    value = done[(g.name, key)]
                    err = float("nan")
                elif key in fitted:
                    # the same class and model already fitted in this run: an identical quota in a cgroup of
                    # its own gives the same speed, so apply it and check it briefly instead of refitting
                    value, err = self._fit_loop(g, n, p, fitted[key], tolerance_pct, max(3, iters // 5), 1)
                else:
                    value, err = self._fit_loop(g, n, p, cache.get(key, p.cpu_cores or 1.0), tolerance_pct, iters,
                                                rounds)
                    fitted[key] = value
                done[(g.name, key)] = value
                cache[key] = value
                if err == err:  # not NaN
                    store.fit_error_pct[key + "/cgroup"] = err
                store.save()
                out[n] = {"cores": value, "error_pct": err}
                g.plans[n] = plan_compute(n, self.topology.nodes[n].hardware, p.model, p.backend, store, self.k)
                self._apply(g, n, g.plans[n], value)
        return out

    def _apply(self, g: Group, node: str, plan: ComputePlan, value: float) -> None:
        import ray

        if plan.backend == "dilation":
            ray.get(g.compute_actor.set_plan.remote(node, dict(plan.to_dict(), slowdown=value)))
        else:
            ray.get(g.compute_actor.set_limits.remote(value, plan.memory_bytes, plan.period_us))

    def _fit_loop(self, g: Group, node: str, plan: ComputePlan, value: float, tolerance_pct: float, iters: int,
                  rounds: int) -> tuple[float, float]:
        """Correct ``value`` (slowdown or quota) until the median latency is within tolerance."""
        assert plan.target_ms is not None and plan.model is not None
        err = float("nan")
        for _ in range(rounds):
            self._apply(g, node, plan, value)
            med = statistics.median(self._probe(g, node, plan.model, iters)[0])
            err = 100.0 * (med - plan.target_ms) / plan.target_ms
            if abs(err) <= tolerance_pct:
                break
            # slowdown scales latency up; a quota scales it down
            if plan.backend == "dilation":
                value *= plan.target_ms / med
            else:
                value = min(1.0, max(0.01, value * med / plan.target_ms))  # one thread: at most one core
        return value, err

    def probe(self, node: str, key: str, model: str, iters: int = 5) -> tuple[list[float], list[float]]:
        """Wall and CPU ms of ``iters`` forwards of ``key`` on ``node``, through the path requests take."""
        return self._probe(self.node_group[node], node, model, iters, key)

    def _probe(self, g: Group, node: str, model: str, iters: int,
               key: str | None = None) -> tuple[list[float], list[float]]:
        """Wall and CPU ms of ``iters`` forwards through the same Ray call path requests take."""
        import numpy as np
        import ray

        from testbed.workload import MODELS

        x = np.random.default_rng(self.seed).integers(0, 256, (1, *MODELS.get(model).input_shape), dtype=np.uint8)
        wall, cpu = [], []
        for i in range(iters + 2):
            _, st = ray.get(g.compute_actor.forward.remote(node, key or model, x, clock.now_ns()))
            if i >= 2:  # the first calls warm caches and allocators
                wall.append((st["end_ns"] - st["start_ns"]) / 1e6)
                cpu.append(st["cpu_ns"] / 1e6)
        return wall, cpu

    # -- driver-side access ----------------------------------------------------------------
    def plans(self) -> dict[str, ComputePlan]:
        return {n: g.plans[n] for g in self.groups.values() for n in g.nodes}

    def call_async(self, node: str, role: str, method: str, **kwargs: Any) -> Any:
        g = self.node_group[node]
        return g.node_actor.call.remote(node, role, method, kwargs)

    def call(self, node: str, role: str, method: str, timeout: float = 600, **kwargs: Any) -> Any:
        """Invoke a role method on ``node`` and wait for it; ``timeout`` in emulated seconds."""
        import ray

        return ray.get(self.call_async(node, role, method, **kwargs), timeout=clock.wall(timeout))

    def add_role(self, node: str, role: str, params: dict[str, Any]) -> None:
        import ray

        ray.get(self.node_group[node].node_actor.add_role.remote(node, role, params))
        self._setup_calls.setdefault(node, []).append(("add_role", (node, role, params)))

    def load_model(self, node: str, key: str, model: str, weights_path: str | None = None) -> None:
        self.load_models([node], key, model, weights_path)

    def load_models(self, nodes: list[str], key: str, model: str, weights_path: str | None = None) -> None:
        """``load_model`` on several nodes at once (a model's build and warm-up cost seconds of CPU per node); the
        nodes of a pool share one copy."""
        self._per_group(nodes, lambda c: c.load.remote(key, model, self.seed, weights_path))
        for n in nodes:
            self._setup_calls.setdefault(n, []).append(("load_model", (n, key, model, weights_path)))

    def _per_group(self, nodes: list[str], call: Any) -> dict[str, Any]:
        """``call(compute_actor)`` once per compute process that ``nodes`` use (the nodes of a pool share one),
        all issued before any is waited on; returns each node's result."""
        import ray

        refs: dict[str, Any] = {}  # group -> the one call to its compute process
        for n in nodes:
            g = self.node_group[n]
            if g.name not in refs:
                refs[g.name] = call(g.compute_actor)
        got = dict(zip(refs, ray.get(list(refs.values())), strict=True))
        return {n: got[self.node_group[n].name] for n in nodes}

    def start_chain(self, gateway: str, url: str | None = None, block_ms: float | None = None) -> Any:
        """Start the run's EVM chain (embedded py-evm, or the JSON-RPC node at ``url``) in a ``ChainActor``
        and make ``gateway`` its entry point on the emulated network (the ``chain`` role). Returns the
        actor's handle; the actor is killed with the testbed."""
        import ray

        from testbed.workload import ACTORS

        actor = ACTORS.get("chain").options(name=f"{PREFIX}{self.run_id}-chain").remote(url, block_ms,
                                                                                      time_dilation=self.k)
        self._stack.callback(ray.kill, actor, no_restart=True)
        self._stack.callback(lambda: ray.get(actor.close.remote(), timeout=10))
        ray.get(actor.info.remote(), timeout=120)
        self.add_role(gateway, "chain", {"chain": actor})
        return actor

    def unload_model(self, node: str, key: str) -> bool:
        """Free model ``key`` in ``node``'s compute process (e.g. the copy loaded to fit the caps)."""
        import ray

        out: bool = ray.get(self.node_group[node].compute_actor.unload.remote(key))
        return out

    def load_chain(self, node: str, key: str, model: str, weights_path: str | None = None,
                   seed: int | None = None, fresh: bool = False) -> list[dict[str, Any]]:
        """Load ``model`` cut into blocks on ``node``'s compute process; returns the blocks' facts.

        ``seed`` overrides the run's seed for the random weights (e.g. a server that must receive the
        real weights over the network); ``fresh`` rebuilds an already loaded chain.
        """
        return self.load_chains([node], key, model, weights_path, seed, fresh)[node]

    def load_chains(self, nodes: list[str], key: str, model: str, weights_path: str | None = None,
                    seed: int | None = None, fresh: bool = False) -> dict[str, list[dict[str, Any]]]:
        """``load_chain`` on several nodes at once, by node: each compute process cuts its copy in parallel (the
        cut costs seconds of CPU per node, which one node after another would add up). The nodes of a pool share
        one compute process and so one copy: it is cut once."""
        for n in nodes:
            self._setup_calls.setdefault(n, []).append(("load_chain", (n, key, model, weights_path, seed, fresh)))
        s = self.seed if seed is None else seed
        out: dict[str, list[dict[str, Any]]] = self._per_group(
            nodes, lambda c: c.load_chain.remote(key, model, s, weights_path, fresh))
        return out

    def compute_actor(self, node: str) -> Any:
        """The Ray handle of ``node``'s compute process (for roles that manage model state)."""
        return self.node_group[node].compute_actor

    def profile_blocks(self, node: str, key: str, iters: int = 5) -> dict[str, list[float]]:
        """Per-block median thread-CPU and wall ms of chain ``key`` in ``node``'s compute process."""
        import ray

        out: dict[str, list[float]] = ray.get(self.node_group[node].compute_actor.profile_blocks.remote(key, iters))
        return out

    def block_ms(self, node: str, key: str, model: str, iters: int = 5) -> list[float]:
        """Per-block ms of chain ``key`` on ``node`` under its caps: the whole chain as requests see it
        (median wall time of ``iters`` calls through the call path), spread over the blocks by their
        measured thread-CPU share."""
        import statistics

        cpu = self.profile_blocks(node, key, iters)["cpu_ms"]
        whole = statistics.median(self.probe(node, key, model, iters)[0])
        return [c * whole / sum(cpu) for c in cpu]

    def set_link(self, index: int, up: LinkSpec, down: LinkSpec) -> None:
        """Re-shape link ``index`` while the run goes on (replaces, never stacks).

        The kernel qdiscs (or the userspace token buckets) and every endpoint's delay, jitter and
        loss for the paths that cross the link are updated; the resolved topology follows.
        """
        import dataclasses

        import ray

        old = self.topology.links[index]
        links = list(self.topology.links)
        links[index] = dataclasses.replace(old, up=up, down=down)
        self.topology = dataclasses.replace(self.topology, links=tuple(links))
        net = self._net
        net.topology = self.topology
        if not net.is_held(index):  # a link held down takes its new shaping when it comes back
            net.set_link(index, up, down)
        nodes = list(self.topology.nodes)
        futs = []
        for g in self._live_groups():
            paths = {n: {s: vars(net.path_model(s, n)) for s in nodes if s != n} for n in g.nodes}
            rates = {n: {d: net.tx_rate(n, d) for d in nodes if d != n} for n in g.nodes}
            futs.append(g.node_actor.update_paths.remote(paths, rates))
        ray.get(futs)

    def crash_node(self, node: str) -> None:
        """Kill ``node``'s actors (its transport endpoint and its compute process die for real). Peers'
        requests in flight to it fail at once; new ones are refused until ``restart_node``. Spans it had
        recorded are collected first (the observer saw them)."""
        import ray

        g = self.node_group[node]
        if len(g.nodes) > 1:
            raise EmulationError(f"{node} is in the device pool {g.name!r}: a pool's devices share one process, "
                                 "so one of them cannot crash alone")
        if node in self._crashed:
            return
        spans, samples, counts = ray.get(g.node_actor.drain.remote(), timeout=30)
        self._pending_spans += spans
        self._pending_samples += samples
        for n, c in counts.items():  # what the crashed processes counted; the restarted ones count from zero
            r = self._retired_counts.setdefault(n, {"started": 0, "recorded": 0})
            r["started"] += c["started"]
            r["recorded"] += c["recorded"]
            self._request_counts.pop(n, None)
        self._crashed.add(node)
        self._kill_and_wait(g.node_actor, g.pids[0])
        self._kill_and_wait(g.compute_actor, g.pids[1])

    def restart_node(self, node: str) -> None:
        """Start ``node`` again after a crash: new processes on the same namespace and address, the peers told
        its new port, and the roles and models it was set up with loaded again (state that roles built up
        through later calls is gone, as after a real reboot)."""
        import ray

        if node not in self._crashed:
            return
        g = self.node_group[node]
        self._restart_group(g)
        self._ports.update(ray.get(g.node_actor.start.remote(g.pids[1], g.cgroup), timeout=120))
        peers = {n: (self._net.binding(n).address, self._ports[n]) for n in self.topology.nodes}
        nodes = list(self.topology.nodes)
        futs = []
        for h in self._live_groups():
            paths = {n: {s: vars(self._net.path_model(s, n)) for s in nodes if s != n} for n in h.nodes}
            rates = {n: {d: self._net.tx_rate(n, d) for d in nodes if d != n} for n in h.nodes}
            futs.append(h.node_actor.set_peers.remote(peers, paths, rates))
        ray.get(futs, timeout=120)
        self._crashed.discard(node)
        calls, self._setup_calls[node] = self._setup_calls.get(node, []), []
        for fn, args in calls:
            getattr(self, fn)(*args)
        if node in self.absent:  # it rebooted while away: it is still away
            ray.get(g.node_actor.set_away.remote(node, True), timeout=30)

    def cpu_spike(self, node: str, cores: int, duration_s: float) -> list[int]:
        """Start ``cores`` busy processes that contend with ``node``'s compute for ``duration_s``: inside its
        cgroup leaf (its own quota) with the cgroup backend, else on the host. Each is recorded by PID before
        it runs and exits by itself; teardown kills any still running."""
        import subprocess
        import sys

        import psutil

        from testbed.emulation.cgroups import CgroupLeaf

        g = self.node_group[node]
        leaf = CgroupLeaf(g.cgroup["name"], g.cgroup["mode"], tuple(g.cgroup["dirs"])) if g.cgroup else None
        # the burner ends with its time, or as soon as the runner that started it is gone (reparented: a runner
        # SIGKILLed alone, not with its process group, must not leave busy processes behind)
        code = (f"import os, time\nend = time.monotonic() + {float(clock.wall(duration_s))!r}\nparent = {os.getpid()}\n"
                "while time.monotonic() < end and os.getppid() == parent: pass\n")
        pids = []
        for _ in range(cores):
            p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            self.ledger.record("pid", str(p.pid), pid=p.pid, start=psutil.Process(p.pid).create_time())
            if leaf is not None:
                leaf.attach(p.pid)
            self._stack.callback(self._end_burner, p)
            pids.append(p.pid)
        return pids

    def _end_burner(self, p: Any) -> None:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        self.ledger.forget("pid", str(p.pid))

    def set_presence(self, node: str, present: bool) -> None:
        """Churn: ``node`` leaves (every link it has goes down; workloads stop sending from it and stop choosing
        it) or joins again. Its processes keep running, so pooled devices can churn too."""
        import ray

        if present == (node not in self.absent):
            return
        actor = self.node_group[node].node_actor if node not in self._crashed else None
        links = [lk.index for lk in self.topology.links if node in (lk.a, lk.b)]
        if not present:
            self.absent.add(node)
            if actor is not None:
                ray.get(actor.set_away.remote(node, True), timeout=30)
            for i in links:
                self.set_link_state(i, False, reason=f"away:{node}")
            return
        try:
            for i in links:
                self.set_link_state(i, True, reason=f"away:{node}")
        finally:
            if actor is not None:
                ray.get(actor.set_away.remote(node, False), timeout=30)
            self.absent.discard(node)  # last: a workload sees it present only once it can work

    def is_present(self, node: str) -> bool:
        """False while ``node`` has left (churn) or is crashed."""
        return node not in self.absent and node not in self._crashed

    def set_link_state(self, index: int, up: bool, reason: str = "scenario") -> None:
        """Take link ``index`` down (every packet on it dropped, both ways) or bring it back.

        Each ``reason`` (an outage, a partition, a node that is away) holds the link down on its own: the link
        comes back only when every reason that took it down has let go of it.
        """
        self._net.hold(index, reason, down=not up)

    def set_phase(self, phase: str) -> None:
        import ray

        ray.get([g.node_actor.set_phase.remote(phase) for g in self._live_groups()])

    def drain(self, timeout: float | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The spans and resource samples every node has recorded since the last drain (``timeout``: wall s)."""
        import ray

        spans, self._pending_spans = self._pending_spans, []
        samples, self._pending_samples = self._pending_samples, []
        for s, r, c in ray.get([g.node_actor.drain.remote() for g in self._live_groups()], timeout=timeout):
            spans += s
            samples += r
            self._request_counts.update(c)
        return spans, samples

    def request_counts(self) -> dict[str, dict[str, int]]:
        """Per node, the requests its workload began and the request spans it recorded, as of the last drain
        (a node that crashed keeps what it had counted, and counts on from its restart)."""
        out = {n: dict(c) for n, c in self._retired_counts.items()}
        for n, c in self._request_counts.items():
            o = out.setdefault(n, {"started": 0, "recorded": 0})
            o["started"] += c["started"]
            o["recorded"] += c["recorded"]
        return out

    def placement(self) -> dict[str, dict[str, Any]]:
        """Where each node's actor runs (Ray node id, pid, host)."""
        import ray

        out: dict[str, dict[str, Any]] = {}
        for g in self.groups.values():
            w = ray.get(g.node_actor.where.remote())
            w["resources_asked"] = self._placement(g.nodes[0])
            w["site"] = self.topology.nodes[g.nodes[0]].site
            for n in g.nodes:
                out[n] = w
        return out

    def byte_counters(self) -> dict[str, dict[str, dict[str, int]]]:
        import ray

        out: dict[str, dict[str, dict[str, int]]] = {}
        for d in ray.get([g.node_actor.byte_counters.remote() for g in self._live_groups()]):
            out.update(d)
        return out
