"""Seed 001 on the testbed: schedule tasks onto the topology's edge servers, deploy, and check Q.

Each device is one task: a camera streaming frames of its model's input size at ``d`` bytes per
second to its edge server. The scheduler (or a baseline) decides which tasks to deploy and how many
layers k run on the edge, from r_kj and l_kj of the real models, the edge capacities measured by
the profiler (FLOP/s of each edge's compute process, times ``capacity_share``) and the edge-to-cloud
link rates of the topology. Deployed tasks then really run: the edge computes the first k layers,
sends the int8 features to the cloud, which finishes. The edge-to-cloud transfer of every frame is
measured against the latency bound Q.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from testbed.config.models import Tier
from testbed.errors import ConfigError
from testbed.topology import Topology
from testbed.workload import MODELS, WORKLOADS, StepResult, Workload
from workloads.layer_scheduling import task_types_with_cuts
from workloads.layer_scheduling.algorithms import Edge, Task, fixed, offline


class ExecutedParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    models: list[str] = Field(default_factory=lambda: ["alexnet", "resnet18", "mobilenet_v2"])
    n_layers: PositiveInt = 5
    input_kbyte_s: tuple[PositiveFloat, PositiveFloat] = (100.0, 1000.0)  # uniform per task, as in the seed
    q_s: PositiveFloat = 0.2
    v: PositiveFloat = 0.8
    capacity_share: PositiveFloat = 0.3  # of the measured single-thread FLOP/s each edge may give to tasks
    algorithms: list[str] = Field(default_factory=lambda: ["scheduling_lightest_k", "fixed_k1", "all_k1"])
    frames_per_task: PositiveInt = 10


@WORKLOADS.register("layer_scheduling_run")
class LayerSchedulingRun(Workload):
    """Driver side of the executed, scaled-down seed 001 experiment."""

    Params = ExecutedParams

    @property
    def p(self) -> ExecutedParams:
        assert isinstance(self.params, ExecutedParams)
        return self.params

    @classmethod
    def check(cls, params: BaseModel, topology: Topology, source: str) -> None:
        assert isinstance(params, ExecutedParams)
        if not topology.by_tier(Tier.EDGE) or not topology.by_tier(Tier.CLOUD) or not topology.by_tier(Tier.DEVICE):
            raise ConfigError("layer_scheduling_run needs device, edge and cloud nodes", file=source,
                              path="topology", fix="use a topology like topologies/seed001_edge.yaml")
        for a in params.algorithms:
            if a not in ("scheduling", "scheduling_lightest_k", "all_k1") and not (
                    a.startswith("fixed_k") and a[7:].isdigit()):
                raise ConfigError(f"unknown algorithm {a!r}", file=source, path="workload.params.algorithms",
                                  fix="use scheduling, scheduling_lightest_k, fixed_k<K> or all_k1")

    def node_models(self, topology: Topology) -> dict[str, str | None]:
        return {n: None for n in topology.nodes}  # no caps to fit: devices only send, servers run at host speed

    def setup(self, tb: Any) -> None:
        topo: Topology = tb.topology
        rng = np.random.default_rng(self.seed)
        self.edges = topo.by_tier(Tier.EDGE)
        self.cloud = topo.by_tier(Tier.CLOUD)[0]
        self.devices = topo.by_tier(Tier.DEVICE)
        types = {t.name.split("/")[0]: (t, cuts) for t, cuts in task_types_with_cuts(self.p.models, [self.p.n_layers])}
        self.tasks: list[tuple[str, str, Task, list[int]]] = []  # device, model, task, layer -> block cut
        for j, d in enumerate(self.devices):
            m = self.p.models[j % len(self.p.models)]
            ei = self.edges.index(topo.nearest(d, Tier.EDGE))
            kind, cuts = types[m]
            rate = float(rng.uniform(*self.p.input_kbyte_s)) * 1e3
            self.tasks.append((d, m, Task(j, kind, {ei: rate}, self.p.q_s), cuts))
        for n in topo.nodes:
            tb.add_role(n, "split", {"key": self.p.models[0], "input_shape": list(MODELS.get(self.p.models[0])
                                                                               .input_shape), "compression": "int8"})
        capacity = []
        for e in self.edges:
            work = ms = 0.0
            for m in self.p.models:
                infos = tb.load_chain(e, m, m)
                prof = tb.profile_blocks(e, m, 3)
                work += sum(b["flops"] for b in infos)
                ms += sum(prof["cpu_ms"])
            capacity.append(work / (ms / 1e3) * self.p.capacity_share)
        for m in self.p.models:
            tb.load_chain(self.cloud, m, m)
        rates = [topo.path(e, self.cloud).rate_mbit * 1e6 for e in self.edges]
        self.server = Edge(np.array(capacity), np.array(rates), self.p.v)
        self.step_i = 0
        self.rows: list[dict[str, Any]] = []

    def _placement(self, algorithm: str) -> dict[int, int]:
        tasks = [t for _, _, t, _ in self.tasks]
        server = self.server.copy_empty()
        if algorithm == "all_k1":  # a baseline that ignores both budgets
            return {t.j: 1 for t in tasks}
        if algorithm.startswith("fixed_k"):
            fixed(tasks, server, int(algorithm[7:]))
        else:
            offline(tasks, server, k_rule="lightest" if algorithm.endswith("lightest_k") else "seed")
        return {j: k for j, (_, k) in server.placed.items()}

    def total_steps(self) -> int:
        return len(self.p.algorithms)

    def step(self, tb: Any) -> StepResult:
        import ray

        alg = self.p.algorithms[self.step_i]
        placement = self._placement(alg)
        tb.set_phase(alg)
        futs = []
        for d, m, t, cuts in self.tasks:
            k = placement.get(t.j)
            bw, comp = t.demand(k or 1, next(iter(t.d)))
            self.rows.append({"algorithm": alg, "device": d, "model": m, "input_kbyte_s": t.d_max / 1e3,
                              "deployed": k is not None, "k": k, "planned_mbit": bw / 1e6,
                              "planned_gflop_s": comp / 1e9})
            if k is None:
                continue
            md = MODELS.get(m)
            cut = cuts[k - 1] + 1
            n_blocks = cuts[-1] + 1
            edge = tb.topology.nearest(d, Tier.EDGE)
            hops = [[d, 0, 0], [edge, 0, cut]] + ([[self.cloud, cut, n_blocks]] if cut < n_blocks else [])
            period_ms = 1e3 * float(np.prod(md.input_shape)) / t.d_max
            futs.append(tb.call_async(d, "split", "run_requests", hops=hops, n=self.p.frames_per_task,
                                      first_id=t.j * 1_000_000, key=m, input_shape=list(md.input_shape),
                                      interval_ms=period_ms, attrs={"algorithm": alg, "k": k, "model": m}))
        ray.get(futs)
        self.step_i += 1
        return StepResult(progress=1, done=self.step_i >= len(self.p.algorithms), info={"label": alg})

    def artifacts(self) -> dict[str, pd.DataFrame]:
        return {"placements": pd.DataFrame(self.rows),
                "edges": pd.DataFrame({"edge": self.edges, "capacity_gflop_s": self.server.c / 1e9,
                                       "uplink_mbit": self.server.b / 1e6})}

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        pl = pd.DataFrame(self.rows)
        if pl.empty:
            return pl
        relay = spans[(spans.kind == "transfer") & spans.src.isin(self.edges) & (spans.dst == self.cloud)]
        req = spans[spans.kind == "request"]
        out = []
        for alg in self.p.algorithms:
            r = relay[relay.phase == alg].duration_ms
            q = req[req.phase == alg]
            out.append({"algorithm": alg, "tasks": int((pl.algorithm == alg).sum()),
                        "deployed": int(pl[(pl.algorithm == alg)].deployed.sum()),
                        "frames": len(q), "relay_p50_ms": r.median(), "relay_p95_ms": r.quantile(0.95),
                        "relay_within_q_pct": 100.0 * float((r <= self.p.q_s * 1e3).mean()) if len(r) else float("nan"),
                        "request_p50_ms": q.duration_ms.median(),
                        "placement": json.dumps({row.device: row.k for row in pl[pl.algorithm == alg].itertuples()
                                                 if row.deployed})})
        return pd.DataFrame(out)
