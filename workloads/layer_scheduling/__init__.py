"""Seed 001's layer scheduling of many DL tasks onto edge servers, with r_kj and l_kj from real models.

The analytic part reproduces the seed's experiment shapes (1000 tasks, 20..90 edge servers, inputs of
100 KB..1 MB per second, 10 Mbit/s..1 Gbit/s, Q = 0.2 s, 290 GFLOP/s per server): the offline
scheduler against fixed k = 1..5 (Fig. 4a), and the online scheduler against FIFO and LBF over a
stream of arrivals (Fig. 4b). The seed's own findings are printed beside ours.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from testbed.workload import MODELS, WORKLOADS, StepResult, Workload
from workloads.layer_scheduling.algorithms import (
    TaskType,
    fifo,
    fixed,
    lbf,
    make_edge,
    make_tasks,
    offline,
    online,
    weight,
)

PAPER = {
    "fig4a": "scheduling deploys more tasks than fixed k = 1..5 at every server count; fixed k = 2 is the best "
             "fixed mode; more servers deploy more tasks",
    "fig4b": "50 servers, 1000 arrivals: FIFO saturates after ~360 tasks; online passes FIFO near 600 arrivals "
             "and LBF near 800",
}


def group_layers(out_elems: list[int], flops: list[int], n_layers: int) -> tuple[list[int], list[int], list[int]]:
    """Merge blocks into ``n_layers`` layers, cutting after the blocks that shrink the data most.

    Returns each layer's output elements, its FLOPs, and the chain block it ends after.
    """
    n = len(out_elems)
    n_layers = min(n_layers, n)
    prev = [out_elems[0], *out_elems[:-1]]
    shrink = sorted(range(n - 1), key=lambda i: (out_elems[i] / max(prev[i], 1), i))
    cuts = sorted(shrink[: n_layers - 1]) + [n - 1]
    elems, work, start = [], [], 0
    for c in cuts:
        elems.append(out_elems[c])
        work.append(sum(flops[start:c + 1]))
        start = c + 1
    return elems, work, cuts


def task_types_from_models(models: list[str], layer_counts: list[int]) -> list[TaskType]:
    return [t for t, _ in task_types_with_cuts(models, layer_counts)]


def task_types_with_cuts(models: list[str], layer_counts: list[int]) -> list[tuple[TaskType, list[int]]]:
    """Task types with the chain block each layer ends after.

    r_kj and l_kj of real models: data ratio after each layer (1 byte per element, as int8 features
    against uint8 frames) and FLOPs of the first k layers per input byte (torch's FlopCounterMode).
    """
    import torch

    from workloads.split.partition import partition

    types: list[tuple[TaskType, list[int]]] = []
    for m in models:
        md = MODELS.get(m)
        chain = partition(md.build(md.num_classes, 0, None), torch.zeros(1, *md.input_shape), m)
        elems = [int(np.prod(i.out_shape)) for i in chain.info]
        fl = [i.flops for i in chain.info]
        in_elems = int(np.prod(md.input_shape))
        for n in layer_counts:
            e, w, cuts = group_layers(elems, fl, n)
            types.append((TaskType(f"{m}/{len(e)}", tuple(x / in_elems for x in e),
                                   tuple(float(np.cumsum(w)[k]) / in_elems for k in range(len(w)))), cuts))
    return types


class LayerSchedulingParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    models: list[str] = Field(default_factory=lambda: ["alexnet", "vgg16", "resnet18", "mobilenet_v2", "small_cnn"])
    layer_counts: list[PositiveInt] = Field(default_factory=lambda: [5, 8])
    n_tasks: PositiveInt = 1000
    edge_counts: list[PositiveInt] = Field(default_factory=lambda: [20, 30, 40, 50, 60, 70, 80, 90])
    online_edges: PositiveInt = 50
    fixed_k: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    v: PositiveFloat = 0.8
    q_s: PositiveFloat = 0.2
    gflops: PositiveFloat = 290.0
    repetitions: PositiveInt = 3


@WORKLOADS.register("layer_scheduling")
class LayerScheduling(Workload):
    """Analytic reproduction of seed 001's Fig. 4 on profiled task types (no node compute needed)."""

    Params = LayerSchedulingParams

    @property
    def p(self) -> LayerSchedulingParams:
        assert isinstance(self.params, LayerSchedulingParams)
        return self.params

    def setup(self, tb: Any) -> None:
        self.types = task_types_from_models(self.p.models, self.p.layer_counts)
        self.jobs: list[tuple[str, Any]] = [("fig4a", e) for e in self.p.edge_counts] + [("fig4b", None)]
        self.i = 0
        self.rows: list[dict[str, Any]] = []
        self.curve: list[dict[str, Any]] = []

    def total_steps(self) -> int:
        return len(self.jobs)

    def step(self, tb: Any) -> StepResult:
        fig, n_edges = self.jobs[self.i]
        for rep in range(self.p.repetitions):
            rng = np.random.default_rng([self.seed, rep, n_edges or 0])
            n = n_edges or self.p.online_edges
            tasks = make_tasks(self.types, self.p.n_tasks, n, rng, q_s=self.p.q_s)
            servers = make_edge(n, np.random.default_rng([self.seed, rep, n, 1]), self.p.gflops, v=self.p.v)
            fresh = servers.copy_empty  # every algorithm sees the same servers and the same tasks

            if fig == "fig4a":
                self.rows.append({"figure": fig, "edges": n, "rep": rep, "algorithm": "scheduling",
                                  "deployed": offline(tasks, fresh())})
                self.rows.append({"figure": fig, "edges": n, "rep": rep, "algorithm": "scheduling_lightest_k",
                                  "deployed": offline(tasks, fresh(), k_rule="lightest")})
                for k in self.p.fixed_k:
                    self.rows.append({"figure": fig, "edges": n, "rep": rep, "algorithm": f"fixed_k{k}",
                                      "deployed": fixed(tasks, fresh(), k)})
            else:
                # the weight range a history of tasks shows (the seed's B_min, B_max), at each task's lightest k
                ws = [min(weight(t, k, servers) for k in range(1, t.kind.layers + 1)) for t in tasks]
                curves = {"online": online(tasks, fresh(), min(ws), max(ws)), "fifo": fifo(tasks, fresh()),
                          "lbf": lbf(tasks, fresh())}
                for alg, counts in curves.items():
                    self.curve += [{"rep": rep, "algorithm": alg, "arrivals": a + 1, "deployed": c}
                                   for a, c in enumerate(counts)]
                    self.rows.append({"figure": fig, "edges": n, "rep": rep, "algorithm": alg,
                                      "deployed": counts[-1]})
        self.i += 1
        return StepResult(progress=1, done=self.i >= len(self.jobs), info={"label": fig})

    @classmethod
    def figures(cls, run: Any) -> list[tuple[str, Any]]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out: list[tuple[str, Any]] = []
        dep_file, curve_file = run.path / "deployments.parquet", run.path / "online_curve.parquet"
        if dep_file.exists():
            d = pd.read_parquet(dep_file)
            a = d[d.figure == "fig4a"].groupby(["edges", "algorithm"]).deployed.mean().unstack()
            fig, ax = plt.subplots(figsize=(7, 4))
            for col in a.columns:
                ax.plot(a.index, a[col], marker="o" if col.startswith("scheduling") else ".",
                        lw=2 if col.startswith("scheduling") else 1, label=col)
            ax.set_xlabel("edge servers")
            ax.set_ylabel("tasks deployed (of 1000)")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
            out.append(("Seed 001 Fig. 4(a): offline scheduling vs fixed k. Paper: " + PAPER["fig4a"], fig))
        if curve_file.exists():
            c = pd.read_parquet(curve_file).groupby(["arrivals", "algorithm"]).deployed.mean().unstack()
            fig, ax = plt.subplots(figsize=(7, 4))
            for col in c.columns:
                ax.plot(c.index, c[col], label=col)
            ax.set_xlabel("tasks arrived")
            ax.set_ylabel("tasks deployed")
            ax.legend()
            ax.grid(alpha=0.3)
            out.append(("Seed 001 Fig. 4(b): online vs FIFO and LBF. Paper: " + PAPER["fig4b"], fig))
        return out

    def artifacts(self) -> dict[str, pd.DataFrame]:
        types = pd.DataFrame([{"type": t.name, "k": k + 1, "r_kj": t.r[k], "l_kj_flop_per_byte": t.l[k]}
                              for t in self.types for k in range(t.layers)])
        return {"task_types": types, "deployments": pd.DataFrame(self.rows), "online_curve": pd.DataFrame(self.curve)}

    def findings(self, summary: pd.DataFrame) -> pd.DataFrame:
        """Seed 001's Fig. 4 claims on this run's means."""
        rows = []
        a = summary[summary.figure == "fig4a"].pivot_table(index="edges", columns="algorithm", values="deployed")
        fixed = [c for c in a.columns if str(c).startswith("fixed_k")]
        for alg, what in (("scheduling", "the seed's depth rule"), ("scheduling_lightest_k", "lightest-k")):
            if alg not in a or not fixed:
                continue
            ok = [bool(a.loc[n, alg] >= a.loc[n, fixed].max()) for n in a.index]
            rows.append({"finding": f"scheduling ({what}) deploys more tasks than every fixed k (Fig. 4a)",
                         "result": "held" if all(ok) else "did not hold", "held_in": f"{sum(ok)}/{len(ok)}",
                         "evidence": "; ".join(f"{n} servers: {a.loc[n, alg]:.0f} vs best fixed "
                                               f"{a.loc[n, fixed].max():.0f}" for n in a.index)})
        b = summary[summary.figure == "fig4b"].set_index("algorithm").deployed
        if {"online", "fifo", "lbf"} <= set(b.index):
            ok = [bool(b["online"] > b["fifo"]), bool(b["online"] > b["lbf"])]
            rows.append({"finding": "online deploys more than FIFO and LBF after 1000 arrivals (Fig. 4b)",
                         "result": "held" if all(ok) else "did not hold", "held_in": f"{sum(ok)}/2",
                         "evidence": f"online {b['online']:.0f}, FIFO {b['fifo']:.0f}, LBF {b['lbf']:.0f}"})
        return pd.DataFrame(rows)

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        if df.empty:
            return df
        out = df.groupby(["figure", "edges", "algorithm"], sort=False)["deployed"].mean().reset_index()
        out["paper"] = out["figure"].map(PAPER)
        return out
