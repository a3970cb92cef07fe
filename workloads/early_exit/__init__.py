"""Early exit across tiers (seed 003; BranchyNet/DDNN exits; Edgent's exit-and-cut choice).

A test node sends batches of real test images to the edge. The edge runs the blocks up to its exit
and the exit head, computes every sample's normalized entropy (seed 003 eq. 1) and answers the test
node at once for the samples with entropy < T. The others (their intermediate features) go on to the
cloud, which runs the remaining blocks and the cloud head and sends its predictions straight to the
test node; with a drop threshold, samples whose entropy exceeds it are dropped instead. The test node
times each sample by the message that answered it.

Configurations, all executed on the testbed: SEM-1..8 and the MEM at each of its exit points, for
every threshold; raw offload (the edge forwards the images, the cloud runs the whole network, as
DDNN's baseline); optionally the Edgent policy, which picks exit and cut under a latency target from
profiles and the current bandwidth and re-picks when the link changes mid-run.
"""

from __future__ import annotations

import operator
import threading
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from testbed import clock
from testbed.config.models import Tier
from testbed.errors import ConfigError
from testbed.topology import Topology
from testbed.transport import Message
from testbed.workload import ROLES, WORKLOADS, StepResult, Workload, require_tiers
from workloads.early_exit.model import (
    N_BLOCKS,
    ExitConfig,
    TrainConfig,
    config_from_dict,
    exit_decision,
    load_dataset,
    normalized_entropy,
    pack_split,
    save_part,
    softmax,
    train,
)
from workloads.split import decode, encode

# Seed 003's own figures (CIFAR-10, T = 0.3, Docker containers on one host), quoted where the text gives them.
PAPER: dict[str, dict[str, float]] = {
    "SEM-1": {"edge_acc": 87.20, "cloud_acc": 88.51},
    "SEM-2": {"cloud_acc": 86.13, "train_edge_acc": 72.65},
    "SEM-3": {"overall_acc": 86.04, "train_edge_acc": 77.76},
    "SEM-5": {"overall_latency_ms": 3.795},
    "SEM-6": {"train_edge_acc": 88.92},
    "SEM-7": {"train_edge_acc": 90.98, "train_cloud_acc": 92.10},
    "SEM-8": {"edge_acc": 95.24, "cloud_acc": 58.07, "overall_acc": 92.04, "cloud_samples": 861},
    "MEM-2": {"overall_acc": 84.31, "train_edge_acc": 64.59},
    "MEM-3": {"overall_latency_ms": 4.82},
    "MEM-4": {"train_edge_acc": 76.06},
    "MEM-5": {"overall_latency_ms": 4.886},
    "MEM-8": {"overall_acc": 86.10},
}


@ROLES.register("exit")
class ExitRole:
    """Test node: sends batches and collects answers. Edge: exit or pass on. Cloud: finish."""

    def __init__(self, rt: Any, params: dict[str, Any]) -> None:
        self.cloud_results: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        self.cond = threading.Condition()

    # edge and cloud ---------------------------------------------------------------------------------
    def on_message(self, rt: Any, msg: Message) -> tuple[str, np.ndarray | None, dict[str, Any]] | None:
        m = msg.meta
        rid = int(m.get("request_id", -1))
        if msg.kind == "exit_batch":
            assert msg.array is not None
            preds, decision, ent = self._lower(rt, msg.array, m, rid, msg.src)
            return "exit_local", np.stack([preds, decision]).astype(np.int64), {"entropy": ent}
        if msg.kind == "exit_rest":  # cloud: finish the samples the edge passed on
            assert msg.array is not None
            logits = rt.compute(m["key"], decode(msg.array, m), rid)
            rt.endpoint.send(m["reply_to"], "exit_cloud", logits, {
                "role": "exit", "batch": m["batch"], "idx": m["idx"], "request_id": rid, "phase": m.get("phase", "")})
            return None
        if msg.kind == "exit_cloud":  # test node: the cloud's answer
            assert msg.array is not None
            with self.cond:
                self.cloud_results[int(m["batch"])] = (msg.release_ns, np.asarray(m["idx"]), msg.array)
                self.cond.notify_all()
            return None
        raise RuntimeError(f"exit role: unexpected message {msg.kind!r}")

    def _lower(self, rt: Any, x: np.ndarray, m: dict[str, Any], rid: int,
               reply_to: str) -> tuple[np.ndarray, np.ndarray, list[float | None]]:
        """The lower node's part (the edge, or the device itself for Edgent's device-edge pair):
        ``mode`` exit (head + entropy decision), local (everything exits here) or forward (no head).
        Samples that go on are sent to the upper node, which answers ``reply_to``."""
        n = x.shape[0]
        mode, cut = str(m["mode"]), int(m["cut"])
        out = rt.compute(m["key"], x, rid) if cut > 0 else x
        logits: np.ndarray | None = None
        feats: np.ndarray | None = None
        if mode == "exit":
            logits, feats = pack_split(out, config_from_dict(m["cfg"]), cut)
            decision = exit_decision(logits, float(m["threshold"]), m.get("drop"))
        elif mode == "local":
            logits, decision = out, np.zeros(n, dtype=np.int64)
        else:
            feats, decision = out, np.ones(n, dtype=np.int64)
        up = np.flatnonzero(decision == 1)
        if len(up):
            assert feats is not None
            payload, codec = encode(np.ascontiguousarray(feats[up]), str(m.get("compression", "none")))
            rt.endpoint.send(m["cloud"], "exit_rest", payload, dict(
                codec, role="exit", key=m["cloud_key"], batch=m["batch"], idx=up.tolist(), reply_to=reply_to,
                request_id=rid, phase=m.get("phase", rt.phase)))
        if logits is None:
            return np.full(n, -1), decision, [None] * n
        return logits.argmax(axis=1), decision, normalized_entropy(softmax(logits)).tolist()

    # test node ----------------------------------------------------------------------------------------
    def run(self, rt: Any, edge: str, cloud: str, x: np.ndarray, y: np.ndarray, batch_size: int,
            deploy: dict[str, Any], first_batch: int, label: str, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        """Send the test set in batches; returns one row per sample."""
        rows: list[dict[str, Any]] = []
        for b0 in range(0, len(y), batch_size):
            batch = first_batch + b0 // batch_size
            xb, yb = x[b0:b0 + batch_size], y[b0:b0 + batch_size]
            t0 = clock.now_ns()
            meta = dict(deploy, role="exit", batch=batch, cloud=cloud)
            if edge == rt.name:  # this node is the lower one (a device running its own part)
                p, decision, ent = self._lower(rt, xb, meta, batch, rt.name)
                preds, t_edge = np.asarray(p).copy(), clock.now_ns()
            else:
                reply = rt.request(edge, "exit_batch", xb, meta, batch, timeout=timeout_s)
                t_edge = reply.release_ns
                assert reply.array is not None
                preds, decision = reply.array[0].copy(), reply.array[1]
                ent = reply.meta.get("entropy", [None] * len(yb))
            t_cloud = t_edge
            if (decision == 1).any():
                with self.cond:
                    if not self.cond.wait_for(partial(operator.contains, self.cloud_results, batch),
                                              clock.wall(timeout_s)):
                        raise TimeoutError(f"batch {batch}: no answer from the cloud in {timeout_s} s")
                    t_cloud, idx, logits = self.cloud_results.pop(batch)
                preds[idx] = logits.argmax(axis=1)
            rt.span("request", t0, max(t_edge, t_cloud), request_id=batch, samples=len(yb), config=label,
                    local=int((decision == 0).sum()), cloud=int((decision == 1).sum()),
                    dropped=int((decision == 2).sum()))
            for i in range(len(yb)):
                where = ("edge", "cloud", "dropped")[int(decision[i])]
                end_ns = t_edge if where != "cloud" else t_cloud
                e_i = ent[i]
                rows.append({"batch": batch, "label": int(yb[i]), "pred": int(preds[i]), "where": where,
                             "latency_ms": (end_ns - t0) / 1e6, "entropy": float("nan") if e_i is None else e_i})
        return rows


class EdgentSpec(BaseModel):
    """Edgent-style right-sizing: the most accurate (exit, cut) whose predicted latency meets the target."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    latency_target_ms: PositiveFloat
    pair: Literal["device-edge", "edge-cloud"] = "device-edge"  # Edgent's own setting is device-edge
    batches: PositiveInt = 6
    change_after_batches: int | None = Field(None, ge=1)  # the edge-cloud link changes here
    uplink_mbit: PositiveFloat | None = None  # ... to this rate (both directions)


class ExitParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    dataset: Literal["digits", "cifar10"] = "digits"
    data_dir: str | None = None
    variants: list[str] = Field(default_factory=lambda: [f"sem{k}" for k in range(1, 9)] + ["mem"], min_length=1)
    mem_exits: list[int] = Field(default_factory=lambda: list(range(1, 9)))
    thresholds: list[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5, 0.8], min_length=1)
    drop_threshold: float | None = 0.9  # also run every SEM/MEM exit at drop_at with this drop threshold
    drop_at: float = 0.3
    raw_offload: bool = True
    batch_size: PositiveInt = 32
    test_samples: PositiveInt | None = None
    widths: list[PositiveInt] = Field(default_factory=lambda: [16, 16, 16, 32, 32, 32, 64, 64, 64])
    epochs: PositiveInt = 30
    lr: PositiveFloat = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    train_batch_size: PositiveInt = 32
    loss_weights: list[float] | None = None
    max_train_samples: PositiveInt | None = None
    compression: Literal["none", "fp16", "int8"] = "none"
    edgent: EdgentSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> ExitParams:
        for v in self.variants:
            if v != "mem" and not (v.startswith("sem") and v[3:].isdigit() and 1 <= int(v[3:]) <= 8):
                raise ValueError(f"unknown variant {v!r}: use sem1..sem8 or mem")
        if any(not 1 <= k <= 8 for k in self.mem_exits):
            raise ValueError("mem_exits must lie in 1..8")
        if len(self.widths) != N_BLOCKS:
            raise ValueError(f"widths needs {N_BLOCKS} entries, one per block")
        if any(not 0 < t <= 1 for t in self.thresholds):
            raise ValueError("thresholds are normalized entropies in (0, 1]")
        return self


@WORKLOADS.register("early_exit")
class EarlyExit(Workload):
    Params = ExitParams

    @property
    def p(self) -> ExitParams:
        assert isinstance(self.params, ExitParams)
        return self.params

    @classmethod
    def check(cls, params: BaseModel, topology: Topology, source: str) -> None:
        require_tiers(topology, source, "early exit (a test node, an edge, a cloud)")
        assert isinstance(params, ExitParams)
        if params.dataset == "cifar10" and not params.data_dir:
            raise ConfigError("cifar10 needs a local copy", file=source, path="workload.params.data_dir",
                              fix="set data_dir to the folder holding CIFAR-10's binary version "
                                  "(data_batch_1..5.bin, test_batch.bin)")

    def node_models(self, topology: Topology) -> dict[str, str | None]:
        # caps are fitted on resnet18 (published figures for most classes); one CPU quota serves any model
        t, e, c = self._nodes(topology)
        return {t: "resnet18", e: "resnet18", c: "resnet18"}

    @staticmethod
    def _nodes(topo: Topology) -> tuple[str, str, str]:
        t = topo.by_tier(Tier.DEVICE)[0]
        e = topo.nearest(t, Tier.EDGE)
        return t, e, topo.nearest(e, Tier.CLOUD)

    # -- setup: data, training, deployment -------------------------------------------------------------
    def setup(self, tb: Any) -> None:
        self.test, self.edge, self.cloud = self._nodes(tb.topology)
        self.data = load_dataset(self.p.dataset, self.p.data_dir, self.seed)
        n = self.p.test_samples or len(self.data.y_test)
        self.x, self.y = self.data.x_test[:n], self.data.y_test[:n]
        shape = self.data.x_train.shape[1:]
        tc = TrainConfig(self.p.epochs, self.p.lr, self.p.momentum, self.p.weight_decay, self.p.train_batch_size,
                         tuple(self.p.loss_weights) if self.p.loss_weights else None, self.p.max_train_samples)
        self.ckpt: dict[str, Path] = {}
        self.train_rows: list[dict[str, Any]] = []
        for v in dict.fromkeys([*self.p.variants, *(["mem"] if self.p.edgent or self.p.raw_offload else [])]):
            exits = tuple(self.p.mem_exits) if v == "mem" else (int(v[3:]),)
            cfg = ExitConfig(shape[0], shape[1], 10, tuple(self.p.widths), tuple(sorted(set(exits))))
            path, rec = train(cfg, self.data, tc, self.seed)
            self.ckpt[v] = path
            self.train_rows += [{"variant": v, "exit": k, "test_accuracy": a, "cached": rec["cached"],
                                 "epochs": rec["epochs"]} for k, a in rec["test_accuracy"].items()]
            self.cfg_of = cfg
        for n_ in (self.test, self.edge, self.cloud):
            tb.add_role(n_, "exit", {})
        self.configs: list[dict[str, Any]] = []
        for v in self.p.variants:
            for k in (self.p.mem_exits if v == "mem" else [int(v[3:])]):
                name = f"{'MEM' if v == 'mem' else 'SEM'}-{k}"
                for t in self.p.thresholds:
                    self.configs.append({"variant": v, "model": name, "exit": k, "threshold": t, "drop": None})
                if self.p.drop_threshold is not None:
                    self.configs.append({"variant": v, "model": name, "exit": k, "threshold": self.p.drop_at,
                                         "drop": self.p.drop_threshold})
        if self.p.raw_offload:
            self.configs.append({"variant": "mem", "model": "raw offload", "exit": 0, "threshold": 0.0, "drop": None})
        self.deployed: set[tuple[str, str, str, str]] = set()
        self.sample_rows: list[dict[str, Any]] = []
        self.edgent_rows: list[dict[str, Any]] = []
        self.i = 0

    def _deploy(self, tb: Any, variant: str, cut: int, exit_k: int, mode: str, lower: str,
                upper: str) -> tuple[str, str]:
        """Load the edge part (blocks [0, cut), with head ``exit_k`` unless forwarding) and the cloud part
        (blocks [cut, end) and its head: the cloud exit, or ``exit_k`` for an Edgent right-sized model)."""
        ckpt = self.ckpt[variant]
        edge_head = None if mode == "forward" else exit_k
        cloud_end = exit_k if mode == "forward" and exit_k else N_BLOCKS
        ek, ck = f"{variant}/lower/{cut}/{edge_head}/{mode}", f"{variant}/upper/{cut}/{cloud_end}"
        if (lower, ek, upper, ck) not in self.deployed:
            if cut > 0:
                tb.load_model(lower, ek, "exit_part", str(save_part(ckpt, 0, cut, edge_head, mode == "exit")))
            if mode != "local":
                tb.load_model(upper, ck, "exit_part", str(save_part(ckpt, cut, cloud_end, cloud_end)))
            self.deployed.add((lower, ek, upper, ck))
        return ek, ck

    def _run(self, tb: Any, variant: str, cut: int, exit_k: int, mode: str, threshold: float, drop: float | None,
             label: str, x: np.ndarray, y: np.ndarray, first_batch: int,
             pair: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        from dataclasses import asdict

        lower, upper = pair or (self.edge, self.cloud)
        ek, ck = self._deploy(tb, variant, cut, exit_k, mode, lower, upper)
        deploy = {"key": ek, "cloud_key": ck, "cut": cut, "mode": mode, "threshold": threshold, "drop": drop,
                  "cfg": asdict(self.cfg_of), "compression": self.p.compression}
        rows: list[dict[str, Any]] = tb.call(self.test, "exit", "run", timeout=3600, edge=lower, cloud=upper,
                                             x=x, y=y, batch_size=self.p.batch_size, deploy=deploy,
                                             first_batch=first_batch, label=label)
        return rows

    def total_steps(self) -> int:
        return len(self.configs) + (1 if self.p.edgent else 0)

    def step(self, tb: Any) -> StepResult:
        if self.i < len(self.configs):
            c = self.configs[self.i]
            label = f"{c['model']} T={c['threshold']}" + (f" drop={c['drop']}" if c["drop"] is not None else "")
            tb.set_phase(label)
            # SEM/MEM: the edge runs blocks up to the exit; raw offload: nothing on the edge
            mode = "forward" if c["exit"] == 0 else "exit"
            rows = self._run(tb, c["variant"], c["exit"], c["exit"], mode, c["threshold"], c["drop"], label, self.x,
                             self.y, self.i * 100_000)
            self.sample_rows += [dict(r, config=label, model=c["model"], variant=c["variant"], exit=c["exit"],
                                      threshold=c["threshold"], drop=c["drop"]) for r in rows]
        else:
            self._edgent(tb)
        self.i += 1
        return StepResult(progress=1, done=self.i >= self.total_steps(), info={"label": f"config {self.i}"})

    # -- Edgent -----------------------------------------------------------------------------------------
    def _edgent(self, tb: Any) -> None:
        """Right-size and cut the MEM under a latency target; re-choose when the edge-cloud link changes."""
        spec = self.p.edgent
        assert spec is not None
        lower, upper = (self.test, self.edge) if spec.pair == "device-edge" else (self.edge, self.cloud)
        prof = self._edgent_profile(tb, lower, upper)
        bs = self.p.batch_size
        link_i = tb.topology.path(lower, upper).hops[0].link.index
        for b in range(spec.batches):
            if spec.change_after_batches is not None and b == spec.change_after_batches and spec.uplink_mbit:
                lk = tb.topology.links[link_i]
                tb.set_link(link_i, lk.up.model_copy(update={"rate_mbit": spec.uplink_mbit}),
                            lk.down.model_copy(update={"rate_mbit": spec.uplink_mbit}))
            path = tb.topology.path(lower, upper)
            choice = edgent_choose(prof, path.rate_mbit, 2 * path.delay_ms, spec.latency_target_ms,
                                   prof["access_ms"])
            label = f"edgent exit {choice['exit']} cut {choice['cut']}"
            tb.set_phase("edgent")
            sl = slice((b * bs) % len(self.y), (b * bs) % len(self.y) + bs)
            mode = "local" if choice["cut"] == choice["exit"] else "forward"
            rows = self._run(tb, "mem", choice["cut"], choice["exit"], mode, 1.0, None, label, self.x[sl], self.y[sl],
                             10_000_000 + b, (lower, upper))
            lat = max(r["latency_ms"] for r in rows)
            self.edgent_rows.append({"batch": b, "pair": spec.pair, "uplink_mbit": path.rate_mbit, **choice,
                                     "measured_ms": lat, "met_target": lat <= spec.latency_target_ms,
                                     "accuracy": float(np.mean([r["pred"] == r["label"] for r in rows]))})

    def _edgent_profile(self, tb: Any, lower: str, upper: str) -> dict[str, Any]:
        """Batch ms on the lower node of blocks [0, c) (with head e when c = e) and on the upper node of
        [c, e) + head e, for every exit e of the MEM (and the cloud exit) and cut c, through the call path."""
        import ray

        exits = [*self.p.mem_exits, N_BLOCKS]
        acc = {int(r["exit"].split("_")[1]): r["test_accuracy"] for r in self.train_rows if r["variant"] == "mem"}
        x = self.x[:self.p.batch_size]
        ms: dict[tuple[str, int, int], float] = {}

        def timed(node: str, key: str, path: Path, inp: np.ndarray) -> float:
            actor = tb.compute_actor(node)
            ray.get(actor.load.remote(key, "exit_part", self.seed, str(path)))
            st = [ray.get(actor.forward.remote(node, key, inp, clock.now_ns()))[1] for _ in range(4)][1:]
            return float(np.median([(s["end_ns"] - s["start_ns"]) / 1e6 for s in st]))

        ckpt = self.ckpt["mem"]
        for e in exits:
            for c in range(0, e + 1):
                if c > 0:
                    head = e if c == e else None
                    ms[("edge", e, c)] = timed(lower, f"prof/edge/{c}/{head}", save_part(ckpt, 0, c, head), x)
                if c < e:
                    feats = x if c == 0 else np.zeros((len(x), *self.cfg_of.feature_shape(c)), np.float32)
                    ms[("cloud", e, c)] = timed(upper, f"prof/cloud/{c}/{e}", save_part(ckpt, c, e, e), feats)
        bytes_at = {c: int(np.prod(self.cfg_of.feature_shape(c))) * (4 if c else 1) * len(x) for c in range(N_BLOCKS)}
        # the test node's leg to the lower node (none when the test node is the lower node)
        access_ms = 0.0
        if lower != self.test:
            acc_path = tb.topology.path(self.test, lower)
            access_ms = bytes_at[0] * 8 / (acc_path.rate_mbit * 1e3) + 2 * acc_path.delay_ms
        self.edgent_profile = [{"side": k[0], "exit": k[1], "cut": k[2], "ms": v} for k, v in ms.items()]
        return {"ms": ms, "exits": exits, "accuracy": acc, "bytes_at": bytes_at, "access_ms": access_ms}

    # -- results ------------------------------------------------------------------------------------------
    def artifacts(self) -> dict[str, pd.DataFrame]:
        return {"exit_samples": pd.DataFrame(self.sample_rows), "exit_training": pd.DataFrame(self.train_rows),
                "edgent": pd.DataFrame(self.edgent_rows),
                "edgent_profile": pd.DataFrame(getattr(self, "edgent_profile", []))}

    def findings(self, summary: pd.DataFrame) -> pd.DataFrame:
        from workloads.early_exit.report import findings

        return findings(summary)

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        df = summarize_samples(pd.DataFrame(self.sample_rows))
        if df.empty:
            return df
        if not spans.empty:
            tr = spans[(spans.kind == "transfer") & (spans.src == self.edge) & (spans.dst == self.cloud)]
            df["bytes_up_to_cloud"] = df.config.map(tr.groupby("phase")["bytes"].sum()).fillna(0).astype(int)
        return df

    @classmethod
    def figures(cls, run: Any) -> list[tuple[str, Any]]:
        from workloads.early_exit.report import figures

        return figures(run)


def edgent_choose(prof: dict[str, Any], rate_mbit: float, rtt_ms: float, target_ms: float,
                  access_ms: float = 0.0) -> dict[str, Any]:
    """The most accurate exit and its fastest cut whose predicted batch latency meets the target
    (Edgent's rule); when none does, the fastest (exit, cut) overall."""
    cands = []
    for e in prof["exits"]:
        for c in range(0, e + 1):
            edge = prof["ms"].get(("edge", e, c), 0.0)
            if c == e:
                t = edge
            else:
                t = edge + prof["ms"][("cloud", e, c)] + prof["bytes_at"][c] * 8 / (rate_mbit * 1e3) + rtt_ms
            cands.append({"exit": e, "cut": c, "predicted_ms": t + access_ms,
                          "exit_accuracy": prof["accuracy"].get(e, 0.0)})
    ok = [c for c in cands if c["predicted_ms"] <= target_ms]
    if ok:
        return max(ok, key=lambda c: (c["exit_accuracy"], -c["predicted_ms"]))
    return min(cands, key=lambda c: c["predicted_ms"])


def summarize_samples(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: local exits, three accuracies, three latencies, the paper's figures."""
    if df.empty:
        return df
    rows = []
    for (label, model, exit_k, t, drop), g in df.groupby(["config", "model", "exit", "threshold", "drop"],
                                                         dropna=False, sort=False):
        ok = g.pred == g.label
        where = g["where"]
        edge, cloud, dropped = g[where == "edge"], g[where == "cloud"], g[where == "dropped"]
        r: dict[str, Any] = {
            "config": label, "model": model, "exit": exit_k, "threshold": t, "drop_threshold": drop,
            "samples": len(g), "local_exits": len(edge), "cloud_exits": len(cloud), "dropped": len(dropped),
            "edge_acc": 100 * float(ok[edge.index].mean()) if len(edge) else np.nan,
            "cloud_acc": 100 * float(ok[cloud.index].mean()) if len(cloud) else np.nan,
            "overall_acc": 100 * float(ok[where != "dropped"].mean()) if len(g) > len(dropped) else np.nan,
            "edge_latency_ms": float(edge.latency_ms.mean()) if len(edge) else np.nan,
            "cloud_latency_ms": float(cloud.latency_ms.mean()) if len(cloud) else np.nan,
            "overall_latency_ms": float(g.latency_ms.mean()),
            "overall_p50_ms": float(g.latency_ms.median()), "overall_p95_ms": float(g.latency_ms.quantile(0.95)),
        }
        if t == 0.3 and pd.isna(drop):
            r.update({f"paper_{k}": v for k, v in PAPER.get(str(model), {}).items()})
        rows.append(r)
    return pd.DataFrame(rows)
