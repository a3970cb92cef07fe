"""Federated learning on emulated devices: flat and hierarchical rounds over the shaped links.

Clients are device nodes (device pools for scale). Each holds its shard in its own compute process and
trains there, under its hardware class's caps. A round: the aggregator sends the global weights to the
selected members over the links; each client trains and sends back its (optionally compressed) update;
the aggregator combines what arrived before the round's timeout. Hierarchically, the cloud's members are
edge nodes, each of which runs ``edge_period`` rounds with its own clients and returns its model's delta.

Variants (algorithm, compression, split, ...) run one after another from the same initial weights, so one
experiment compares them side by side.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

from testbed import clock
from testbed.config.models import Tier
from testbed.errors import ConfigError
from testbed.topology import Topology
from testbed.transport import Message
from testbed.workload import MODELS, ROLES, WORKLOADS, StepResult, Workload
from workloads.fl.algo import AGGREGATORS, ClientUpdate, ErrorFeedback, decompress, split

KEY = "fl"


@ROLES.register("fl_client")
class FLClientRole:
    def __init__(self, rt: Any, params: dict[str, Any]) -> None:
        self.n = 0
        self.ef = ErrorFeedback()
        self.drop_rounds: set[tuple[str, int]] = set()
        self.attacks: dict[str, dict[str, Any]] = {}  # variant -> {kind, scale, claim_samples}
        self.wallet: Any = None

    def chain_join(self, rt: Any, cfg: dict[str, Any]) -> str:
        """BlockFL: make this client's wallet and stake its deposit (its own transaction, over its links)."""
        from testbed.chain.client import node_wallet

        self.wallet = node_wallet(rt, cfg)
        self.wallet.transact("register", False, value=int(cfg["deposit_wei"]))
        return str(self.wallet.address)

    def attack_in(self, rt: Any, variant: str, attack: dict[str, Any]) -> None:
        """Misbehave in ``variant``: ``attack`` is the whole ``Attacker`` (kind, scale, claim_samples, from_round),
        sent as one record so that no option is dropped on the way."""
        self.attacks[variant] = dict(attack)

    def load_data(self, rt: Any, x: np.ndarray, labels: list[int]) -> int:
        rt.compute(KEY, x, -1, method="set_data", kwargs={"client": rt.name, "labels": labels})
        self.n = len(labels)
        self.ef = ErrorFeedback()
        return self.n

    def drop_in(self, rt: Any, variant: str, rounds: list[int]) -> None:
        self.drop_rounds |= {(variant, r) for r in rounds}

    def on_message(self, rt: Any, msg: Message) -> tuple[str, np.ndarray | None, dict[str, Any]] | None:
        assert msg.array is not None
        c = msg.meta["cfg"]
        rnd = int(msg.meta["round"])
        if (c["variant"], rnd) in self.drop_rounds:
            rt.span("dropout", clock.now_ns(), clock.now_ns(), request_id=rnd)
            return None  # gone mid-round: no answer, the aggregator times out on us
        delta = rt.compute(KEY, msg.array, rnd, method="local_train", kwargs={
            "client": rt.name, "epochs": c["local_epochs"], "lr": c["lr"], "batch": c["batch"], "mu": c["mu"],
            "mode": c["mode"], "seed": int(c["seed"]) * 100_003 + rnd})
        delta = np.asarray(delta, np.float32)
        n = self.n
        attack = self.attacks.get(c["variant"])
        if attack is not None and rnd >= int(attack["from_round"]):
            rt.span("attack", clock.now_ns(), clock.now_ns(), request_id=rnd, attack=attack["kind"])
            if attack["kind"] == "poison":  # model poisoning: the update reversed and scaled up
                delta = (-float(attack["scale"]) * delta).astype(np.float32)
            else:  # free rider: no training, a tiny random update, and a claim of many samples
                delta = (rt.rng.standard_normal(delta.shape) * 1e-4).astype(np.float32)
            n = int(attack.get("claim_samples") or n)
        payload, meta = self.ef(delta, c["compression"], c["topk_frac"])
        if c.get("chain"):
            from testbed.chain import keccak
            from testbed.chain.client import Rejected

            assert self.wallet is not None, "chain_join first"
            # record the update's hash and sample count before sending it: only recorded updates count
            try:
                self.wallet.transact("submit", int(c["chain_round"]),
                                     keccak(np.ascontiguousarray(payload).tobytes()), n, request_id=rnd)
            except Rejected as e:  # e.g. slashed below the stake: this client is out
                return "fl_refused", None, {"reason": str(e.receipt.get("reason"))}
        return "fl_update", payload, dict(meta, n=n)


@ROLES.register("fl_server")
class FLServerRole:
    """The cloud (and, hierarchically, every edge): send the model, gather updates, aggregate."""

    def __init__(self, rt: Any, params: dict[str, Any]) -> None:
        self.chain = params.get("chain")  # the ChainActor's handle, on the node hosting the gateway
        self.wallet: Any = None
        self.cfg: dict[str, Any] = {}

    def chain_join(self, rt: Any, cfg: dict[str, Any], validator: bool) -> str:
        """BlockFL: the coordinator's wallet (no deposit), or a validator's, which stakes one."""
        from testbed.chain.client import node_wallet

        self.cfg = cfg
        self.wallet = node_wallet(rt, cfg, self.chain)
        if validator:
            self.wallet.transact("register", True, value=int(cfg["deposit_wei"]))
        return str(self.wallet.address)

    def _chain_filter(self, rt: Any, rnd: int, cfg: dict[str, Any],
                      got: list[tuple[str, Message]]) -> tuple[list[ClientUpdate], dict[str, Any]]:
        """BlockFL: the validators screen the round's updates and vote on chain; keep only the updates
        recorded on chain (same client, same hash) that the majority accepted, weighted by the recorded
        sample counts."""
        from testbed.chain import keccak

        r = int(cfg["chain_round"])
        names = [m for m, _ in got]
        stacked = np.stack([decompress(rep.array, rep.meta).astype(np.float32) for _, rep in got
                            if rep.array is not None]) if got else None
        hashes = {m: keccak(np.ascontiguousarray(rep.array).tobytes()) for m, rep in got}
        meta = {"role": "fl_server", "cfg": cfg, "round": rnd, "clients": names}

        def ask(v: str) -> dict[str, Any]:
            rep = rt.request(v, "fl_validate", stacked, meta, rnd, timeout=float(cfg["round_timeout_s"]) * 4)
            return dict(rep.meta)

        t0 = clock.now_ns()
        with ThreadPoolExecutor(max(1, len(cfg["validators"]))) as pool:
            list(pool.map(ask, cfg["validators"]))
        mask = int(self.wallet.view("verdict", r, request_id=rnd))
        n_subs = int(self.wallet.view("n_subs", r, request_id=rnd))
        addr_of = cfg["directory"]
        updates, accepted, rejected = [], [], []
        recorded: dict[tuple[str, bytes], tuple[int, int]] = {}
        for i in range(n_subs):
            client, h, samples = self.wallet.view("subs", r, i, request_id=rnd)
            recorded[(str(client).lower(), bytes(h))] = (i, int(samples))
        for (m, _rep), row in zip(got, stacked if stacked is not None else [], strict=True):
            hit = recorded.get((addr_of[m].lower(), hashes[m]))
            if hit is not None and mask >> hit[0] & 1:
                updates.append(ClientUpdate(m, row, hit[1]))
                accepted.append(m)
            else:
                rejected.append(m)
        rt.span("chain_validate", t0, clock.now_ns(), request_id=rnd, accepted=len(accepted),
                rejected=len(rejected))
        return updates, {"accepted": accepted, "rejected": rejected, "n_recorded": n_subs}

    def _validate(self, rt: Any, msg: Message) -> tuple[str, None, dict[str, Any]]:
        """A validator: match the updates to what is recorded on chain (it hashes the bytes itself: BlockFL
        runs uncompressed), screen them against the round's coordinate-wise median (cosine and norm
        ratio), and vote."""
        from testbed.chain import keccak

        cfg = msg.meta["cfg"]
        r = int(cfg["chain_round"])
        assert msg.array is not None and self.wallet is not None
        ups = {m: msg.array[i] for i, m in enumerate(msg.meta["clients"])}
        med = np.median(np.stack(list(ups.values())), axis=0)
        med_norm = float(np.linalg.norm(med)) or 1e-12
        n_subs = int(self.wallet.view("n_subs", r, request_id=int(msg.meta["round"])))
        addr_to_node = {a.lower(): n for n, a in cfg["directory"].items()}
        mask, scores = 0, {}
        for i in range(n_subs):
            client, h, _ = self.wallet.view("subs", r, i, request_id=int(msg.meta["round"]))
            m = addr_to_node.get(str(client).lower())
            u = ups.get(m) if m is not None else None
            if u is None or keccak(np.ascontiguousarray(u, np.float32).tobytes()) != bytes(h):
                continue  # recorded, but what reached the aggregator is not what was recorded
            norm = float(np.linalg.norm(u))
            cos = float(u @ med) / ((norm or 1e-12) * med_norm)
            ratio = norm / med_norm
            scores[m] = {"cos": cos, "ratio": ratio}
            if cos >= float(cfg["cos_min"]) and float(cfg["ratio_min"]) <= ratio <= float(cfg["ratio_max"]):
                mask |= 1 << i
        self.wallet.transact("vote", r, mask, request_id=int(msg.meta["round"]))
        return "fl_verdict", None, {"mask": mask, "scores": scores}

    def run_round(self, rt: Any, members: list[str], w: np.ndarray, cfg: dict[str, Any], rnd: int,
                  children: dict[str, list[str]] | None = None) -> dict[str, Any]:
        # edges return model deltas whatever their clients computed: the cloud averages them (FedAvg), or
        # trims them when the run asks for robustness
        name = cfg["algorithm"] if not children or cfg["algorithm"] == "trimmed_mean" else "fedavg"
        agg = AGGREGATORS.get(name)(**(cfg.get("agg_params", {}) if name == cfg["algorithm"] else {}))
        sent0 = sum(rt.endpoint.sent_bytes.values())
        kind = "fl_edge" if children else "fl_train"
        t0 = clock.now_ns()

        def one(m: str) -> tuple[str, Message | None, float]:
            s = clock.now_ns()
            meta: dict[str, Any] = {"role": "fl_server" if children else "fl_client", "cfg": cfg, "round": rnd}
            if children:
                meta["members"] = children[m]
            # an edge's own rounds wait out their clients' timeouts first
            timeout = float(cfg["round_timeout_s"]) * ((int(cfg["edge_period"]) + 1) if children else 1)
            try:
                reply = rt.request(m, kind, w, meta, rnd, timeout=timeout)
            except Exception:  # a timeout or a failed member: the round goes on without it
                return m, None, (clock.now_ns() - s) / 1e6
            return m, reply, (clock.now_ns() - s) / 1e6

        with ThreadPoolExecutor(max(1, min(64, len(members)))) as pool:
            results = list(pool.map(one, members))
        updates, failed, up_bytes, times = [], [], 0, {}
        contributors: list[str] = []
        got: list[tuple[str, Message]] = []
        for m, reply, ms in results:
            times[m] = ms
            if reply is None or reply.array is None:
                failed.append(m)
                continue
            up_bytes += reply.payload_bytes
            got.append((m, reply))
            updates.append(ClientUpdate(m, decompress(reply.array, reply.meta), int(reply.meta["n"])))
            contributors += reply.meta.get("contributors", [m])
        chain_info: dict[str, Any] = {}
        if cfg.get("chain"):
            updates, chain_info = self._chain_filter(rt, rnd, cfg, got)
            contributors = chain_info["accepted"]
        new_w = agg.aggregate(w, updates) if updates else w
        if cfg.get("chain"):
            from testbed.chain import keccak

            self.wallet.transact("close_round", int(cfg["chain_round"]),
                                 keccak(np.ascontiguousarray(new_w, np.float32).tobytes()), request_id=rnd)
        t1 = clock.now_ns()
        rt.span("round", t0, t1, request_id=rnd, members=len(members), failed=len(failed))
        return {"w": new_w, "contributors": contributors, "chain": chain_info,
                "failed": failed + [f for _, r, _ in results if r is not None for f in r.meta.get("failed", [])],
                "up_bytes": up_bytes + sum(int(r.meta.get("up_bytes", 0)) for _, r, _ in results if r is not None),
                "down_bytes": sum(rt.endpoint.sent_bytes.values()) - sent0
                + sum(int(r.meta.get("down_bytes", 0)) for _, r, _ in results if r is not None),
                "n": sum(u.n_samples for u in updates), "times_ms": times}

    def run_async(self, rt: Any, members: list[str], w: np.ndarray, cfg: dict[str, Any], rnd: int,
                  n_updates: int) -> dict[str, Any]:
        """Asynchronous FedAvg (FedAsync): every member trains on the model it was sent; as each result
        arrives, the global model moves towards it by alpha / (1 + staleness)^a (staleness: global versions
        since the member's copy), and the member gets the new model at once. Stops after ``n_updates``."""
        import threading

        lock = threading.Lock()
        state: dict[str, Any] = {"w": w.astype(np.float32).copy(), "version": 0, "applied": 0, "up": 0}
        staleness: list[int] = []
        contributors: list[str] = []
        failed: list[str] = []
        alpha, expo = float(cfg.get("async_alpha", 0.6)), float(cfg.get("staleness_exp", 0.5))
        sent0 = sum(rt.endpoint.sent_bytes.values())
        t0 = clock.now_ns()
        meta: dict[str, Any] = {"role": "fl_client", "cfg": cfg, "round": rnd}

        def worker(m: str) -> None:
            while True:
                with lock:
                    if state["applied"] >= n_updates:
                        return
                    w_now, v = state["w"].copy(), state["version"]
                try:
                    reply = rt.request(m, "fl_train", w_now, meta, rnd, timeout=float(cfg["round_timeout_s"]))
                except Exception:
                    failed.append(m)
                    return
                if reply.array is None:
                    failed.append(m)
                    return
                delta = decompress(reply.array, reply.meta)
                with lock:
                    if state["applied"] >= n_updates:
                        return  # the target count was reached while this one trained: not applied
                    stale = state["version"] - v
                    # FedAsync (Xie et al.): mix the client's model, built on version v, into the current one
                    mix = alpha / (1 + stale) ** expo
                    state["w"] = ((1 - mix) * state["w"] + mix * (w_now + delta)).astype(np.float32)
                    state["version"] += 1
                    state["applied"] += 1
                    state["up"] += reply.payload_bytes
                    staleness.append(stale)
                    contributors.append(m)

        threads = [threading.Thread(target=worker, args=(m,), daemon=True) for m in members]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rt.span("round", t0, clock.now_ns(), request_id=rnd, members=len(members), failed=len(failed))
        return {"w": state["w"], "contributors": sorted(set(contributors)), "failed": failed, "up_bytes": state["up"],
                "down_bytes": sum(rt.endpoint.sent_bytes.values()) - sent0, "n": len(contributors), "times_ms": {},
                "staleness_mean": float(np.mean(staleness)) if staleness else 0.0,
                "staleness_max": int(max(staleness)) if staleness else 0, "updates": len(staleness)}

    def on_message(self, rt: Any, msg: Message) -> tuple[str, np.ndarray | None, dict[str, Any]]:
        """An edge's part of a hierarchical round: ``edge_period`` rounds with its clients, then its delta
        (or, under BlockFL, a validator's screening of the round's updates)."""
        if msg.kind == "fl_validate":
            return self._validate(rt, msg)
        assert msg.array is not None
        cfg, rnd = msg.meta["cfg"], int(msg.meta["round"])
        w0 = msg.array.astype(np.float32)
        w = w0
        inner = dict(cfg, algorithm=cfg.get("edge_algorithm", cfg["algorithm"]))
        contributors: list[str] = []
        failed: list[str] = []
        up = down = n = 0
        for _ in range(int(cfg["edge_period"])):
            res = self.run_round(rt, list(msg.meta["members"]), w, inner, rnd)
            w = res["w"]
            contributors = res["contributors"]
            failed += res["failed"]
            up, down, n = up + res["up_bytes"], down + res["down_bytes"], res["n"]
        return "fl_update", (w - w0).astype(np.float32), {"codec": "none", "n": max(n, 1) if contributors else 0,
                                                          "contributors": contributors, "failed": failed,
                                                          "up_bytes": up, "down_bytes": down}


class Attacker(BaseModel):
    """A misbehaving client: ``poison`` sends its update reversed and scaled by ``scale``; ``free_rider``
    trains nothing and sends a tiny random update, claiming ``claim_samples`` samples."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    client: str
    kind: Literal["poison", "free_rider"]
    scale: PositiveFloat = 5.0
    claim_samples: PositiveInt | None = None
    from_round: int = Field(0, ge=0)


class BlockFLSpec(BaseModel):
    """BlockFL's chain: stakes, the reward per round (shared by sample count), validators and their screen."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    url: str | None = None
    block_ms: PositiveFloat | None = None
    deposit_eth: PositiveFloat = 1.0
    slash_eth: float = Field(0.25, ge=0)
    reward_eth: PositiveFloat = 0.1  # paid out per round
    validators: PositiveInt | None = None  # edge nodes that validate; default all
    cos_min: float = Field(0.0, ge=-1, le=1)  # accept an update whose cosine with the median is at least this
    ratio_min: float = Field(0.1, ge=0)  # ... and whose norm is within [ratio_min, ratio_max] x the median's
    ratio_max: PositiveFloat = 10.0

    @field_validator("url")
    @classmethod
    def _local_only(cls, v: str | None) -> str | None:
        from testbed.chain import check_chain_url

        return check_chain_url(v)


class Variant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str | None = None
    algorithm: Literal["fedavg", "fedprox", "fedsgd", "trimmed_mean"] = "fedavg"
    mu: float = Field(0.0, ge=0)  # FedProx's proximal weight (fedprox defaults to 0.01)
    trim: float = Field(0.1, ge=0, lt=0.5)
    server_lr: PositiveFloat | None = None
    local_epochs: PositiveInt = 1
    lr: PositiveFloat = 0.05
    batch: PositiveInt = 10
    fraction: float = Field(1.0, gt=0, le=1)  # clients selected at random each round
    deadline_s: PositiveFloat | None = None  # skip clients whose last round took longer than this
    compression: Literal["none", "topk", "int8"] = "none"
    topk_frac: float = Field(0.1, gt=0, le=1)
    split: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: PositiveFloat = 0.5
    shards_per_client: PositiveInt = 2
    hierarchical: bool | None = None  # None: when the topology has edge nodes
    edge_period: PositiveInt = 1
    rounds: PositiveInt | None = None
    mode: Literal["sync", "async"] = "sync"  # async: updates applied as they arrive (flat, fedavg/fedprox)
    staleness_exp: float = Field(0.5, ge=0)
    async_alpha: float = Field(0.6, gt=0, le=1)
    chain: bool = False  # BlockFL: updates recorded, validated and rewarded on chain (needs params.chain)
    attackers: list[Attacker] = Field(default_factory=list)

    @model_validator(mode="after")
    def _async_needs_deltas(self) -> Variant:
        if self.mode == "async" and (self.algorithm not in ("fedavg", "fedprox") or self.hierarchical):
            raise ValueError("mode: async applies model deltas as they arrive: use fedavg or fedprox, flat")
        if self.chain and (self.mode != "sync" or self.hierarchical or self.compression != "none"):
            raise ValueError("chain: true runs flat, synchronous and uncompressed rounds (validators hash the "
                             "update bytes they check): set hierarchical: false, mode: sync, compression: none")
        return self

    def label(self) -> str:
        if self.name:
            return self.name
        bits: list[str] = [self.algorithm, self.split]
        if self.compression != "none":
            bits.append(self.compression)
        if self.hierarchical:
            bits.append(f"hier{self.edge_period}")
        if self.mode == "async":
            bits.append("async")
        if self.attackers:
            bits.append("+".join(sorted({a.kind for a in self.attackers})))
        if self.chain:
            bits.append("chain")
        return "/".join(bits)


class Dropout(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    round: int = Field(ge=0)
    clients: list[str] | None = None
    fraction: float | None = Field(None, gt=0, le=1)


class FLParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: Literal["fl_mlp", "fl_cnn"] = "fl_mlp"
    dataset: Literal["digits", "cifar10"] = "digits"
    data_dir: str | None = None
    rounds: PositiveInt = 20
    variants: list[Variant] = Field(default_factory=lambda: [Variant.model_validate({})], min_length=1)
    round_timeout_s: PositiveFloat = 30.0
    target_accuracy: float = Field(0.9, gt=0, le=1)
    dropouts: list[Dropout] = Field(default_factory=list)
    chain: BlockFLSpec | None = None


@WORKLOADS.register("federated")
class Federated(Workload):
    Params = FLParams

    @property
    def p(self) -> FLParams:
        assert isinstance(self.params, FLParams)
        return self.params

    @classmethod
    def check(cls, params: BaseModel, topology: Topology, source: str) -> None:
        if not topology.by_tier(Tier.DEVICE) or not topology.by_tier(Tier.CLOUD):
            raise ConfigError("federated learning needs device nodes (clients) and a cloud node (the server)",
                              file=source, path="topology.nodes", fix="add tier: device and tier: cloud nodes")
        assert isinstance(params, FLParams)
        if params.dataset == "cifar10":
            raise ConfigError("the FL models are built for 8x8 digits so far", file=source,
                              path="workload.params.dataset", fix="use dataset: digits")
        clients = topology.by_tier(Tier.DEVICE)
        seen: dict[str, int] = {}
        for i, v in enumerate(params.variants):
            if v.label() in seen:
                # results, dropouts and attackers are keyed by the label: two variants sharing one would mix
                raise ConfigError(f"variants {seen[v.label()]} and {i} are both labelled {v.label()!r}", file=source,
                                  path=f"workload.params.variants[{i}]",
                                  fix=f"give one of them a name: (e.g. name: {v.label()}-{i})")
            seen[v.label()] = i
            hier = v.hierarchical if v.hierarchical is not None else bool(topology.by_tier(Tier.EDGE))
            if v.deadline_s and (hier or v.mode == "async"):
                # the deadline predicts a client's round from its last flat, synchronous one; hierarchical and
                # asynchronous rounds do not time clients one by one, so it would be validated and then ignored
                raise ConfigError("deadline_s applies to flat, synchronous rounds only", file=source,
                                  path=f"workload.params.variants[{i}].deadline_s",
                                  fix="set hierarchical: false and mode: sync, or drop deadline_s")
            if v.chain and params.chain is None:
                raise ConfigError("a variant asks for the chain but no chain is configured", file=source,
                                  path=f"workload.params.variants[{i}].chain", fix="add workload.params.chain: {}")
            if v.chain and not topology.by_tier(Tier.EDGE):
                raise ConfigError("BlockFL's validators are edge nodes and the topology has none", file=source,
                                  path="topology.nodes", fix="add tier: edge nodes")
            for j, a in enumerate(v.attackers):
                if a.client not in clients:
                    raise ConfigError(f"{a.client!r} is not a client (device node)", file=source,
                                      path=f"workload.params.variants[{i}].attackers[{j}].client",
                                      fix=f"one of {', '.join(clients[:8])}")
        if params.chain is not None and params.chain.validators and \
                params.chain.validators > len(topology.by_tier(Tier.EDGE)):
            raise ConfigError(f"{params.chain.validators} validators but only {len(topology.by_tier(Tier.EDGE))} "
                              "edge nodes", file=source, path="workload.params.chain.validators",
                              fix="lower it, or add edge nodes")

    def node_models(self, topology: Topology) -> dict[str, str | None]:
        return {d: self.p.model for d in topology.by_tier(Tier.DEVICE)}

    def setup(self, tb: Any) -> None:
        from workloads.early_exit.model import load_dataset
        from workloads.fl.net import flat, initial

        topo: Topology = tb.topology
        self.clients = topo.by_tier(Tier.DEVICE)
        self.cloud = topo.by_tier(Tier.CLOUD)[0]
        self.edges = topo.by_tier(Tier.EDGE)
        self.edge_of = {c: topo.nearest(c, Tier.EDGE) for c in self.clients} if self.edges else {}
        self.data = load_dataset(self.p.dataset, self.p.data_dir, self.seed)
        md = MODELS.get(self.p.model)
        self.w0 = flat(initial(self.p.model, md.num_classes, self.seed).net)  # as a client's build, unwarmed
        for n in [self.cloud, *self.edges]:
            tb.add_role(n, "fl_server", {})
        tb.load_models(self.clients, KEY, self.p.model)
        for c in self.clients:
            tb.add_role(c, "fl_client", {})
        self.rng = np.random.default_rng(self.seed)
        self.rows: list[dict[str, Any]] = []
        self.client_rows: list[dict[str, Any]] = []
        self.schedule = [(vi, r) for vi, v in enumerate(self.p.variants) for r in range(v.rounds or self.p.rounds)]
        self.split_loaded: tuple[Any, ...] | None = None
        self.last_ms: dict[str, float] = {}
        self.time_rows: list[dict[str, Any]] = []
        self.chain_rows: list[dict[str, Any]] = []
        self.chain_cfg: dict[str, Any] = {}
        if self.p.chain is not None and any(v.chain for v in self.p.variants):
            self._start_chain(tb)
        # the first variant's shards now, so the run's clock (and the scenario's) starts with its first round
        self._load_split(tb, self.p.variants[0])

    def _start_chain(self, tb: Any) -> None:
        """BlockFL: the chain behind the cloud, the contract with the cloud as coordinator, every client and
        validator staked by its own transaction."""
        import ray

        from testbed.chain import address_of, node_key

        c = self.p.chain
        assert c is not None
        eth = 10**18
        self.chain = tb.start_chain(self.cloud, c.url, c.block_ms)
        self.validators = self.edges[: c.validators or len(self.edges)]
        k = len(self.validators)
        self.directory = {n: address_of(node_key(self.seed, n)) for n in [*self.clients, *self.validators, self.cloud]}
        contract = ray.get(self.chain.deploy.remote("blockfl", [
            self.directory[self.cloud], int(c.deposit_eth * eth), int(c.slash_eth * eth), int(c.reward_eth * eth), k],
            int(c.reward_eth * eth * sum(v.rounds or self.p.rounds for v in self.p.variants if v.chain))))
        ray.get(self.chain.fund.remote(list(self.directory.values()), int((c.deposit_eth + 2) * eth)))
        info = ray.get(self.chain.info.remote())
        self.contract = contract
        self.chain_cfg = {"seed": self.seed, "contract": contract, "contract_name": "blockfl",
                          "chain_id": info["chain_id"], "gateway": self.cloud, "deposit_wei": int(c.deposit_eth * eth),
                          "directory": self.directory, "validators": self.validators, "cos_min": c.cos_min,
                          "ratio_min": c.ratio_min, "ratio_max": c.ratio_max}
        # the cloud's fl_server role is re-made with the chain's handle: it reaches the chain without a link
        tb.add_role(self.cloud, "fl_server", {"chain": self.chain})
        tb.call(self.cloud, "fl_server", "chain_join", cfg=self.chain_cfg, validator=False)
        futs = [tb.call_async(v, "fl_server", "chain_join", cfg=self.chain_cfg, validator=True)
                for v in self.validators]
        futs += [tb.call_async(cl, "fl_client", "chain_join", cfg=self.chain_cfg) for cl in self.clients]
        ray.get(futs, timeout=clock.wall(600))
        self.chain_seen = {n: (0.0, 0.0) for n in self.clients}

    def _load_split(self, tb: Any, v: Variant) -> None:
        key = (v.split, v.alpha, v.shards_per_client)
        if self.split_loaded == key:
            return
        parts = split(self.data.y_train, len(self.clients), v.split, np.random.default_rng(self.seed), v.alpha,
                      v.shards_per_client)
        self.n_of = {}
        for c, idx in zip(self.clients, parts, strict=True):
            self.n_of[c] = tb.call(c, "fl_client", "load_data", x=self.data.x_train[idx],
                                   labels=self.data.y_train[idx].tolist())
            self.client_rows.append({"split": v.split, "client": c, "samples": len(idx),
                                     "classes": len(np.unique(self.data.y_train[idx]))})
        self.split_loaded = key

    def total_steps(self) -> int:
        return len(self.schedule)

    def _cfg(self, v: Variant) -> dict[str, Any]:
        agg = AGGREGATORS.get(v.algorithm)
        mu = v.mu if v.mu or v.algorithm != "fedprox" else 0.01
        params: dict[str, Any] = {"trim": v.trim}
        if v.server_lr:
            params["server_lr"] = v.server_lr
        return {"variant": v.label(), "algorithm": v.algorithm, "agg_params": params, "mode": agg.client_mode,
                "local_epochs": v.local_epochs, "lr": v.lr, "batch": v.batch, "mu": mu, "seed": self.seed,
                "compression": v.compression, "topk_frac": v.topk_frac, "edge_period": v.edge_period,
                "round_timeout_s": self.p.round_timeout_s, "staleness_exp": v.staleness_exp,
                "async_alpha": v.async_alpha, "chain": v.chain}

    def step(self, tb: Any) -> StepResult:
        vi, rnd = self.schedule.pop(0)
        v = self.p.variants[vi]
        if rnd == 0:
            self._load_split(tb, v)
            self.w = self.w0.copy()
            self.t_variant = clock.now()  # the variant's time to accuracy is emulated (column wall_s)
            self.bytes_variant = 0
            for d in self.p.dropouts:
                count = max(1, int(len(self.clients) * (d.fraction or 0)))
                gone = d.clients or list(self.rng.choice(self.clients, count, replace=False))
                for c in gone:
                    tb.call(c, "fl_client", "drop_in", variant=v.label(), rounds=[d.round])
            for a in v.attackers:
                tb.call(a.client, "fl_client", "attack_in", variant=v.label(), attack=a.model_dump())
        cfg = self._cfg(v)
        if v.chain:
            cfg.update(self.chain_cfg, chain_round=vi * 100_000 + rnd)
        k = max(1, int(round(len(self.clients) * v.fraction)))
        # clients that have left (scenario churn) do not check in for selection; one that leaves mid-round
        # is timed out by the round (round_timeout_s)
        here = [c for c in self.clients if tb.is_present(c)] or self.clients
        k = min(k, len(here))
        chosen = sorted(self.rng.choice(here, k, replace=False).tolist())
        skipped = [c for c in chosen if v.deadline_s and self.last_ms.get(c, 0.0) > v.deadline_s * 1e3]
        chosen = [c for c in chosen if c not in skipped]
        hier = v.hierarchical if v.hierarchical is not None else bool(self.edges)
        label = v.label()
        tb.set_phase(f"{label}/r{rnd}")
        t0 = clock.now()
        if v.mode == "async":
            # one "round" = as many applied updates as clients selected, so rounds stay comparable
            res = tb.call(self.cloud, "fl_server", "run_async", timeout=3600, members=chosen, w=self.w, cfg=cfg,
                          rnd=rnd, n_updates=len(chosen))
        elif hier and self.edges:
            children: dict[str, list[str]] = {}
            for c in chosen:
                children.setdefault(self.edge_of[c], []).append(c)
            res = tb.call(self.cloud, "fl_server", "run_round", timeout=3600, members=sorted(children), w=self.w,
                          cfg=cfg, rnd=rnd, children=children)
        else:
            res = tb.call(self.cloud, "fl_server", "run_round", timeout=3600, members=chosen, w=self.w, cfg=cfg,
                          rnd=rnd)
            # the deadline predicts a client's round from its last completed one (a dropout says nothing)
            done = set(res["contributors"])
            self.last_ms.update({c: ms for c, ms in res["times_ms"].items() if c in done})
            self.time_rows += [{"variant": v.label(), "round": rnd + 1, "client": c, "ms": ms, "contributed": c in done}
                               for c, ms in res["times_ms"].items()]
        self.w = res["w"]
        if v.chain:
            self._chain_record(v, rnd, res)
        acc, loss = self._evaluate(self.w)
        self.bytes_variant += res["up_bytes"] + res["down_bytes"]
        self.rows.append({"variant": label, "algorithm": v.algorithm, "split": v.split, "compression": v.compression,
                          "hierarchical": hier, "round": rnd + 1, "accuracy": acc, "loss": loss,
                          "round_s": clock.now() - t0, "wall_s": clock.now() - self.t_variant,
                          "up_bytes": res["up_bytes"], "down_bytes": res["down_bytes"],
                          "cum_bytes": self.bytes_variant, "selected": len(chosen), "skipped_deadline": len(skipped),
                          "contributed": len(res["contributors"]), "failed": ",".join(sorted(res["failed"])),
                          "staleness_mean": res.get("staleness_mean", 0.0),
                          "staleness_max": res.get("staleness_max", 0)})
        return StepResult(progress=1, done=not self.schedule, info={"label": f"{label} r{rnd + 1} acc {acc:.3f}"})

    def _chain_record(self, v: Variant, rnd: int, res: dict[str, Any]) -> None:
        """Per client and round: recorded, accepted, reward and slashing (read from the contract)."""
        import ray

        eth = 10**18
        attackers = {a.client: a.kind for a in v.attackers if rnd >= a.from_round}  # honest until from_round
        claims = {a.client: a.claim_samples for a in v.attackers if a.claim_samples and rnd >= a.from_round}
        info = res.get("chain", {})
        for cl in self.clients:
            earned = ray.get(self.chain.view.remote(self.contract, "earned", [self.directory[cl]])) / eth
            slashed = ray.get(self.chain.view.remote(self.contract, "slashed", [self.directory[cl]])) / eth
            e0, s0 = self.chain_seen[cl]
            self.chain_seen[cl] = (earned, slashed)
            self.chain_rows.append({"variant": v.label(), "round": rnd + 1, "client": cl,
                                    "samples": self.n_of.get(cl, 0), "behaviour": attackers.get(cl, "honest"),
                                    "claimed_samples": claims.get(cl, self.n_of.get(cl, 0)),
                                    "refused": cl in res.get("failed", []),
                                    "accepted": cl in info.get("accepted", []),
                                    "rejected": cl in info.get("rejected", []), "reward_eth": earned - e0,
                                    "slashed_eth": slashed - s0})

    def _evaluate(self, w: np.ndarray) -> tuple[float, float]:
        import torch

        from workloads.fl.net import _arch, load_flat

        model = _arch(self.p.model, 10)
        load_flat(model, w)
        with torch.inference_mode():
            x = torch.from_numpy(self.data.x_test).float().div(255).sub(0.5).div(0.5)
            out = model(x)
            y = torch.from_numpy(self.data.y_test)
            return float((out.argmax(1) == y).float().mean()), float(torch.nn.functional.cross_entropy(out, y))

    def artifacts(self) -> dict[str, pd.DataFrame]:
        out = {"fl_rounds": pd.DataFrame(self.rows), "fl_clients": pd.DataFrame(self.client_rows),
               "fl_client_times": pd.DataFrame(self.time_rows)}
        if getattr(self, "chain_rows", None):
            out["fl_chain"] = pd.DataFrame(self.chain_rows)
        return out

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        if df.empty:
            return df
        out = []
        for label, g in df.groupby("variant", sort=False):
            hit = g[g.accuracy >= self.p.target_accuracy]
            first = hit.iloc[0] if not hit.empty else None
            out.append({"variant": label, "rounds": len(g), "final_accuracy": g.accuracy.iloc[-1],
                        "best_accuracy": g.accuracy.max(), "target_accuracy": self.p.target_accuracy,
                        "rounds_to_target": int(first["round"]) if first is not None else None,
                        "wall_s_to_target": float(first["wall_s"]) if first is not None else None,
                        "bytes_to_target": int(first["cum_bytes"]) if first is not None else None,
                        "mean_round_s": g.round_s.mean(),
                        "bytes_per_round": g[["up_bytes", "down_bytes"]].sum(axis=1).mean(),
                        "up_bytes_per_round": g.up_bytes.mean(), "clients_failed": int((g.failed.str.len() > 0).sum())})
        return pd.DataFrame(out)

    def findings(self, summary: pd.DataFrame) -> pd.DataFrame:
        """FedAvg vs FedSGD in rounds to the target, for every flat FedAvg variant (McMahan et al.'s claim
        is for several local epochs; one epoch is reported too, not hidden)."""
        s = summary.set_index("variant")
        sgd = [v for v in s.index if str(v).startswith("fedsgd")]
        avgs = [v for v in s.index if str(v).startswith("fedavg") and "hier" not in str(v)
                and not any(k in str(v) for k in ("topk", "int8", "deadline"))]
        rows = []
        for avg in avgs if sgd else []:
            a, b = s.loc[avg, "rounds_to_target"], s.loc[sgd[0], "rounds_to_target"]
            n_sgd = s.loc[sgd[0], "rounds"]
            if pd.notna(a) and pd.notna(b):
                res = "held" if b > a else "did not hold"
                ev = f"{avg}: {int(a)} rounds, {sgd[0]}: {int(b)}; ratio {b / a:.1f}x"
            elif pd.notna(a):
                res = "held"
                ev = f"{avg}: {int(a)} rounds; {sgd[0]} not within {n_sgd} (ratio > {n_sgd / a:.1f}x)"
            else:
                res, ev = "not tested", f"{avg} did not reach the target"
            rows.append({"finding": f"{avg} reaches the target accuracy in fewer rounds than FedSGD "
                                    "(survey: 10-100x fewer)", "result": res, "held_in": "", "evidence": ev})
        return pd.DataFrame(rows + self._chain_findings(s))

    def _chain_findings(self, s: pd.DataFrame) -> list[dict[str, Any]]:
        """BlockFL: the chain leaves an honest run's accuracy alone, excludes and does not pay cheaters, and
        pays by sample count; plus the measured cost per round."""
        rows: list[dict[str, Any]] = []
        if not getattr(self, "chain_rows", None):
            return rows
        r = pd.DataFrame(self.rows)
        for v in [str(x) for x in s.index if str(x).endswith("/chain")]:
            base = v.removesuffix("/chain")
            if base not in s.index:
                continue
            a, b = float(s.loc[base, "final_accuracy"]), float(s.loc[v, "final_accuracy"])
            attacked = any(p.attackers for p in self.p.variants if p.label() == v)
            if not attacked:
                rows.append({"finding": "the chain leaves accuracy unchanged when nobody cheats",
                             "result": "held" if abs(a - b) <= 0.01 else "did not hold", "held_in": v,
                             "evidence": f"final accuracy {a:.3f} without, {b:.3f} with the chain"})
            else:
                rows.append({"finding": "with the chain, an attacked run keeps the honest accuracy",
                             "result": "held" if b >= a + 0.1 or b >= self.p.target_accuracy else "did not hold",
                             "held_in": v, "evidence": f"final accuracy {a:.3f} without, {b:.3f} with the chain"})
            g0 = r[(r.variant == base) & (r["round"] > 1)].round_s.mean()
            g1 = r[(r.variant == v) & (r["round"] > 1)].round_s.mean()
            rows.append({"finding": "chain cost per FL round (mean round time, rounds 2+)", "result": "measured",
                         "held_in": v, "evidence": f"{g0 * 1e3:.0f} ms without, {g1 * 1e3:.0f} ms with "
                                                   f"(+{(g1 - g0) * 1e3:.0f} ms)"})
        c = pd.DataFrame(self.chain_rows)
        bad = c[c.behaviour != "honest"]
        if not bad.empty:
            paid, acc = bad.reward_eth.sum(), int(bad.accepted.sum())
            rows.append({"finding": "poisoned and free-riding updates are excluded from aggregation and unrewarded",
                         "result": "held" if paid == 0 and acc == 0 else "did not hold", "held_in": "",
                         "evidence": f"{acc} of {len(bad)} attacker-rounds accepted, {paid:.4f} ETH paid to attackers; "
                                     f"slashed {bad.slashed_eth.sum():.2f} ETH"})
        good = c[(c.behaviour == "honest") & c.accepted]
        if not good.empty:
            per = good.reward_eth / good.claimed_samples
            spread = float((per.max() - per.min()) / per.mean()) if len(good) > 1 else 0.0
            per_round = good.groupby(["variant", "round"]).apply(
                lambda g: float((g.reward_eth / g.claimed_samples).std() / (g.reward_eth / g.claimed_samples).mean())
                if len(g) > 1 else 0.0, include_groups=False)
            rows.append({"finding": "rewards are proportional to the recorded sample count",
                         "result": "held" if float(per_round.max()) < 0.01 else "did not hold", "held_in": "",
                         "evidence": f"within a round, reward per sample varies by at most "
                                     f"{float(per_round.max()) * 100:.2f} % (coefficient of variation); across "
                                     f"rounds by {spread * 100:.0f} % (the accepted total changes)"})
        honest_rej = int(((c.behaviour == "honest") & c.rejected).sum())
        rows.append({"finding": "no honest update is rejected by the validators",
                     "result": "held" if honest_rej == 0 else "did not hold", "held_in": "",
                     "evidence": f"{honest_rej} of {int((c.behaviour == 'honest').sum())} honest client-rounds "
                                 "rejected"})
        return rows

    @classmethod
    def figures(cls, run: Any) -> list[tuple[str, Any]]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        f = run.path / "fl_rounds.parquet"
        if not f.exists():
            return []
        df = pd.read_parquet(f)
        fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
        for label, g in df.groupby("variant", sort=False):
            ax[0].plot(g["round"], g.accuracy, label=label)
            ax[1].plot(g.wall_s, g.accuracy, label=label)
            ax[2].plot(g.cum_bytes / 1e6, g.accuracy, label=label)
        for a, x in zip(ax, ("round", "wall-clock time (s)", "bytes moved (MB)"), strict=True):
            a.set_xlabel(x)
            a.set_ylabel("test accuracy")
            a.grid(alpha=0.3)
        ax[0].legend(fontsize=7)
        figs = [("Federated learning: accuracy vs rounds, time and bytes", fig)]
        f = run.path / "fl_chain.parquet"
        if f.exists():
            c = pd.read_parquet(f)
            variants = list(dict.fromkeys(c.variant))
            fig, axes = plt.subplots(1, len(variants), figsize=(6 * len(variants), 3.8), squeeze=False)
            for a, v in zip(axes[0], variants, strict=True):
                g = c[c.variant == v].groupby("client").agg(reward=("reward_eth", "sum"), samples=("samples", "first"),
                                                            behaviour=("behaviour", "first"),
                                                            slashed=("slashed_eth", "sum"))
                colours = ["tab:red" if b != "honest" else "tab:blue" for b in g.behaviour]
                a.bar(g.index, g.reward, color=colours, label="reward")
                a.bar(g.index, -g.slashed, color="tab:gray", label="slashed")
                a.set_ylabel("ETH (reward up, slashed down)")
                a2 = a.twinx()
                a2.plot(g.index, g.samples, "k.", label="samples")
                a2.set_ylabel("training samples")
                a.set_title(v, fontsize=9)
                a.grid(alpha=0.3)
            figs.append(("BlockFL: reward per client against its samples (red: attackers)", fig))
        return figs
