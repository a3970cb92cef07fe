"""Vertical partitioning: a model cut into blocks runs across device, edge and cloud by a planner's plan.

Every node loads the model as a chain of torch.fx blocks. The driver profiles each block on each
node (under the node's caps), builds the link state from the topology, asks each planner for a plan
per device, and runs requests with it: the device runs ``[0, c1)``, sends the tensor at the cut to
its edge, which runs ``[c1, c2)`` and forwards to the cloud for ``[c2, n)``; the logits come back
the same way. Each request span carries the planner, the cuts and the predicted latency, so the
summary puts prediction next to measurement.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from testbed import clock
from testbed.config.models import LinkSpec, Tier
from testbed.topology import Topology
from testbed.transport import Message
from testbed.workload import MODELS, ROLES, WORKLOADS, FailurePolicy, OnFailure, StepResult, Workload, require_tiers
from workloads.split.planner import PLANNERS, PathState, SplitProfile, predict
from workloads.split.regression import LayerRegression


class PlannerSpec(BaseModel):
    """A planner by registered name with its parameters (e.g. ``{name: fixed, params: {k: 3}}``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return PLANNERS.validate(v)

    @property
    def label(self) -> str:
        return self.name + "".join(f"_{k}{v}" for k, v in sorted(self.params.items()))


class LinkChange(BaseModel):
    """After ``after_requests`` requests of each planner, every device's uplink changes to ``uplink_mbit``.

    Adaptive planners re-plan from the new link state (Neurosurgeon monitors the bandwidth); the
    others keep their plan, and their prediction goes stale.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    after_requests: PositiveInt
    uplink_mbit: PositiveFloat


class SplitParams(BaseModel):
    """Parameters of the ``split_inference`` workload."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = "resnet18"
    planners: list[PlannerSpec] = Field(default_factory=lambda: [PlannerSpec(name=n) for n in (
        "device_only", "edge_only", "cloud_only", "neurosurgeon_latency", "exhaustive")], min_length=1)
    requests_per_planner: PositiveInt = 10
    compression: Literal["none", "fp16", "int8"] = "none"
    uplink_mbit: list[PositiveFloat] | None = None  # a sweep of every device's access-link uplink rate
    warmup: int = Field(1, ge=0)
    profile_iters: PositiveInt = 5
    chunk: PositiveInt = 5
    predictor: Literal["profile", "regression"] = "profile"  # regression: only one reference node is profiled
    link_change: LinkChange | None = None  # the uplink changes in the middle of every planner's requests
    latency_target_ms: PositiveFloat | None = None  # report the share of requests within it (a finding)
    # when the next tier cannot be reached (it crashed, or the link is gone): stop the run, record the request
    # as failed and go on, or finish the model on the device itself
    on_failure: OnFailure = "fail"
    interval_ms: float = Field(0.0, ge=0)  # a camera's frame period (0: back to back)

    @field_validator("planners", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return [{"name": x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return MODELS.validate(v)


def encode(x: np.ndarray, mode: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Compress the tensor at a cut (raw uint8 frames are sent as they are)."""
    if x.dtype != np.float32 or mode == "none":
        return x, {}
    if mode == "fp16":
        return x.astype(np.float16), {"codec": "fp16"}
    scale = float(np.abs(x).max()) / 127.0 or 1.0
    return np.clip(np.rint(x / scale), -127, 127).astype(np.int8), {"codec": "int8", "scale": scale}


def decode(x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    codec = meta.get("codec")
    if codec == "fp16":
        return x.astype(np.float32)
    if codec == "int8":
        return x.astype(np.float32) * np.float32(meta["scale"])
    return x


@ROLES.register("split")
class SplitRole:
    """Node side: run a range of blocks and pass the tensor on along the plan's hops."""

    def __init__(self, rt: Any, params: dict[str, Any]) -> None:
        self.key = params["key"]
        self.shape = tuple(params["input_shape"])
        self.compression = params["compression"]
        self.policy = FailurePolicy(params.get("on_failure", "fail"))

    def _forward(self, rt: Any, x: np.ndarray, hops: list[list[Any]], rid: int,
                 compression: str | None = None, key: str | None = None) -> np.ndarray:
        """Send ``x`` along ``hops`` ([node, start, end], ...); returns the final output."""
        node, start, end = hops[0]
        mode = compression or self.compression
        payload, codec = encode(x, mode)
        meta = dict(codec, role="split", start=start, end=end, hops=hops[1:], compression=mode, key=key or self.key)
        reply = rt.request(node, "split", payload, meta, rid, timeout=self.policy.timeout_s)
        assert reply.array is not None
        out: np.ndarray = reply.array
        return out

    def on_message(self, rt: Any, msg: Message) -> tuple[str, np.ndarray, dict[str, Any]]:
        assert msg.array is not None
        rid = int(msg.meta.get("request_id", -1))
        x = decode(msg.array, msg.meta)
        start, end = int(msg.meta["start"]), int(msg.meta["end"])
        key = str(msg.meta.get("key", self.key))  # several models may share a node (one chain each)
        if end > start:
            x = rt.compute(key, x, rid, start, end)
        hops = msg.meta.get("hops") or []
        mode = msg.meta.get("compression")
        return "result", (self._forward(rt, x, hops, rid, mode, key) if hops else x), {}

    def infer_once(self, rt: Any, hops: list[list[Any]], x: np.ndarray, compression: str | None = None) -> np.ndarray:
        """One request with a given input; returns the model output (equivalence and compression checks)."""
        _, _, c1 = hops[0]
        if c1 > 0:
            x = rt.compute(self.key, x, -1, 0, c1)
        return self._forward(rt, x, hops[1:], -1, compression) if len(hops) > 1 else x

    def run_requests(self, rt: Any, hops: list[list[Any]], n: int, first_id: int, attrs: dict[str, Any],
                     record: bool = True, key: str | None = None, input_shape: list[int] | None = None,
                     interval_ms: float = 0.0) -> int:
        """Issue ``n`` requests; ``hops[0]`` is this device's own range.

        ``interval_ms`` paces frames (a camera's frame period: a request starts every interval, or
        right after the previous one when it took longer).
        """
        _, _, c1 = hops[0]
        key = key or self.key
        shape = tuple(input_shape) if input_shape else self.shape
        next_start = clock.now_ns()
        for i in range(n):
            if rt.away:  # the device has left (churn): its frames are not sent while it is away
                if not interval_ms:
                    return i  # back to back: the rest of the chunk is not sent
                while (wait := next_start - clock.now_ns()) > 0:  # this frame's slot passes unsent
                    clock.sleep(wait / 1e9)
                next_start += int(interval_ms * 1e6)
                continue
            rid = first_id + i if record else -1
            x: np.ndarray = rt.rng.integers(0, 256, size=(1, *shape), dtype=np.uint8)
            if interval_ms:
                while (wait := next_start - clock.now_ns()) > 0:
                    clock.sleep(wait / 1e9)
                next_start += int(interval_ms * 1e6)
            if record:
                rt.begin_request()
            t0 = clock.now_ns()
            if c1 > 0:
                x = rt.compute(key, x, rid, 0, c1)
            status = "ok"
            if len(hops) > 1:
                try:
                    x = self._forward(rt, x, hops[1:], rid, key=key)
                except Exception as e:  # the next tier crashed or cannot be reached, or this device left
                    status = self.policy.handle(rt, e, t0, rid, hops[1][0])
                    if status == "fallback":
                        x = rt.compute(key, x, rid, c1, None)  # the rest of the model, here
            t1 = clock.now_ns()
            if record:
                rt.span("request", t0, t1, request_id=rid, target=hops[-1][0], status=status, **attrs)
        # the last frame's period too, so that chunks of one request keep the camera's pace
        while interval_ms and (wait := next_start - clock.now_ns()) > 0:
            clock.sleep(wait / 1e9)
        return n


@WORKLOADS.register("split_inference")
class SplitInference(Workload):
    """Driver side: profile, plan per planner (and per uplink rate in a sweep), run, compare."""

    Params = SplitParams

    @property
    def p(self) -> SplitParams:
        assert isinstance(self.params, SplitParams)
        return self.params

    @classmethod
    def check(cls, params: BaseModel, topology: Topology, source: str) -> None:
        require_tiers(topology, source, "split inference")

    def _route(self, topology: Topology, d: str) -> tuple[str, str]:
        return topology.nearest(d, Tier.EDGE), topology.nearest(d, Tier.CLOUD)

    def node_models(self, topology: Topology) -> dict[str, str | None]:
        out: dict[str, str | None] = {n: None for n in topology.nodes}
        for d in topology.by_tier(Tier.DEVICE):
            e, c = self._route(topology, d)
            out[d] = out[e] = out[c] = self.p.model
        return out

    # -- setup: chains, profiles -----------------------------------------------------------
    def setup(self, tb: Any) -> None:
        topo: Topology = tb.topology
        self.devices = topo.by_tier(Tier.DEVICE)
        compute_nodes = [n for n, m in self.node_models(topo).items() if m]
        md = MODELS.get(self.p.model)
        role = {"key": "chain", "input_shape": list(md.input_shape), "compression": self.p.compression,
                "on_failure": self.p.on_failure}
        for n in topo.nodes:
            tb.add_role(n, "split", role)
        infos: list[dict[str, Any]] = next(iter(tb.load_chains(compute_nodes, "chain", self.p.model).values()), [])
        self.blocks = infos
        n_blocks = len(infos)
        frame_bytes = int(np.prod(md.input_shape))  # uint8 frames
        self.cut_bytes = tuple([frame_bytes] + [int(b["out_bytes"]) for b in infos])
        plans = tb.plans()
        self.block_ms: dict[str, list[float]] = {}
        rows = []
        regression = None
        if self.p.predictor == "regression":
            # Neurosurgeon-style: per-layer-type regression fitted on one reference node's profile;
            # every other node is predicted from it, scaled by its class's whole-model time
            ref = next((n for n in compute_nodes if plans[n].host_speed), compute_nodes[0])
            prof = tb.profile_blocks(ref, "chain", self.p.profile_iters)
            regression = LayerRegression().fit(
                (b["kind"], b["flops"], b["out_bytes"], c) for b, c in zip(infos, prof["cpu_ms"], strict=True))
        for n in compute_nodes:
            plan = plans[n]
            if regression is not None and n != ref:
                cpu = [regression.predict(b["kind"], b["flops"], b["out_bytes"]) for b in infos]
            else:
                cpu = tb.profile_blocks(n, "chain", self.p.profile_iters)["cpu_ms"]
            if plan.target_ms is not None and not plan.host_speed:
                # the node's class time, spread over blocks by their share of the measured CPU time
                whole = plan.target_ms
            else:
                # host speed: what the whole chain takes through the call path requests use (colder
                # caches than a tight profiling loop), spread over blocks by their share of CPU time
                whole = float(np.median(tb.probe(n, "chain", self.p.model, self.p.profile_iters)[0]))
            ms = [c * whole / sum(cpu) for c in cpu]
            self.block_ms[n] = ms
            rows += [{"node": n, "hardware_class": plan.hardware_class, "predictor": self.p.predictor,
                      "block": i, "name": infos[i]["name"],
                      "kind": infos[i]["kind"], "out_bytes": infos[i]["out_bytes"], "flops": infos[i]["flops"],
                      "param_bytes": infos[i]["param_bytes"], "cpu_ms": cpu[i], "class_ms": ms[i]}
                     for i in range(n_blocks)]
        self.profile_rows = rows
        self.rounds = [None] if not self.p.uplink_mbit else list(self.p.uplink_mbit)
        bounds = sorted({*range(0, self.p.requests_per_planner, self.p.chunk),
                         *([self.p.link_change.after_requests] if self.p.link_change else [])})
        self.chunks = [(s, min(e, self.p.requests_per_planner) - s)
                       for s, e in zip(bounds, [*bounds[1:], self.p.requests_per_planner], strict=True)
                       if s < self.p.requests_per_planner]
        self.schedule = [(bw, ps, start, n) for bw in self.rounds for ps in self.p.planners for start, n in self.chunks]
        self.base_uplinks = {d: self._access(topo, d)[1].rate_mbit for d in self.devices}
        self.step_i = 0
        self.plan_rows: list[dict[str, Any]] = []
        self.current: dict[str, tuple[list[list[Any]], dict[str, Any]]] = {}

    def _profile_for(self, topo: Topology, d: str) -> SplitProfile:
        e, c = self._route(topo, d)

        def ps(a: str, b: str) -> PathState:
            path = topo.path(a, b)
            return PathState(path.rate_mbit, path.delay_ms)

        hw = topo.nodes[d].hardware
        first = topo.path(d, e).hops[0].link
        return SplitProfile(tuple(self.block_ms[d]), tuple(self.block_ms[e]), tuple(self.block_ms[c]),
                            self.cut_bytes, {"d>e": ps(d, e), "e>d": ps(e, d), "e>c": ps(e, c), "c>e": ps(c, e),
                                             "d>c": ps(d, c), "c>d": ps(c, d)},
                            hw.power_busy_w or 0.0, hw.power_idle_w or 0.0, first.tx_energy_uj_per_bit or 0.0)

    def _access(self, topo: Topology, d: str) -> tuple[Any, LinkSpec, LinkSpec]:
        """The device's first link toward its edge, and its (up, down) specs seen from the device."""
        link = topo.path(d, self._route(topo, d)[0]).hops[0].link
        up, down = (link.up, link.down) if link.a == d else (link.down, link.up)
        return link, up, down

    def _set_uplink(self, tb: Any, mbit: float, only: str | None = None) -> None:
        topo: Topology = tb.topology
        done = set()
        for d in [only] if only else self.devices:
            link, up, down = self._access(topo, d)
            if link.index in done or up.rate_mbit == mbit:
                continue
            done.add(link.index)
            new_up = LinkSpec(rate_mbit=mbit, delay_ms=up.delay_ms, jitter_ms=up.jitter_ms, loss_pct=up.loss_pct)
            tb.set_link(link.index, *((new_up, down) if link.a == d else (down, new_up)))

    def _plan_round(self, tb: Any, bw: float | None, ps: PlannerSpec, label: str | None = None) -> None:
        topo: Topology = tb.topology
        planner = PLANNERS.get(ps.name)(**ps.params)
        label = label or ps.label + (f"@{bw:g}mbit" if bw is not None else "")
        self.current = {}
        for d in self.devices:
            prof = self._profile_for(topo, d)
            c1, c2 = planner.choose(prof)
            pred = predict(prof, c1, c2)
            e, c = self._route(topo, d)
            hops: list[list[Any]] = [[d, 0, c1]]
            if c2 > c1:
                hops.append([e, c1, c2])
            if c2 < prof.n:
                hops.append([c, c2, prof.n])
            attrs = {"planner": ps.label, "uplink_mbit": bw, "c1": c1, "c2": c2, "n_blocks": prof.n,
                     "uplink_now_mbit": self._access(topo, d)[1].rate_mbit, "planned_at_ns": clock.now_ns(),
                     "predicted_ms": pred.latency_ms, "predicted_energy_j": pred.device_energy_j}
            self.current[d] = (hops, attrs)
            acc = self._compression_cost(tb, d, hops) if self.p.compression != "none" and tb.is_present(d) else {}
            attrs.update(acc)
            self.plan_rows.append({"phase": label, "device": d, **attrs,
                                   **{f"pred_{k}_ms": v for k, v in pred.parts.items()}})
        self.planned_uplink = {d: self._access(topo, d)[1].rate_mbit for d in self.devices}
        tb.set_phase(label)
        if self.p.warmup:
            self._run(tb, self.p.warmup, 0, record=False)

    def _compression_cost(self, tb: Any, device: str, hops: list[list[Any]], samples: int = 8) -> dict[str, float]:
        """Accuracy cost of compressing the tensors at this plan's cuts: max |diff| / max |logit|, top-1 agreement."""
        if len(hops) < 2:  # nothing leaves the device, nothing is compressed
            return {"compression_max_rel_diff": 0.0, "compression_top1_agreement": 1.0}
        md = MODELS.get(self.p.model)
        rng = np.random.default_rng(self.seed)
        diffs, agree = [], 0
        for _ in range(samples):
            x = rng.integers(0, 256, size=(1, *md.input_shape), dtype=np.uint8)
            ref = tb.call(device, "split", "infer_once", hops=hops, x=x, compression="none")
            out = tb.call(device, "split", "infer_once", hops=hops, x=x)
            diffs.append(float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-12)))
            agree += int(np.argmax(out) == np.argmax(ref))
        return {"compression_max_rel_diff": max(diffs), "compression_top1_agreement": agree / samples}

    def _run(self, tb: Any, n: int, start: int, record: bool = True) -> int:
        import ray

        # with a frame period a device that is away still runs its chunk and skips the slots (the camera's
        # clock goes on); back to back, it is left out of the chunk
        futs = [tb.call_async(d, "split", "run_requests", hops=hops, n=n, first_id=i * 1_000_000 + start,
                              attrs=attrs, record=record, interval_ms=self.p.interval_ms if record else 0.0)
                for i, (d, (hops, attrs)) in enumerate(self.current.items())
                if self.p.interval_ms or tb.is_present(d)]
        ray.get(futs)
        if not futs:
            clock.sleep(0.2)  # every device is away: give the scenario time rather than use up the plan at once
        return len(self.current)

    def total_steps(self) -> int:
        return len(self.schedule) * len(self.devices)

    def step(self, tb: Any) -> StepResult:
        bw, ps, start, n = self.schedule[self.step_i]
        change = self.p.link_change
        if start == 0:
            if bw is not None:
                self._set_uplink(tb, bw)
            elif change is not None:  # restore the topology's own uplink for the next planner
                for d, rate in self.base_uplinks.items():
                    self._set_uplink(tb, rate, only=d)
            self._plan_round(tb, bw, ps)
        elif change is not None and start == change.after_requests:
            self._set_uplink(tb, change.uplink_mbit)
            after = f"{ps.label}{f'@{bw:g}mbit' if bw is not None else ''}>{change.uplink_mbit:g}mbit"
            if PLANNERS.get(ps.name).adaptive:
                self._plan_round(tb, bw, ps, label=after)  # re-plan from the new link state
            else:
                tb.set_phase(after)  # same plan, stale prediction
        elif PLANNERS.get(ps.name).adaptive and any(
                self._access(tb.topology, d)[1].rate_mbit != self.planned_uplink.get(d) for d in self.devices):
            # the link changed under us (a scenario: a trace, mobility): an adaptive planner re-plans
            now = min(self._access(tb.topology, d)[1].rate_mbit for d in self.devices)
            self._plan_round(tb, bw, ps, label=f"{ps.label}@{now:.3g}mbit")
        sent = self._run(tb, n, start)
        self.step_i += 1
        return StepResult(progress=sent, done=self.step_i >= len(self.schedule), info={"label": ps.label})

    @classmethod
    def figures(cls, run: Any) -> list[tuple[str, Any]]:
        """Chosen cut against the uplink rate, and predicted against measured latency."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        summary = run.summary
        need = {"c1", "c2", "predicted_ms", "measured_p50_ms", "planner", "uplink_mbit"}
        if summary.empty or not need <= set(summary.columns):
            return []
        out: list[tuple[str, Any]] = []
        sweep = summary.dropna(subset=["uplink_mbit"])
        if sweep.uplink_mbit.nunique() > 1:
            fig, axes = plt.subplots(1, 2, figsize=(11, 4))
            for (planner, dev), g in sweep.groupby(["planner", "device"]):
                g = g.sort_values("uplink_mbit")
                axes[0].plot(g.uplink_mbit, g.c1, marker="o", label=f"{planner} ({dev})")
                axes[1].plot(g.uplink_mbit, g.measured_p50_ms, marker="o", label=f"{planner} ({dev})")
            for ax in axes:
                ax.set_xscale("log")
                ax.set_xlabel("device uplink (Mbit/s)")
                ax.grid(alpha=0.3)
            axes[0].set_ylabel("cut c1: blocks run on the device")
            axes[1].set_ylabel("measured median latency (ms)")
            axes[1].set_yscale("log")
            axes[0].legend(fontsize=7)
            out.append(("Chosen cut and latency against the uplink rate", fig))
        fig, ax = plt.subplots(figsize=(5.5, 5))
        ax.scatter(summary.measured_p50_ms, summary.predicted_ms, s=14)
        lim = [0, float(max(summary.measured_p50_ms.max(), summary.predicted_ms.max())) * 1.05]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.plot(lim, [v * 1.1 for v in lim], "k:", lw=0.6)
        ax.plot(lim, [v * 0.9 for v in lim], "k:", lw=0.6)
        ax.set_xlabel("measured median latency (ms)")
        ax.set_ylabel("planner's predicted latency (ms)")
        med = float(summary.error_pct_median.abs().median()) if "error_pct_median" in summary else float("nan")
        out.append((f"Predicted vs measured latency (dotted: +-10 %; median |error| {med:.1f} %)", fig))
        return out

    def artifacts(self) -> dict[str, pd.DataFrame]:
        return {"profile": pd.DataFrame(self.profile_rows), "plans": pd.DataFrame(self.plan_rows)}

    def findings(self, summary: pd.DataFrame) -> pd.DataFrame:
        """Neurosurgeon's cut moves toward the device as the uplink falls; planners predict within 10 %."""
        rows = []
        ns = summary[summary.planner == "neurosurgeon_latency"].dropna(subset=["uplink_mbit"])
        if ns.uplink_mbit.nunique() > 1:
            g = ns.groupby("uplink_mbit").c1.max().sort_index(ascending=False)
            ok = bool((g.diff().dropna() >= 0).all()) and g.iloc[-1] > g.iloc[0]
            rows.append({"finding": "the Neurosurgeon cut moves toward the device as the uplink falls",
                         "result": "held" if ok else "did not hold", "held_in": "",
                         "evidence": ", ".join(f"{r:g} Mbit/s: c1={int(c)}" for r, c in g.items())})
        if "error_pct_median" in summary and summary.error_pct_median.notna().any():
            med = float(summary.error_pct_median.abs().median())
            rows.append({"finding": "planner prediction error <= 10 % (median |error|)",
                         "result": "held" if med <= 10 else "did not hold", "held_in": "",
                         "evidence": f"median |error| {med:.1f} % over {len(summary)} planner runs"})
        if self.p.latency_target_ms and "within_target" in summary:
            share = float((summary.within_target * summary.requests).sum() / summary.requests.sum())
            rows.append({"finding": f"at least 90 % of requests within {self.p.latency_target_ms:g} ms",
                         "result": "held" if share >= 0.9 else "did not hold", "held_in": "",
                         "evidence": f"{100 * share:.1f} % of {int(summary.requests.sum())} requests"})
        wins = getattr(self, "window_rows", None)
        if self.p.latency_target_ms and wins:
            bad = [w for w in wins if not w["median_ms"] <= self.p.latency_target_ms]
            rows.append({"finding": f"median latency within {self.p.latency_target_ms:g} ms in every 5 s window of "
                                    "the scenario", "result": "held" if not bad else "did not hold", "held_in": "",
                         "evidence": "; ".join(f"{w['window_start_s']:g} s: {w['median_ms']:.0f} ms over "
                                               f"{w['requests']}" for w in wins)})
        return pd.DataFrame(rows + self._scenario_findings())

    def _scenario_findings(self) -> list[dict[str, Any]]:
        """When a scenario moved the link under an adaptive planner: the cut follows the uplink, and the share
        of requests within ``latency_target_ms``."""
        plans = pd.DataFrame(getattr(self, "plan_rows", []))
        if plans.empty or "uplink_now_mbit" not in plans:
            return []
        rows = []
        for planner, g in plans.groupby("planner"):
            if not PLANNERS.get(self._planner_name(str(planner))).adaptive \
                    or g.uplink_now_mbit.nunique() < 3 or g.uplink_mbit.notna().any():
                continue
            by = g.groupby("uplink_now_mbit").c1.mean().sort_index()
            ok = by.iloc[0] > by.iloc[-1] and bool((by.diff().dropna() <= 0).all())
            rows.append({"finding": "re-planned on every link change, the cut moves toward the device as the uplink "
                                    "falls", "result": "held" if ok else "did not hold", "held_in": str(planner),
                         "evidence": ", ".join(f"{r:.3g} Mbit/s: c1={c:g}" for r, c in by.items())
                         + f" ({len(g)} plans)"})
        return rows

    def _planner_name(self, label: str) -> str:
        return next((ps.name for ps in self.p.planners if ps.label == label), label)

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        req = spans[spans.kind == "request"].copy()
        if req.empty:
            return pd.DataFrame()
        attrs = req["attrs_json"].map(lambda a: json.loads(a) if a else {})
        keys = ["planner", "uplink_mbit", "c1", "c2", "n_blocks", "predicted_ms", "predicted_energy_j",
                "compression_max_rel_diff", "compression_top1_agreement"]
        for k in keys:
            req[k] = attrs.map(lambda a, k=k: a.get(k, float("nan")))
        req["status"] = attrs.map(lambda a: a.get("status", "ok"))
        # a failed request has no latency to speak of: it is counted, not timed
        req.loc[req.status == "failed", "duration_ms"] = float("nan")
        req["error_pct"] = 100 * (req["predicted_ms"] - req["duration_ms"]) / req["duration_ms"]
        g = req.groupby(["phase", "node"], sort=False)
        out = g.agg(planner=("planner", "first"), uplink_mbit=("uplink_mbit", "first"), c1=("c1", "first"),
                    c2=("c2", "first"), n_blocks=("n_blocks", "first"), requests=("duration_ms", "size"),
                    predicted_ms=("predicted_ms", "first"), measured_p50_ms=("duration_ms", "median"),
                    measured_mean_ms=("duration_ms", "mean"),
                    error_pct_median=("error_pct", "median"),
                    compression_max_rel_diff=("compression_max_rel_diff", "first"),
                    compression_top1_agreement=("compression_top1_agreement", "first"),
                    failed=("status", lambda v: int((v == "failed").sum())),
                    fallback=("status", lambda v: int((v == "fallback").sum())),
                    ).reset_index().rename(columns={"node": "device"})
        if self.p.latency_target_ms:
            target = self.p.latency_target_ms
            out["within_target"] = g.duration_ms.apply(lambda v: float((v <= target).mean())).to_numpy()
            sc = spans[spans.kind == "scenario"]
            if not sc.empty:  # by time: a request stuck on a dead link also stops the ones behind it
                t = (req.end_ns - sc.start_ns.min()) / 1e9
                w = req.groupby((t // 5) * 5).duration_ms
                size, med = w.size(), w.median()
                # a window in which no request finished counts as one, with no median (a failure)
                self.window_rows = [{"window_start_s": float(k), "requests": int(size.get(k, 0)),
                                     "median_ms": float(med.get(k, float("inf")))}
                                    for k in np.arange(0.0, float(size.index.max()) + 5, 5.0)]
        if self.p.compression == "none":
            out = out.drop(columns=["compression_max_rel_diff", "compression_top1_agreement"])
        out["uplink_mbit"] = out["uplink_mbit"].map(lambda v: v if v is not None and not (
            isinstance(v, float) and math.isnan(v)) else float("nan"))
        return out
