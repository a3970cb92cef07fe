"""Whole-model inference on one chosen tier: the baseline later partitioning is compared against.

Devices stream camera frames (uint8, the model's input size). In the ``device`` phase a device
runs the model itself; in the ``edge``/``cloud`` phases it sends the frame to its nearest node of
that tier, which runs the model and returns the logits. Every request leaves a ``request`` span
at the device and ``transfer``/``queue``/``compute`` spans along its way.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt, field_validator

from testbed import clock
from testbed.config.models import Tier
from testbed.errors import ConfigError
from testbed.topology import Topology
from testbed.transport import Message
from testbed.workload import MODELS, ROLES, WORKLOADS, FailurePolicy, OnFailure, StepResult, Workload


class InferenceParams(BaseModel):
    """Parameters of the ``inference`` workload."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = "mobilenet_v2"
    tiers: list[Tier] = Field(default_factory=lambda: [Tier.DEVICE, Tier.EDGE, Tier.CLOUD], min_length=1)
    requests_per_device: PositiveInt = 20
    interval_ms: NonNegativeFloat = 0.0
    warmup: int = Field(2, ge=0)
    chunk: PositiveInt = 5
    input_dtype: Literal["uint8", "float32"] = "uint8"
    weights_path: str | None = None
    # when the target cannot answer (crashed, unreachable): stop the run, record the request as failed and
    # go on, or run it on the device itself and go on
    on_failure: OnFailure = "fail"

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return MODELS.validate(v)


@ROLES.register("inference")
class InferenceRole:
    """Node side: serve ``infer`` requests, and (on devices) generate and time requests."""

    def __init__(self, rt: Any, params: dict[str, Any]) -> None:
        self.model = params["model"]
        self.shape = tuple(params["input_shape"])
        self.dtype = params["input_dtype"]
        self.policy = FailurePolicy(params.get("on_failure", "fail"))

    def on_message(self, rt: Any, msg: Message) -> tuple[str, np.ndarray, dict[str, Any]]:
        assert msg.array is not None
        out = rt.compute(self.model, msg.array, int(msg.meta.get("request_id", -1)))
        return "result", out, {}

    def _frame(self, rt: Any) -> np.ndarray:
        rng: np.random.Generator = rt.rng
        if self.dtype == "uint8":
            return rng.integers(0, 256, size=(1, *self.shape), dtype=np.uint8)
        return rng.standard_normal((1, *self.shape), dtype=np.float32)

    def run_requests(self, rt: Any, target: str, target_tier: str, n: int, first_id: int, interval_ms: float,
                     record: bool = True) -> int:
        for i in range(n):
            if rt.away:  # the device has left (churn): its frames are not sent while it is away
                if not interval_ms:
                    return i  # back to back: the rest of the chunk is not sent
                clock.sleep(interval_ms / 1e3)  # this frame's slot passes unsent
                continue
            x = self._frame(rt)
            rid = first_id + i if record else -1
            if record:
                rt.begin_request()
            t0 = clock.now_ns()
            status = "ok"
            if target == rt.name:
                rt.compute(self.model, x, rid)
            else:
                try:
                    rt.request(target, "infer", x, {"role": "inference"}, rid, timeout=self.policy.timeout_s)
                except Exception as e:  # the target crashed or is unreachable, or this device left
                    status = self.policy.handle(rt, e, t0, rid, target)
                    if status == "fallback":
                        rt.compute(self.model, x, rid)
            t1 = clock.now_ns()
            if record:
                rt.span("request", t0, t1, request_id=rid, nbytes=int(x.nbytes), target=target,
                        target_tier=target_tier, status=status)
            if interval_ms:
                clock.sleep(interval_ms / 1e3)
        return n


@WORKLOADS.register("inference")
class InferenceWorkload(Workload):
    """Driver side of whole-model inference on one tier per phase."""

    Params = InferenceParams

    @classmethod
    def check(cls, params: BaseModel, topology: Topology, source: str) -> None:
        assert isinstance(params, InferenceParams)
        if not topology.by_tier(Tier.DEVICE):
            raise ConfigError("the inference workload needs at least one device node", file=source,
                              path="topology", fix="add a node with tier: device")
        for t in params.tiers:
            if t != Tier.DEVICE and not topology.by_tier(t):
                raise ConfigError(f"tier {t.value!r} is asked for but the topology has no {t.value} node",
                                  file=source, path="workload.params.tiers",
                                  fix=f"add a {t.value} node or remove {t.value!r} from tiers")

    @property
    def p(self) -> InferenceParams:
        assert isinstance(self.params, InferenceParams)
        return self.params

    def n_requests(self) -> int:
        return self.requests or self.p.requests_per_device

    def targets(self, topology: Topology, tier: Tier) -> dict[str, str]:
        devs = topology.by_tier(Tier.DEVICE)
        return {d: d if tier == Tier.DEVICE else topology.nearest(d, tier) for d in devs}

    def node_models(self, topology: Topology) -> dict[str, str | None]:
        out: dict[str, str | None] = {n: None for n in topology.nodes}
        for t in self.p.tiers:
            for tgt in self.targets(topology, t).values():
                out[tgt] = self.p.model
        if self.p.on_failure == "local":  # a device falls back on its own copy
            out.update({d: self.p.model for d in topology.by_tier(Tier.DEVICE)})
        return out

    def setup(self, tb: Any) -> None:
        import ray

        self.topology: Topology = tb.topology
        md = MODELS.get(self.p.model)
        role_params = {"model": self.p.model, "input_shape": list(md.input_shape), "input_dtype": self.p.input_dtype,
                       "on_failure": self.p.on_failure}
        for n in tb.topology.nodes:
            tb.add_role(n, "inference", role_params)
        for n, m in self.node_models(tb.topology).items():
            if m:
                tb.load_model(n, m, m, self.p.weights_path)
        self.devices = tb.topology.by_tier(Tier.DEVICE)
        self.phase_i = 0
        self.stopped: set[str] = set()  # devices that crashed in the current phase
        self.phase_start: float | None = None
        self.t0 = clock.now()
        self.reported = 0
        if self.p.warmup:
            tb.set_phase("warmup")
            futs = [tb.call_async(d, "inference", "run_requests", target=tgt, target_tier=t.value, n=self.p.warmup,
                                  first_id=0, interval_ms=0.0, record=False)
                    for t in self.p.tiers for d, tgt in self.targets(tb.topology, t).items()]
            ray.get(futs)

    def total_steps(self) -> int:
        if self.duration_s:
            return int(self.duration_s * 10)  # progress in tenths of a second
        chunks = -(-self.n_requests() // self.p.chunk)  # per device and tier
        return len(self.p.tiers) * chunks * len(self.devices)  # device-chunks

    def step(self, tb: Any) -> StepResult:
        """Each device runs its own chunks, one after another: a device never waits for a slower one (a chunk is
        a unit of control and progress, not a barrier). A phase ends when every device has sent its requests
        (or, with ``duration_s``, when the phase's time is up and the chunks in flight are back)."""
        import ray

        tier = self.p.tiers[self.phase_i]
        targets = self.targets(tb.topology, tier)
        if self.phase_start is None:
            tb.set_phase(tier.value)
            self.phase_start = clock.now()
            self.cursor = {d: 0 for d in targets}
            self.inflight: dict[Any, str] = {}  # a chunk in flight -> its device
            self.stopped = set()
        per_phase = self.duration_s / len(self.p.tiers) if self.duration_s else None
        # back to back (no frame period), a device that is away is not sent work until it is back; with a
        # frame period its chunks go on and skip their slots, so the run keeps the camera's clock
        waiting = {d for d in targets if not self.p.interval_ms and not tb.is_present(d)}
        busy = set(self.inflight.values())
        for i, (d, tgt) in enumerate(targets.items()):
            if d in busy or d in self.stopped or d in waiting:
                continue
            if per_phase is not None:
                if clock.now() - self.phase_start >= per_phase:
                    continue
                n = self.p.chunk
            else:
                n = min(self.p.chunk, self.n_requests() - self.cursor[d])
                if n <= 0:
                    continue
            fut = tb.call_async(d, "inference", "run_requests", target=tgt, target_tier=tier.value, n=n,
                                first_id=i * 1_000_000 + self.cursor[d], interval_ms=self.p.interval_ms)
            self.inflight[fut] = d
            self.cursor[d] += n
        progress = 0
        if self.inflight:
            # a short wait when some device is away, so that its return is noticed
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=clock.wall(0.2) if waiting else None)
            for f in ready:
                d = self.inflight.pop(f)
                try:
                    ray.get(f)
                except Exception:
                    if tb.is_present(d):
                        raise
                    self.stopped.add(d)  # the device crashed under its chunk: it sends no more
                progress += 1
        # the phase ends when every device is done; one that is away then does not hold it (its remaining
        # requests are not sent)
        if not self.inflight and all(d in self.stopped or d in waiting or (
                clock.now() - self.phase_start >= per_phase if per_phase is not None
                else self.cursor[d] >= self.n_requests()) for d in targets):
            self.phase_i += 1
            self.phase_start = None
        done = self.phase_i >= len(self.p.tiers)
        if self.duration_s:
            now = self.total_steps() if done else min(self.total_steps(), int((clock.now() - self.t0) * 10))
            progress, self.reported = now - self.reported, now
        return StepResult(progress=progress, done=done, info={"label": tier.value})

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        from testbed.results import request_table

        rt = request_table(spans)
        if rt.empty:
            return pd.DataFrame()
        for col in ("compute_ms", "transfer_ms", "queue_ms"):
            if col not in rt:
                rt[col] = 0.0
        status = rt.groupby(["device", "phase"], sort=False).status.agg(
            failed=lambda s: int((s == "failed").sum()), fallback=lambda s: int((s == "fallback").sum()))
        rt = rt[rt.status != "failed"]  # a failed request has no latency to speak of; it is counted below
        g = rt.groupby(["device", "phase"], sort=False)
        out = g.agg(target=("target", "first"), requests=("latency_ms", "size"),
                    latency_mean_ms=("latency_ms", "mean"), latency_p50_ms=("latency_ms", "median"),
                    latency_p95_ms=("latency_ms", lambda s: s.quantile(0.95)),
                    compute_ms=("compute_ms", "mean"), transfer_ms=("transfer_ms", "mean"),
                    queue_ms=("queue_ms", "mean"), bytes_per_request=("bytes", "mean"),
                    energy_j_per_request=("energy_j", "mean")).reset_index()
        out = out.merge(status.reset_index(), on=["device", "phase"], how="outer")
        out[["failed", "fallback"]] = out[["failed", "fallback"]].fillna(0).astype(int)
        out["requests"] = out["requests"].fillna(0).astype(int)
        best = out.dropna(subset=["latency_p50_ms"])
        best = best.loc[best.groupby("device")["latency_p50_ms"].idxmin(), ["device", "phase"]]
        out["fastest"] = out.set_index(["device", "phase"]).index.isin(best.set_index(["device", "phase"]).index)
        return out
