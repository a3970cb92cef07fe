"""Seed 002's DNN migration: partition-uploading plans compared on profiles measured on the testbed.

The client (a device node) and the server (its nearest edge node) each profile the model's blocks
under their caps; the uplink comes from the topology. Each plan's query latency over upload time
(Fig. 5 of the seed) and its cumulative query delay up to a common horizon are computed from those.
Executing the upload while a query thread runs on the testbed is the next step (issue 3).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from testbed import clock
from testbed.config.models import Tier
from testbed.topology import Topology
from testbed.transport import Message, goodput_bytes_per_s
from testbed.workload import MODELS, ROLES, WORKLOADS, StepResult, Workload
from workloads.migration.uploading import (
    PLANS,
    MigrationProfile,
    cumulative_delay,
    plan_recursive,
    query_ms,
    query_plan,
)
from workloads.split import SplitRole

PAPER = "Fig. 5 (AlexNet, VGG): total query delay during upload, recursive efficiency < IONN < direct upload"


@ROLES.register("migration")
class MigrationRole:
    """Upload thread and query thread on the client; weight loading (with a CR reply) on the server."""

    def __init__(self, rt: Any, params: dict[str, Any]) -> None:
        self.split = SplitRole(rt, {"key": params["key"], "input_shape": params["input_shape"], "compression": "none"})
        self.key = params["key"]

    def on_message(self, rt: Any, msg: Message) -> tuple[str, np.ndarray | None, dict[str, Any]]:
        import ray

        assert msg.array is not None
        loaded = ray.get(rt.compute_actor.load_block_state.remote(msg.meta["key"], msg.array, msg.meta["spec"]))
        return "cr", None, {"bytes": loaded}

    def _hops(self, rt: Any, server: str, n: int, on_server: set[int]) -> list[list[Any]]:
        hops: list[list[Any]] = [[rt.name, 0, 0]]
        for k in range(n):
            node = server if k in on_server else rt.name
            if hops[-1][0] == node and hops[-1][2] == k:
                hops[-1][2] = k + 1
            else:
                hops.append([node, k, k + 1])
        return hops

    def upload_and_query(self, rt: Any, server: str, plan: list[list[int]], profile: dict[str, Any],
                         horizon_ms: float, label: str) -> dict[str, Any]:
        """Upload ``plan``'s partitions to ``server`` while querying back to back until ``horizon_ms``."""
        import threading

        import ray

        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in profile.items()}
        prof = MigrationProfile(**kw)
        uploaded: set[int] = set()
        lock = threading.Lock()
        # the partitions are serialised before the clock starts, as a client would have its model file
        # ready: doing it during the upload would run inside the capped compute process and stall queries
        states = [ray.get(rt.compute_actor.block_state.remote(self.key, a, b)) for a, b in plan]
        t0 = clock.now_ns()
        done: dict[str, float] = {}

        def uploader() -> None:
            for (a, b), (flat, spec) in zip(plan, states, strict=True):
                s = clock.now_ns()
                rt.request(server, "weights", flat, {"role": "migration", "key": self.key, "spec": spec}, -1,
                           channel="bulk", timeout=3600.0)
                e = clock.now_ns()
                rt.span("upload", s, e, nbytes=int(flat.nbytes), src=rt.name, dst=server, partition=[a, b],
                        t_rel_ms=(e - t0) / 1e6, plan=label)
                with lock:
                    uploaded.update(range(a, b))
            done["upload_ms"] = (clock.now_ns() - t0) / 1e6

        th = threading.Thread(target=uploader, name="tb-upload", daemon=True)
        th.start()
        q = 0
        while (clock.now_ns() - t0) / 1e6 < horizon_ms or th.is_alive():
            with lock:
                now_up = frozenset(uploaded)
            pred, on_server = query_plan(prof, now_up)
            hops = self._hops(rt, server, prof.n, set(on_server))
            x = rt.rng.integers(0, 256, size=(1, *self.split.shape), dtype=np.uint8)
            s = clock.now_ns()
            self.split.infer_once(rt, hops, x)
            e = clock.now_ns()
            rt.span("request", s, e, request_id=q, t_rel_ms=(s - t0) / 1e6, uploaded_blocks=len(now_up),
                    server_blocks=len(on_server), predicted_ms=pred, plan=label)
            q += 1
        th.join()
        # exactness once everything is there: all on the server vs all on the client
        x = rt.rng.integers(0, 256, size=(1, *self.split.shape), dtype=np.uint8)
        local = self.split.infer_once(rt, [[rt.name, 0, prof.n]], x)
        remote = self.split.infer_once(rt, [[rt.name, 0, 0], [server, 0, prof.n]], x)
        full = set(range(prof.n)) <= set().union(*[set(range(a, b)) for a, b in plan]) if plan else False
        return {"queries": q, "upload_ms": done.get("upload_ms", 0.0),
                "max_abs_diff_all_uploaded": float(np.abs(local - remote).max()) if full else float("nan")}


class MigrationParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    models: list[str] = Field(default_factory=lambda: ["alexnet", "vgg16"])
    plans: list[str] = Field(default_factory=lambda: ["direct", "ionn", "efficiency", "recursive"])
    horizon_factor: PositiveFloat = 1.2  # horizon = this x the longest plan's upload time
    profile_iters: int = 3
    execute: bool = False  # really upload the weights over the shaped link while a query thread runs
    offloading_reps: int = Field(0, ge=0)  # > 0: PSO vs greedy vs random partition-offloading, 12-node setting


@WORKLOADS.register("dnn_migration")
class DnnMigration(Workload):
    Params = MigrationParams

    @property
    def p(self) -> MigrationParams:
        assert isinstance(self.params, MigrationParams)
        return self.params

    def node_models(self, topology: Topology) -> dict[str, str | None]:
        d = topology.by_tier(Tier.DEVICE)[0]
        e = topology.nearest(d, Tier.EDGE)
        return {n: (self.p.models[0] if n in (d, e) else None) for n in topology.nodes}

    def setup(self, tb: Any) -> None:
        topo: Topology = tb.topology
        self.client = topo.by_tier(Tier.DEVICE)[0]
        self.server = topo.nearest(self.client, Tier.EDGE)
        self.i = 0
        self.rows: list[dict[str, Any]] = []
        self.curves: list[dict[str, Any]] = []

    def _profile(self, tb: Any, model: str) -> MigrationProfile:
        topo: Topology = tb.topology
        infos = tb.load_chain(self.client, model, model)
        tb.load_chain(self.server, model, model)
        plans = tb.plans()
        ms = {}
        for n in (self.client, self.server):
            cpu = tb.profile_blocks(n, model, self.p.profile_iters)["cpu_ms"]
            plan = plans[n]
            from testbed.calibration import CalibrationStore, class_target_ms

            target = None
            if not plan.host_speed:
                target, _ = class_target_ms(CalibrationStore.load(), topo.nodes[n].hardware, model)
            ms[n] = tuple(c * (target / sum(cpu) if target else 1.0) for c in cpu)
        up, down = topo.path(self.client, self.server), topo.path(self.server, self.client)

        def per_byte(rate_mbit: float) -> float:  # ms per payload byte
            return 1e3 / goodput_bytes_per_s(rate_mbit)

        frame = int(np.prod(MODELS.get(model).input_shape))
        return MigrationProfile(ms[self.client], ms[self.server], tuple([frame] + [b["out_bytes"] for b in infos]),
                                tuple(b["param_bytes"] * per_byte(up.rate_mbit) for b in infos),
                                per_byte(up.rate_mbit), per_byte(down.rate_mbit), up.delay_ms)

    def total_steps(self) -> int:
        return len(self.p.models)

    def step(self, tb: Any) -> StepResult:
        model = self.p.models[self.i]
        prof = self._profile(tb, model)
        plans = {name: PLANS[name](prof) for name in self.p.plans if name != "recursive"}
        upload = {name: prof.upload_time(pl) for name, pl in plans.items()}
        horizon = self.p.horizon_factor * max([*upload.values(), 1.0])
        if "recursive" in self.p.plans:
            plans["recursive"] = plan_recursive(prof, horizon)
            upload["recursive"] = prof.upload_time(plans["recursive"])
        for name, pl in plans.items():
            t, uploaded = 0.0, frozenset[int]()
            self.curves.append({"model": model, "plan": name, "t_ms": 0.0, "query_ms": query_ms(prof, uploaded)})
            for a, b in pl:
                t += prof.upload_time([(a, b)])
                uploaded = uploaded | frozenset(range(a, b))
                self.curves.append({"model": model, "plan": name, "t_ms": t, "query_ms": query_ms(prof, uploaded)})
            self.rows.append({"model": model, "plan": name, "partitions": len(pl),
                              "uploaded_mb": sum(sum(prof.upload_ms[a:b]) for a, b in pl) / prof.up_ms_per_byte / 1e6,
                              "upload_s": upload[name] / 1e3, "client_only_ms": query_ms(prof, frozenset()),
                              "final_query_ms": query_ms(prof, frozenset(range(prof.n))),
                              "cumulative_delay_ms_s": cumulative_delay(prof, pl, horizon) / 1e3,
                              "horizon_s": horizon / 1e3, "plan_ranges": str(pl[:12])})
            if self.p.execute:
                self.rows[-1].update(self._execute(tb, model, name, pl, prof, horizon))
        self.i += 1
        if self.i >= len(self.p.models) and self.p.offloading_reps:
            self._offloading(tb)
        return StepResult(progress=1, done=self.i >= len(self.p.models), info={"label": model})

    def _offloading(self, tb: Any) -> None:
        """Seed 002's partition-offloading: two clients (the first two models) in the 12-node setting."""
        from workloads.migration.offloading import greedy, pso, random_plan, seed002_env

        frame = {m: int(np.prod(MODELS.get(m).input_shape)) for m in self.p.models}
        chains = {m: tb.load_chain(self.client, m, m) for m in self.p.models}
        models = [(tuple(float(b["flops"]) for b in chains[m]), tuple([frame[m]] + [b["out_bytes"] for b in chains[m]]))
                  for m in (self.p.models * 2)[:2]]
        rng = np.random.default_rng(self.seed)
        self.offload_rows: list[dict[str, Any]] = []
        for rep in range(self.p.offloading_reps):
            env = seed002_env(models, rng)
            for name, plan in (("pso", pso(env, rng)), ("greedy", greedy(env)), ("random", random_plan(env, rng))):
                self.offload_rows.append({"rep": rep, "algorithm": name, "total_latency_ms": env.latency(plan) * 1e3,
                                          "plan": str(plan)})

    def _execute(self, tb: Any, model: str, plan_name: str, plan: list[tuple[int, int]], prof: MigrationProfile,
                 horizon: float) -> dict[str, Any]:
        """Upload for real while the client's query thread runs; the server starts from wrong weights."""
        tb.load_chain(self.server, model, model, seed=self.seed + 7919, fresh=True)
        shape = list(MODELS.get(model).input_shape)
        for n in (self.client, self.server):
            for role in ("migration", "split"):
                tb.add_role(n, role, {"key": model, "input_shape": shape, "compression": "none"})
        label = f"{model}/{plan_name}"
        tb.set_phase(label)
        res = tb.call(self.client, "migration", "upload_and_query", timeout=3600, server=self.server,
                      plan=[list(r) for r in plan], profile=dataclasses.asdict(prof), horizon_ms=horizon, label=label)
        return {"measured_upload_s": res["upload_ms"] / 1e3, "measured_queries": res["queries"],
                "max_abs_diff_all_uploaded": res["max_abs_diff_all_uploaded"]}

    def artifacts(self) -> dict[str, pd.DataFrame]:
        return {"upload_curves": pd.DataFrame(self.curves), "upload_plans": pd.DataFrame(self.rows),
                "offloading": pd.DataFrame(getattr(self, "offload_rows", []))}

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        if df.empty:
            return df
        order = {"recursive": 0, "efficiency": 1, "ionn": 2, "direct": 3}
        checks = []
        for _, g in df.groupby("model"):
            g = g.sort_values("plan", key=lambda s: s.map(order))
            v = g.cumulative_delay_ms_s.to_list()
            checks += [all(a <= b * (1 + 1e-9) for a, b in zip(v, v[1:], strict=False))] * len(g)
        df = df.sort_values(["model", "plan"], key=lambda s: s.map(order) if s.name == "plan" else s)
        df["ordered_as_paper"] = checks
        req = spans[spans.kind == "request"] if not spans.empty else spans
        if self.p.execute and not req.empty:
            # measured cumulative delay: back-to-back queries, each holding its latency for its duration
            area = {}
            for (phase, _), g in req.groupby(["phase", "node"]):
                h = float(df[df.model == str(phase).split("/")[0]].horizon_s.iloc[0]) * 1e3
                start = (g.start_ns - g.start_ns.min()) / 1e6
                dur = g.duration_ms.where(start + g.duration_ms <= h, (h - start).clip(lower=0))
                area[phase] = float((g.duration_ms * dur).sum()) / 1e3
            df["measured_cumulative_delay_ms_s"] = (df.model + "/" + df.plan).map(area)
        df["paper"] = PAPER
        return df.drop(columns=["plan_ranges"])

    def findings(self, summary: pd.DataFrame) -> pd.DataFrame:
        """Fig. 5's order of cumulative query delay, per model (predicted, and measured when executed)."""
        rows = []
        for model, g in summary.groupby("model", sort=False):
            order = " <= ".join(g.plan)
            rows.append({"finding": f"cumulative query delay recursive <= efficiency <= IONN <= direct ({model})",
                         "result": "held" if bool(g.ordered_as_paper.all()) else "did not hold", "held_in": "",
                         "evidence": f"{order}: " + ", ".join(f"{v:.0f}" for v in g.cumulative_delay_ms_s)})
            if "measured_cumulative_delay_ms_s" in g and g.measured_cumulative_delay_ms_s.notna().all():
                v = g.measured_cumulative_delay_ms_s.to_list()
                ok = all(a <= b for a, b in zip(v, v[1:], strict=False))
                rows.append({"finding": f"the same order, measured on the testbed ({model})",
                             "result": "held" if ok else "did not hold", "held_in": "",
                             "evidence": f"{order}: " + ", ".join(f"{x:.0f}" for x in v)})
        return pd.DataFrame(rows)

    @classmethod
    def figures(cls, run: Any) -> list[tuple[str, Any]]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out: list[tuple[str, Any]] = []
        off = run.path / "offloading.parquet"
        if off.exists():
            o = pd.read_parquet(off).groupby("algorithm").total_latency_ms.agg(["mean", "std"])
            fig, ax = plt.subplots(figsize=(5, 3.5))
            ax.bar(o.index, o["mean"], yerr=o["std"])
            ax.set_ylabel("sum of query latencies (ms)")
            out.append(("Seed 002 partition-offloading, 2 clients, 5 edge + 5 cloud servers: PSO vs greedy vs random",
                        fig))
        f = run.path / "upload_curves.parquet"
        if not f.exists():
            return out
        c = pd.read_parquet(f)
        models = list(dict.fromkeys(c.model))
        fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
        for ax, m in zip(axes[0], models, strict=True):
            for plan, g in c[c.model == m].groupby("plan"):
                ax.step(g.t_ms / 1e3, g.query_ms, where="post", label=plan)
            ax.set_title(m)
            ax.set_xlabel("upload time (s)")
            ax.set_ylabel("query latency (ms)")
            ax.legend()
            ax.grid(alpha=0.3)
        return [*out, ("Seed 002 Fig. 5: query latency while the partitions upload. Paper: " + PAPER, fig)]
