"""The ``dil_offloading`` workload: seed 004's deep-imitation-learning offloading, trained on the seed's uniform
setting and on costs the testbed measured, and judged by executing the decisions.

Steps: (1) the uniform setting: demonstrations (the optimum, by exhaustive search for T <= 8 and by the
exact trellis DP otherwise) generated as Ray tasks; DIL, SOS and DROS trained; all eight policies scored
against OOS on held-out states. (2) Decision time against T. (3) The testbed setting: the sub-tasks are
consecutive block groups of a real model, their execution times the blocks measured on the device, edge
and cloud nodes under their caps, the radio rate and wired delay those the links are set to; the
policies are trained and scored the same way; then, for a sample of states, the links are set to the
state's values and every policy's decision is executed as a chain of hops, its measured latency logged
beside the predicted one.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from testbed import clock
from testbed.config.models import Tier
from testbed.topology import Topology
from testbed.workload import MODELS, WORKLOADS, StepResult, Workload, require_tiers
from workloads.dil.costs import Prices, States, cost, dp_optimal, exhaustive, greedy, uniform_states
from workloads.dil.policies import DQNPolicy, ImitationPolicy, median_us

POLICIES = ("OOS", "DIOS", "SOS", "DROS", "GOS", "LOS", "EOS", "COS", "ROS")
PAPER_REDUCTION = {"ROS": 19.80, "GOS": 18.24, "LOS": 23.17, "EOS": 8.37, "COS": 13.61, "DROS": 1.15, "SOS": 2.34}


def _demo_chunk(seed: int, n: int, t: int, prices: dict[str, float]) -> tuple[States, np.ndarray, np.ndarray]:
    st = uniform_states(n, t, np.random.default_rng(seed))
    p = Prices(**prices)
    d, c = exhaustive(st, p) if t <= 8 else dp_optimal(st, p)  # the seed's search; the exact DP beyond T = 8
    return st, d, c


def _concat(parts: list[States]) -> States:
    return States(*(np.concatenate([getattr(s, f) for s in parts]) for f in (
        "exec_s", "data", "radio_bps", "subcarriers", "cores", "backhaul_bps", "wired_s")))


class DILParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    subtasks: PositiveInt = 6
    demonstrations: PositiveInt = 100_000
    demo_tasks: PositiveInt = 8  # Ray tasks generating the demonstrations in parallel
    test_states: PositiveInt = 5_000
    hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 256, 128])
    epochs: PositiveInt = 15
    dqn_steps: PositiveInt = 3000
    decision_time_t: list[PositiveInt] = Field(default_factory=lambda: [4, 6, 8, 10, 12])
    testbed_model: str = "resnet18"
    testbed_demonstrations: PositiveInt = 20_000
    radio_mbit: tuple[float, float] = (2.0, 100.0)  # the device uplink's range in the testbed setting
    wired_ms: tuple[float, float] = (10.0, 20.0)  # the seed's W
    execute_states: int = Field(4, ge=0)
    requests_per_decision: PositiveInt = 3
    prices: dict[str, float] = Field(default_factory=dict)


@WORKLOADS.register("dil_offloading")
class DILOffloading(Workload):
    Params = DILParams

    @property
    def p(self) -> DILParams:
        assert isinstance(self.params, DILParams)
        return self.params

    @classmethod
    def check(cls, params: BaseModel, topology: Topology, source: str) -> None:
        require_tiers(topology, source, "seed 004's offloading")

    def node_models(self, topology: Topology) -> dict[str, str | None]:
        d = topology.by_tier(Tier.DEVICE)[0]
        return {d: self.p.testbed_model, topology.nearest(d, Tier.EDGE): self.p.testbed_model,
                topology.nearest(d, Tier.CLOUD): self.p.testbed_model}

    def setup(self, tb: Any) -> None:
        topo: Topology = tb.topology
        self.dev = topo.by_tier(Tier.DEVICE)[0]
        self.edge = topo.nearest(self.dev, Tier.EDGE)
        self.cloud = topo.nearest(self.dev, Tier.CLOUD)
        self.prices = Prices(**self.p.prices)
        self.rng = np.random.default_rng(self.seed)
        self.rows: list[dict[str, Any]] = []
        self.time_rows: list[dict[str, Any]] = []
        self.exec_rows: list[dict[str, Any]] = []
        self.todo = ["uniform", "decision_time", "testbed"] + (["execute"] if self.p.execute_states else [])

    def total_steps(self) -> int:
        return len(self.todo)

    def step(self, tb: Any) -> StepResult:
        what = self.todo.pop(0)
        tb.set_phase(what)
        getattr(self, f"_{what}")(tb)
        return StepResult(progress=1, done=not self.todo, info={"label": what})

    # -- (1) the seed's uniform setting -------------------------------------------------------------------
    def _demonstrations(self, n: int, t: int) -> tuple[States, np.ndarray, np.ndarray]:
        import dataclasses

        import ray

        task = ray.remote(num_cpus=0)(_demo_chunk)
        k = self.p.demo_tasks
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        prices = dataclasses.asdict(self.prices)
        parts = ray.get([task.remote(self.seed * 1000 + i, s, t, prices) for i, s in enumerate(sizes) if s])
        return (_concat([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))

    def _train_and_score(self, setting: str, train: States, d_train: np.ndarray, test: States) -> dict[str, np.ndarray]:
        t = train.t
        x, xt = train.features(), test.features()
        d_opt, c_opt = dp_optimal(test, self.prices)
        t0 = time.monotonic()  # wall: host time of training, compared across algorithms
        self.dil = ImitationPolicy(x.shape[1], t, list(self.p.hidden), self.seed)
        self.dil.fit(x, d_train, self.p.epochs, seed=self.seed)
        dil_s = time.monotonic() - t0  # wall: host time of training
        sos = ImitationPolicy(x.shape[1], t, [self.p.hidden[0]], self.seed)
        sos.fit(x, d_train, self.p.epochs, seed=self.seed)
        t0 = time.monotonic()  # wall: host time of training, compared across algorithms
        self.dqn = DQNPolicy(x.shape[1], t, seed=self.seed)
        self.dqn.fit(train, self.prices, self.p.dqn_steps)
        dqn_s = time.monotonic() - t0  # wall: host time of training
        decisions = {"OOS": d_opt, "DIOS": self.dil.decide(xt), "SOS": sos.decide(xt), "DROS": self.dqn.decide(xt),
                     "GOS": greedy(test, self.prices), "LOS": np.zeros_like(d_opt), "EOS": np.ones_like(d_opt),
                     "COS": np.full_like(d_opt, 2), "ROS": self.rng.integers(0, 3, d_opt.shape)}
        c_dios = cost(test, decisions["DIOS"], self.prices)[0]
        for name, dec in decisions.items():
            c, lat = cost(test, dec, self.prices)
            self.rows.append({
                "setting": setting, "policy": name, "subtasks": t, "train_states": train.n, "test_states": test.n,
                "accuracy": float((dec == d_opt).mean()), "exact_match": float((dec == d_opt).all(1).mean()),
                "cost_vs_oos": float((c / c_opt).mean()), "latency_ms": float(lat.mean() * 1e3),
                "dios_cost_reduction_pct": float(100 * (1 - (c_dios / c).mean())) if name != "DIOS" else 0.0,
                "paper_dios_reduction_pct": PAPER_REDUCTION.get(name),
                "train_s": dil_s if name == "DIOS" else dqn_s if name == "DROS" else None})
        return decisions

    def _uniform(self, tb: Any) -> None:
        train, d, _ = self._demonstrations(self.p.demonstrations, self.p.subtasks)
        test = uniform_states(self.p.test_states, self.p.subtasks, np.random.default_rng(self.seed + 99))
        self._train_and_score("uniform", train, d, test)

    # -- (2) decision time --------------------------------------------------------------------------------
    def _decision_time(self, tb: Any) -> None:
        import itertools

        import torch

        torch.set_num_threads(1)
        for t in self.p.decision_time_t:
            st = uniform_states(1, t, np.random.default_rng(t))
            f = st.features()
            dil = ImitationPolicy(f.shape[1], t, list(self.p.hidden))
            dil.mean, dil.std = np.zeros(f.shape[1]), np.ones(f.shape[1])
            dqn = DQNPolicy(f.shape[1], t)
            dqn.mean, dqn.std = np.zeros(f.shape[1]), np.ones(f.shape[1])
            all_d = np.array(list(itertools.product(range(3), repeat=t)))
            rep = st.take(np.zeros(len(all_d), dtype=np.int64))

            def search(rep: States = rep, all_d: np.ndarray = all_d) -> Any:
                return all_d[int(np.argmin(cost(rep, all_d, self.prices)[0]))]

            reps = 5 if t >= 10 else 50
            self.time_rows.append({
                "subtasks": t, "decisions": 3 ** t,
                "dil_us": median_us(lambda dil=dil, f=f: dil.decide(f)),
                "rl_us": median_us(lambda dqn=dqn, f=f: dqn.decide(f)),
                "exhaustive_us": median_us(search, reps),
                "dp_us": median_us(lambda st=st: dp_optimal(st, self.prices))})

    # -- (3) grounded in the testbed ----------------------------------------------------------------------
    def _testbed(self, tb: Any) -> None:
        topo: Topology = tb.topology
        model = self.p.testbed_model
        infos = []
        ms: dict[str, np.ndarray] = {}
        for n in (self.dev, self.edge, self.cloud):
            infos = tb.load_chain(n, "dil", model)
            tb.add_role(n, "split", {"key": "dil", "input_shape": list(MODELS.get(model).input_shape),
                                     "compression": "none"})
            ms[n] = np.asarray(tb.block_ms(n, "dil", model, 3))
        t = self.p.subtasks
        flops = np.array([float(b["flops"]) for b in infos])
        edges = np.searchsorted(np.cumsum(flops) / flops.sum(), np.arange(1, t) / t, side="left") + 1
        bounds = [0, *sorted(set(int(e) for e in edges)), len(infos)]
        bounds = sorted(set(bounds))
        self.segments = list(zip(bounds[:-1], bounds[1:], strict=True))
        t = len(self.segments)
        frame = int(np.prod(MODELS.get(model).input_shape))
        cut = [frame] + [int(b["out_bytes"]) for b in infos]
        seg_ms = np.array([[ms[n][a:b].sum() for n in (self.dev, self.edge, self.cloud)] for a, b in self.segments])
        data = np.array([cut[a] for a, _ in self.segments] + [cut[-1]], dtype=float)
        self.testbed_base = (seg_ms / 1e3, data)
        back = topo.path(self.edge, self.cloud)
        self.backhaul_bps = back.rate_mbit * 1e6

        def states(n: int, rng: np.random.Generator) -> States:
            u = uniform_states(n, t, rng)  # subcarriers and cores for the resource prices
            radio = rng.uniform(*self.p.radio_mbit, n) * 1e6
            return States(np.broadcast_to(seg_ms / 1e3, (n, t, 3)).copy(), np.broadcast_to(data, (n, t + 1)).copy(),
                          radio, u.subcarriers, u.cores, np.full(n, self.backhaul_bps),
                          rng.uniform(*self.p.wired_ms, n) / 1e3)

        self.tb_states = states
        train = states(self.p.testbed_demonstrations, np.random.default_rng(self.seed + 7))
        d, _ = dp_optimal(train, self.prices)
        self.tb_test = states(self.p.test_states, np.random.default_rng(self.seed + 8))
        self.tb_decisions = self._train_and_score(f"testbed:{model}", train, d, self.tb_test)

    def _hops(self, dec: np.ndarray) -> list[list[Any]]:
        names = (self.dev, self.edge, self.cloud)
        hops: list[list[Any]] = [[self.dev, 0, 0]]
        for (a, b), loc in zip(self.segments, dec, strict=True):
            node = names[int(loc)]
            if hops[-1][0] == node:
                hops[-1][2] = b
            else:
                hops.append([node, a, b])
        return hops

    def _execute(self, tb: Any) -> None:
        """Set the links to a state's radio rate and wired delay, run every policy's decision, measure."""
        import ray

        topo: Topology = tb.topology
        radio_link = topo.path(self.dev, self.edge).hops[0].link
        wired_link = topo.path(self.edge, self.cloud).hops[0].link
        shape = list(MODELS.get(self.p.testbed_model).input_shape)
        for i in range(min(self.p.execute_states, self.tb_test.n)):
            st = self.tb_test.take(np.array([i]))
            rate = float(st.radio_bps[0]) / 1e6
            w_ms = float(st.wired_s[0]) * 1e3
            tb.set_link(radio_link.index, radio_link.up.model_copy(update={"rate_mbit": rate}),
                        radio_link.down.model_copy(update={"rate_mbit": rate}))
            tb.set_link(wired_link.index, wired_link.up.model_copy(update={"delay_ms": w_ms}),
                        wired_link.down.model_copy(update={"delay_ms": w_ms}))
            for name in POLICIES:
                dec = self.tb_decisions[name][i]
                pred_cost, pred_lat = cost(st, dec[None], self.prices)
                zero_time = Prices(**{**self.prices.__dict__, "time": 0.0})
                resource = float(cost(st, dec[None], zero_time)[0][0])
                label = f"exec/{i}/{name}"
                tb.set_phase(label)
                hops = self._hops(dec)
                tb.call(self.dev, "split", "run_requests", hops=hops, n=1, first_id=-1, attrs={}, record=False,
                        key="dil", input_shape=shape)
                t0 = clock.now_ns()
                ray.get(tb.call_async(self.dev, "split", "run_requests", hops=hops, n=self.p.requests_per_decision,
                                      first_id=i * 100 + POLICIES.index(name) * 10_000,
                                      attrs={"policy": name, "state": i}, key="dil", input_shape=shape),
                        timeout=clock.wall(600))
                per = (clock.now_ns() - t0) / 1e6 / self.p.requests_per_decision
                self.exec_rows.append({"state": i, "policy": name, "radio_mbit": rate, "wired_ms": w_ms,
                                       "decision": "".join(map(str, dec.tolist())),
                                       "predicted_latency_ms": float(pred_lat[0]) * 1e3, "measured_latency_ms": per,
                                       "predicted_cost": float(pred_cost[0]),
                                       "measured_cost": self.prices.time * per / 1e3 + resource})

    # -- results ------------------------------------------------------------------------------------------
    def artifacts(self) -> dict[str, pd.DataFrame]:
        return {"dil_policies": pd.DataFrame(self.rows), "dil_decision_time": pd.DataFrame(self.time_rows),
                "dil_executed": pd.DataFrame(self.exec_rows)}

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        if df.empty:
            return df
        ex = pd.DataFrame(self.exec_rows)
        if not ex.empty:
            g = ex.groupby("policy")
            err = 100 * (ex.predicted_latency_ms - ex.measured_latency_ms) / ex.measured_latency_ms
            agg = pd.DataFrame({"executed_states": g.size(), "measured_latency_ms_mean": g.measured_latency_ms.mean(),
                                "predicted_latency_ms_mean": g.predicted_latency_ms.mean(),
                                "latency_error_pct_median": err.groupby(ex.policy).median(),
                                "measured_cost_mean": g.measured_cost.mean()})
            setting = df.setting.iloc[-1]
            df = df.merge(agg, left_on="policy", right_index=True, how="left")
            df.loc[df.setting != setting, list(agg.columns)] = np.nan
        return df

    def findings(self, summary: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for setting, g in summary.groupby("setting", sort=False):
            s = g.set_index("policy")
            others = [p for p in s.index if p not in ("OOS", "DIOS")]
            beat = [p for p in others if s.loc["DIOS", "cost_vs_oos"] <= s.loc[p, "cost_vs_oos"] + 1e-9]
            rows.append({"finding": f"DIOS costs no more than every other policy ({setting})",
                         "result": "held" if len(beat) == len(others) else "did not hold",
                         "held_in": f"{len(beat)}/{len(others)}",
                         "evidence": "; ".join(f"{p} {s.loc[p, 'dios_cost_reduction_pct']:.1f} % "
                                               f"(paper {PAPER_REDUCTION.get(p, float('nan'))})" for p in others)})
            rows.append({"finding": f"DIOS is the most accurate learned policy ({setting})",
                         "result": "held" if s.loc["DIOS", "accuracy"] >= s.loc[["SOS", "DROS"], "accuracy"].max()
                         else "did not hold", "held_in": "",
                         "evidence": f"DIOS {s.loc['DIOS', 'accuracy']:.3f}, SOS {s.loc['SOS', 'accuracy']:.3f}, "
                                     f"DROS {s.loc['DROS', 'accuracy']:.3f}, ROS {s.loc['ROS', 'accuracy']:.3f}"})
        return pd.DataFrame(rows)

    @classmethod
    def figures(cls, run: Any) -> list[tuple[str, Any]]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        f = run.path / "dil_policies.parquet"
        if not f.exists():
            return []
        df = pd.read_parquet(f)
        out = []
        for setting, g in df.groupby("setting", sort=False):
            fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
            ax[0].bar(g.policy, g.accuracy)
            ax[0].set_title("offloading accuracy vs OOS (Fig. 3)")
            ax[1].bar(g.policy, g.cost_vs_oos)
            ax[1].set_title("cost relative to OOS (Fig. 4)")
            out.append((f"Seed 004, {setting} setting", fig))
        t = run.path / "dil_decision_time.parquet"
        if t.exists():
            d = pd.read_parquet(t)
            fig, ax = plt.subplots(figsize=(5.5, 3.5))
            for col in ("dil_us", "rl_us", "exhaustive_us", "dp_us"):
                ax.semilogy(d.subtasks, d[col], marker="o", label=col[:-3])
            ax.set_xlabel("sub-tasks T")
            ax.set_ylabel("decision time (us, median)")
            ax.legend()
            out.append(("Seed 004: online decision time vs T", fig))
        return out
