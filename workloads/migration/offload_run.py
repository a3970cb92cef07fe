"""Seed 002's two-step DNN migration executed on a multi-client, multi-server testbed.

Step 1, partition-offloading: every client's model and every server's copy of it are profiled under
the nodes' caps; the links come from the topology. PSO, greedy, random, the exhaustive optimum and
all-local choose a (cut, server) per client (``offloading.py``). Each plan is then *executed*: all
clients query back to back at the same time, so clients sent to one server really share it, and the
measured latencies are written next to the planner's prediction.

Step 2, partition-uploading (``upload_plan``): for the PSO plan, every client uploads its model's
partitions to its chosen server with that uploading plan while its query thread keeps querying on
whatever has arrived (``MigrationRole.upload_and_query``), all clients at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from testbed import clock
from testbed.config.models import Tier
from testbed.errors import ConfigError
from testbed.topology import Topology
from testbed.transport import goodput_bytes_per_s
from testbed.workload import MODELS, WORKLOADS, StepResult, Workload
from workloads.migration.offloading import Client, Env, Plan, choose
from workloads.migration.uploading import PLANS, MigrationProfile, plan_recursive

Algorithm = Literal["local", "pso", "greedy", "random", "exhaustive"]
PAPER = ("Seed 002 (IEEE Access survey, Sec. on DNN migration): PSO places the DNN subtasks in the 12-node "
         "environment, then a partition-uploading plan uploads them; no latency figures are given for step 1")


class OffloadParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    models: list[str] = Field(default_factory=lambda: ["alexnet", "vgg16"], min_length=1)  # client i: models[i % n]
    algorithms: list[Algorithm] = Field(default_factory=lambda: list(get_args(Algorithm)), min_length=1)
    requests_per_algorithm: PositiveInt = 8
    warmup: int = Field(1, ge=0)
    profile_iters: PositiveInt = 3
    max_predicted_s: PositiveFloat = 20.0  # plans predicted slower than this per query are not executed
    upload_plan: Literal["none", "direct", "ionn", "efficiency", "recursive"] = "none"
    upload_placement: Algorithm = "pso"  # whose placement step 2 uploads to (the seed's two-step method: PSO)
    horizon_factor: PositiveFloat = 1.2

    @field_validator("models")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return [MODELS.validate(m) for m in v]


@WORKLOADS.register("partition_offloading")
class PartitionOffloading(Workload):
    Params = OffloadParams

    @property
    def p(self) -> OffloadParams:
        assert isinstance(self.params, OffloadParams)
        return self.params

    @classmethod
    def check(cls, params: BaseModel, topology: Topology, source: str) -> None:
        if not topology.by_tier(Tier.DEVICE):
            raise ConfigError("partition offloading needs client (device) nodes", file=source, path="topology.nodes",
                              fix="add nodes with tier: device")
        if not topology.by_tier(Tier.EDGE) + topology.by_tier(Tier.CLOUD):
            raise ConfigError("partition offloading needs edge or cloud servers", file=source, path="topology.nodes",
                              fix="add nodes with tier: edge or cloud")

    def _layout(self, topo: Topology) -> None:
        self.clients = topo.by_tier(Tier.DEVICE)
        self.servers = topo.by_tier(Tier.EDGE) + topo.by_tier(Tier.CLOUD)
        self.model_of = {c: self.p.models[i % len(self.p.models)] for i, c in enumerate(self.clients)}

    def node_models(self, topology: Topology) -> dict[str, str | None]:
        self._layout(topology)
        # a server's caps are calibrated on the last model listed (one CPU quota serves every model)
        return {**{c: self.model_of[c] for c in self.clients}, **{s: self.p.models[-1] for s in self.servers}}

    # -- profiling -----------------------------------------------------------------------------
    def setup(self, tb: Any) -> None:
        topo: Topology = tb.topology
        self._layout(topo)
        self.infos: dict[str, list[dict[str, Any]]] = {}
        for c in self.clients:
            self.infos[self.model_of[c]] = tb.load_chain(c, self.model_of[c], self.model_of[c])
        for s in self.servers:
            for m in self.infos:
                tb.load_chain(s, m, m)
        self.ms: dict[tuple[str, str], list[float]] = {}
        for n in self.clients:
            self.ms[(n, self.model_of[n])] = tb.block_ms(n, self.model_of[n], self.model_of[n], self.p.profile_iters)
        for n in self.servers:
            for m in self.infos:
                self.ms[(n, m)] = tb.block_ms(n, m, m, self.p.profile_iters)
        for n in self.clients + self.servers:
            tb.add_role(n, "split", {"key": self.model_of.get(n, self.p.models[0]), "compression": "none",
                                     "input_shape": list(MODELS.get(self.p.models[0]).input_shape)})
        self.env = self._env(topo)
        self.rng = np.random.default_rng(self.seed)
        self.rows: list[dict[str, Any]] = []
        self.upload_rows: list[dict[str, Any]] = []
        self.todo: list[str] = list(self.p.algorithms) + (["upload"] if self.p.upload_plan != "none" else [])
        self.chosen: dict[str, Plan] = {}

    def _cut_bytes(self, model: str) -> tuple[int, ...]:
        frame = int(np.prod(MODELS.get(model).input_shape))
        return tuple([frame] + [int(b["out_bytes"]) for b in self.infos[model]])

    def _env(self, topo: Topology) -> Env:
        clients, server_s, bw, rtt = [], [], [], []
        for c in self.clients:
            m = self.model_of[c]
            clients.append(Client(tuple(x / 1e3 for x in self.ms[(c, m)]), self._cut_bytes(m)))
            server_s.append(tuple(tuple(x / 1e3 for x in self.ms[(s, m)]) for s in self.servers))
            paths = [(topo.path(c, s), topo.path(s, c)) for s in self.servers]
            bw.append(tuple(goodput_bytes_per_s(up.rate_mbit) for up, _ in paths))
            rtt.append(tuple((up.delay_ms + down.delay_ms) / 1e3 for up, down in paths))
        return Env(tuple(clients), tuple(server_s), tuple(bw), tuple(rtt))

    def profile_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"node": n, "model": m, "block": i, "name": self.infos[m][i]["name"], "ms": v}
                             for (n, m), ms in self.ms.items() for i, v in enumerate(ms)])

    # -- steps -----------------------------------------------------------------------------------
    def total_steps(self) -> int:
        return len(self.todo)

    def step(self, tb: Any) -> StepResult:
        what = self.todo.pop(0)
        if what == "upload":
            self._upload(tb)
        else:
            self._offload(tb, what)
        return StepResult(progress=1, done=not self.todo, info={"label": what})

    def _hops(self, client: str, cut: int, server: int) -> list[list[Any]]:
        n = len(self.infos[self.model_of[client]])
        return [[client, 0, n]] if cut >= n else [[client, 0, cut], [self.servers[server], cut, n]]

    def _offload(self, tb: Any, algorithm: str) -> None:
        import ray

        if algorithm == "local":
            plan: Plan = [(cl.n, 0) for cl in self.env.clients]
        else:
            plan = choose(algorithm, self.env, self.rng)
        self.chosen[algorithm] = plan
        predicted = self.env.per_client(plan)
        row: dict[str, Any] = {
            "algorithm": algorithm, "predicted_total_ms": sum(predicted) * 1e3,
            "plan": "; ".join(f"{c}:{self.model_of[c]} cut {k}/{cl.n} -> "
                              f"{'local' if k >= cl.n else self.servers[s]}"
                              for c, (k, s), cl in zip(self.clients, plan, self.env.clients, strict=True)),
            "shared_server": len({s for (k, s), cl in zip(plan, self.env.clients, strict=True) if k < cl.n})
            < sum(k < cl.n for (k, _), cl in zip(plan, self.env.clients, strict=True))}
        if max(predicted) > self.p.max_predicted_s:
            row["executed"] = False
            row["note"] = f"not executed: predicted {max(predicted):.1f} s per query > max_predicted_s"
            self.rows.append(row)
            return
        tb.set_phase(algorithm)
        calls = []
        for i, (c, (k, s)) in enumerate(zip(self.clients, plan, strict=True)):
            m = self.model_of[c]
            kw = {"hops": self._hops(c, k, s), "key": m, "input_shape": list(MODELS.get(m).input_shape)}
            if self.p.warmup:
                tb.call(c, "split", "run_requests", n=self.p.warmup, first_id=-1, attrs={}, record=False, **kw)
            calls.append(tb.call_async(c, "split", "run_requests", n=self.p.requests_per_algorithm,
                                       first_id=i * 1_000_000, attrs={"algorithm": algorithm,
                                                                      "predicted_ms": predicted[i] * 1e3}, **kw))
        ray.get(calls, timeout=clock.wall(3600))
        row["executed"] = True
        self.rows.append(row)

    def _upload(self, tb: Any) -> None:
        """Step 2 on ``upload_placement``'s placement (PSO by default): upload while querying, all clients at once."""
        import ray

        topo: Topology = tb.topology
        want = self.p.upload_placement
        plan = self.chosen[want] if want in self.chosen else (
            [(cl.n, 0) for cl in self.env.clients] if want == "local" else choose(want, self.env, self.rng))
        jobs = []
        tb.set_phase("upload")
        for i, (c, (k, s)) in enumerate(zip(self.clients, plan, strict=True)):
            if k >= self.env.clients[i].n:
                continue
            server, m = self.servers[s], self.model_of[c]
            prof = self._migration_profile(topo, c, server, m)
            horizon = self.p.horizon_factor * prof.upload_time([(0, prof.n)])
            up = self.p.upload_plan
            parts = plan_recursive(prof, horizon) if up == "recursive" else PLANS[up](prof)
            tb.load_chain(server, m, m, seed=self.seed + 7919, fresh=True)  # wrong weights until uploaded
            for n in (c, server):
                tb.add_role(n, "migration", {"key": m, "input_shape": list(MODELS.get(m).input_shape),
                                             "compression": "none"})
            label = f"upload/{c}"
            jobs.append((c, server, m, parts, horizon, tb.call_async(
                c, "migration", "upload_and_query", server=server, plan=[list(r) for r in parts],
                profile=dataclasses.asdict(prof), horizon_ms=horizon, label=label)))
        for c, server, m, parts, horizon, ref in jobs:
            res = ray.get(ref, timeout=clock.wall(3600))
            self.upload_rows.append({"client": c, "server": server, "model": m, "upload_plan": self.p.upload_plan,
                                     "partitions": len(parts), "horizon_s": horizon / 1e3,
                                     "measured_upload_s": res["upload_ms"] / 1e3, "queries": res["queries"],
                                     "max_abs_diff_all_uploaded": res["max_abs_diff_all_uploaded"]})

    def _migration_profile(self, topo: Topology, client: str, server: str, model: str) -> MigrationProfile:
        up, down = topo.path(client, server), topo.path(server, client)
        up_b, down_b = goodput_bytes_per_s(up.rate_mbit), goodput_bytes_per_s(down.rate_mbit)
        return MigrationProfile(tuple(self.ms[(client, model)]), tuple(self.ms[(server, model)]),
                                self._cut_bytes(model),
                                tuple(b["param_bytes"] / up_b * 1e3 for b in self.infos[model]),
                                1e3 / up_b, 1e3 / down_b, up.delay_ms)

    # -- results ---------------------------------------------------------------------------------
    def artifacts(self) -> dict[str, pd.DataFrame]:
        return {"offloading_plans": pd.DataFrame(self.rows), "block_profiles": self.profile_table(),
                "offloading_uploads": pd.DataFrame(self.upload_rows)}

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        if df.empty:
            return df
        req = spans[spans.kind == "request"] if not spans.empty else spans
        measured: dict[str, float] = {}
        per_client: dict[str, str] = {}
        if not req.empty:
            for alg, g in req.groupby("phase"):
                means = g.groupby("node").duration_ms.mean()
                measured[str(alg)] = float(means.sum())
                per_client[str(alg)] = ", ".join(f"{n} {v:.1f}" for n, v in means.items())
        df["measured_total_ms"] = df.algorithm.map(measured)
        df["measured_per_client_ms"] = df.algorithm.map(per_client)
        df["prediction_error_pct"] = 100 * (df.predicted_total_ms - df.measured_total_ms) / df.measured_total_ms
        best = df.measured_total_ms.min()
        df["measured_vs_best"] = df.measured_total_ms / best
        df["paper"] = PAPER
        return df

    @classmethod
    def figures(cls, run: Any) -> list[tuple[str, Any]]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        f = run.path / "offloading_plans.parquet"
        if not f.exists() or "measured_total_ms" not in run.summary.columns:
            return []
        s = run.summary
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(s))
        ax.bar(x - 0.2, s.predicted_total_ms, 0.4, label="predicted")
        ax.bar(x + 0.2, s.measured_total_ms.fillna(0), 0.4, label="measured")
        ax.set_xticks(x, s.algorithm)
        ax.set_ylabel("sum of the clients' query latency (ms)")
        ax.set_yscale("log")
        ax.legend()
        return [("Seed 002 partition-offloading executed on the 12-node testbed: predicted vs measured", fig)]
