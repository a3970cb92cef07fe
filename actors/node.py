"""``NodeActor``: the uncapped Ray actor hosting one node, or a pool of devices, and their endpoints."""

from __future__ import annotations

import os
import threading
import zlib
from typing import Any

import numpy as np
import ray

from testbed import clock


@ray.remote(num_cpus=0, max_concurrency=64)  # type: ignore[call-overload]
class NodeActor:
    def __init__(self, run_id: str, nodes: list[dict[str, Any]], compute: Any, seed: int,
                 sample_interval_s: float = 0.5, time_dilation: float = 1.0) -> None:
        clock.configure(time_dilation)  # before any endpoint or role reads the clock
        from testbed.metrics import Buffer, SpanBuffer
        from testbed.node import NodeRuntime

        self.run_id = run_id
        self.spans = SpanBuffer()
        self.samples = Buffer()
        self.compute_actor = compute
        self.runtimes: dict[str, NodeRuntime] = {}
        for n in nodes:
            name = n["name"]

            def call(key: str, x: np.ndarray, start: int = 0, end: int | None = None, method: str | None = None,
                     kwargs: dict[str, Any] | None = None, _node: str = name) -> tuple[np.ndarray, dict[str, Any]]:
                out: tuple[np.ndarray, dict[str, Any]] = ray.get(self.compute_actor.forward.remote(
                    _node, key, x, clock.now_ns(), start, end, method, kwargs))
                return out

            # each node its own stream, whichever actor hosts it: seed + a stable hash of the name
            self.runtimes[name] = NodeRuntime(name, n["tier"], n["hardware"], n["netns"], n["address"], run_id,
                                              seed + zlib.crc32(name.encode()), call, n["tx_energy"], self.spans)
            self.runtimes[name].compute_actor = compute  # for roles that manage model state (weights)
        self._stop = threading.Event()
        self._compute_pid: int | None = None
        self._cgroup: Any = None
        self._interval = sample_interval_s  # emulated seconds
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True, name="tb-sampler")

    def start(self, compute_pid: int | None, cgroup: dict[str, Any] | None) -> dict[str, int]:
        """Open every endpoint; returns node -> port."""
        self._compute_pid = compute_pid
        if cgroup is not None:
            from testbed.emulation.cgroups import CgroupLeaf

            self._cgroup = CgroupLeaf(cgroup["name"], cgroup["mode"], tuple(cgroup["dirs"]))
        ports = {name: rt.endpoint.start() for name, rt in self.runtimes.items()}
        self._sampler.start()
        return ports

    def where(self) -> dict[str, Any]:
        """The Ray node and process hosting this actor (recorded in the manifest)."""
        import socket as _s

        import psutil

        return {"ray_node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "start": psutil.Process().create_time(), "host": _s.gethostname(), "nice": os.nice(0)}

    def set_peers(self, peers: dict[str, tuple[str, int]], paths: dict[str, dict[str, Any]],
                  tx_rates: dict[str, dict[str, float | None]]) -> None:
        from testbed.transport import PathModel

        for name, rt in self.runtimes.items():
            rt.endpoint.set_peers({p: a for p, a in peers.items() if p != name},
                                  {src: PathModel(**m) for src, m in paths[name].items()}, tx_rates[name])

    def update_paths(self, paths: dict[str, dict[str, dict[str, Any]]],
                     tx_rates: dict[str, dict[str, float | None]]) -> None:
        from testbed.transport import PathModel

        for name, per_peer in paths.items():
            if name in self.runtimes:
                for peer, m in per_peer.items():
                    self.runtimes[name].endpoint.update_path(peer, PathModel(**m), tx_rates[name].get(peer))

    def add_role(self, node: str, role: str, params: dict[str, Any]) -> None:
        from testbed.workload import ROLES

        rt = self.runtimes[node]
        rt.roles[role] = ROLES.get(role)(rt, params)

    def call(self, node: str, role: str, method: str, kwargs: dict[str, Any]) -> Any:
        """Invoke a role method on a node (driver → node control, never data)."""
        rt = self.runtimes[node]
        return getattr(rt.roles[role], method)(rt, **kwargs)

    def set_away(self, node: str, away: bool) -> int:
        """Churn: ``node`` leaves (its roles start no new work and its requests in flight fail) or is back."""
        rt = self.runtimes[node]
        rt.away = away
        return rt.endpoint.fail_pending("left the network") if away else 0

    def set_phase(self, phase: str) -> None:
        for rt in self.runtimes.values():
            rt.phase = phase

    def drain(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, int]]]:
        """Spans and samples since the last drain, and per node the requests begun and recorded so far."""
        spans, counts = self.spans.drain_counted()
        return spans, self.samples.drain(), counts

    def byte_counters(self) -> dict[str, dict[str, dict[str, int]]]:
        return {n: {"sent": dict(rt.endpoint.sent_bytes), "recv": dict(rt.endpoint.recv_bytes)}
                for n, rt in self.runtimes.items()}

    def _sample_loop(self) -> None:
        import psutil

        procs = {"node": psutil.Process(os.getpid())}
        if self._compute_pid:
            try:
                procs["compute"] = psutil.Process(self._compute_pid)
            except psutil.NoSuchProcess:
                pass
        for p in procs.values():
            p.cpu_percent(None)
        label = ",".join(self.runtimes)
        while not self._stop.wait(clock.wall(self._interval)):
            now = clock.now_ns()
            for role, p in procs.items():
                try:
                    rec = {"run_id": self.run_id, "node": label, "process": role, "t_ns": now,
                           "cpu_pct": p.cpu_percent(None), "rss_bytes": p.memory_info().rss}
                except psutil.NoSuchProcess:
                    continue
                if role == "compute" and self._cgroup is not None:
                    st = self._cgroup.stats()
                    rec.update({"nr_throttled": st.get("cpu_nr_throttled", float("nan")),
                                "throttled_ms": st.get("cpu_throttled_time", float("nan")) / 1e6
                                if "cpu_throttled_time" in st else st.get("cpu_throttled_usec", float("nan")) / 1e3,
                                "mem_max_usage_bytes": st.get("mem_max_usage_bytes", float("nan"))})
                self.samples.add(rec)

    def stop(self) -> None:
        self._stop.set()
        for rt in self.runtimes.values():
            rt.endpoint.close()
