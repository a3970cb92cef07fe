"""Blockchain-incentivized offloading (survey 000, section IX-C3) on a real EVM.

The mechanism, as the survey states it: every device and edge node stakes a deposit; a device asks an
edge node to run the tail of its model (blocks ``cut..n``) and posts a ``require_task`` transaction with
a bounty; the edge node returns the result and posts ``complete`` with the hash of its result; after a
while other staked edge nodes re-execute the task and vote; the first recorded claim the majority found
correct earns the bounty. Choices the survey leaves open, and which we made (contract
``offload_market.vy``): a claim the majority rejects loses ``slash`` of its deposit; the validators who
voted with the majority share what was slashed plus ``validator_share`` of the bounty; with no correct
claim the requester is refunded. An edge node whose deposit falls below the stake can no longer claim,
and devices stop choosing it.

Everything chain-related crosses the emulated network: each node signs its own transactions
(eth-account) and sends them to the node hosting the ``chain`` gateway (the cloud by default), which
hands them to the EVM. Validators fetch the claimed input and result from the claimant over the links,
check both against the hashes on chain, re-run the partition with torch and compare within a tolerance
(re-execution under other caps need not be bit-identical; the hash commits the exact bytes returned).

Misbehaviour is a scenario option per edge node: ``garbage`` (returns and claims random numbers),
``lazy`` (watches the chain and claims every task at once without computing; serves zeros),
``double_claim`` (serves honestly but claims each task twice; the contract refuses the second).
Validator selection is made by the driver (``validators`` random staked non-claimants per task), a
stand-in for a selection rule the survey leaves open; the votes themselves are the validators' own
transactions.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from testbed import clock
from testbed.chain import TASK_TIMEOUT_BLOCKS, address_of, keccak, node_key
from testbed.chain.client import ChainClient, Rejected, node_wallet
from testbed.config.models import Tier
from testbed.errors import ConfigError
from testbed.topology import Topology
from testbed.transport import Message
from testbed.workload import MODELS, ROLES, WORKLOADS, StepResult, Workload, require_tiers

KEY = "market"
ETH = 10**18
CONTRACT = "offload_market"


def h32(a: np.ndarray) -> bytes:
    return keccak(np.ascontiguousarray(a, np.float32).tobytes())


@ROLES.register("market_device")
class MarketDeviceRole:
    """A device: runs blocks ``[0, cut)``, posts the task with its bounty, offloads the rest to an edge."""

    def __init__(self, rt: Any, params: dict[str, Any]) -> None:
        self.cfg = params
        self.client: ChainClient | None = None

    def join(self, rt: Any) -> str:
        self.client = node_wallet(rt, self.cfg)
        self.client.transact("register", False, value=int(self.cfg["deposit_wei"]))
        return self.client.address

    def request(self, rt: Any, rid: int, edges: list[str], with_chain: bool) -> dict[str, Any]:
        c = self.cfg
        shape = tuple(c["input_shape"])
        frame = rt.rng.standard_normal((1, *shape), dtype=np.float32)
        t0 = clock.now_ns()
        cut = int(c["cut"])
        x = np.ascontiguousarray(rt.compute(KEY, frame, rid, 0, cut) if cut else frame, np.float32)
        t_local = clock.now_ns()
        task_id, edge, check_ms, require_ms, skipped = 0, edges[0], 0.0, 0.0, []
        if with_chain:
            assert self.client is not None
            # choose the first edge in our order that still holds its stake (one read per candidate)
            for e in edges:
                s = clock.now_ns()
                ok = self.client.view("staked", c["directory"][e], request_id=rid)
                check_ms += (clock.now_ns() - s) / 1e6
                if ok:
                    edge = e
                    break
                skipped.append(e)
            s = clock.now_ns()
            rc = self.client.transact("require_task", h32(x), keccak(str(c["spec"]).encode()),
                                      value=int(c["bounty_wei"]), request_id=rid)
            require_ms = (clock.now_ns() - s) / 1e6
            task_id = int(next(e for e in rc["events"] if e["event"] == "Required")["args"]["task_id"])
        s = clock.now_ns()
        reply = rt.request(edge, "offload", x, {"role": "market_edge", "task_id": task_id, "chain": with_chain}, rid)
        offload_ms = (clock.now_ns() - s) / 1e6
        t1 = clock.now_ns()
        assert reply.array is not None
        out = np.ascontiguousarray(reply.array, np.float32)
        rt.span("request", t0, t1, request_id=rid, edge=edge, task_id=task_id, chain=with_chain)
        return {"device": rt.name, "request_id": rid, "edge": edge, "task_id": task_id, "chain": with_chain,
                "latency_ms": (t1 - t0) / 1e6, "local_ms": (t_local - t0) / 1e6, "check_ms": check_ms,
                "require_ms": require_ms, "offload_ms": offload_ms, "result_hash": "0x" + h32(out).hex(),
                "input_hash": "0x" + h32(x).hex(), "skipped": ",".join(skipped)}


@ROLES.register("market_edge")
class MarketEdgeRole:
    """An edge node: serves offloaded tasks and claims them; validates others' claims when asked."""

    def __init__(self, rt: Any, params: dict[str, Any]) -> None:
        self.cfg = params
        self.behaviour: str = params.get("behaviour", "honest")
        self.client: ChainClient | None = None
        self.store: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.claims: list[threading.Thread] = []
        self.rejections: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def join(self, rt: Any) -> str:
        self.client = node_wallet(rt, self.cfg)
        self.client.transact("register", True, value=int(self.cfg["deposit_wei"]))
        if self.behaviour == "lazy":
            self._watcher = threading.Thread(target=self._watch, args=(rt,), daemon=True, name="tb-lazy")
            self._watcher.start()
        return self.client.address

    # -- serving ---------------------------------------------------------------------------------------
    def on_message(self, rt: Any, msg: Message) -> tuple[str, np.ndarray | None, dict[str, Any]]:
        rid, tid = int(msg.meta.get("request_id", -1)), int(msg.meta.get("task_id", 0))
        if msg.kind == "fetch_claim":
            with self.lock:
                got = self.store.get(tid)
            if got is None:
                return "no_claim", None, {}
            x, out = got
            return "claim", np.concatenate([x.ravel(), out.ravel()]), {"in_shape": list(x.shape),
                                                                     "out_shape": list(out.shape)}
        assert msg.array is not None
        x = np.ascontiguousarray(msg.array, np.float32)
        if self.behaviour in ("garbage", "lazy"):
            shape = tuple(self.cfg["out_shape"])
            out = (rt.rng.standard_normal(shape).astype(np.float32) if self.behaviour == "garbage"
                   else np.zeros(shape, np.float32))
        else:
            out = np.ascontiguousarray(rt.compute(KEY, x, rid, int(self.cfg["cut"]), None), np.float32)
        if msg.meta.get("chain"):
            with self.lock:
                self.store[tid] = (x, out)
            th = threading.Thread(target=self._claim, args=(rt, tid, h32(out), rid), daemon=True)
            th.start()  # the result goes back now; the claim follows it
            with self.lock:
                self.claims.append(th)
        return "result", out, {}

    def _claim(self, rt: Any, tid: int, result_hash: bytes, rid: int) -> None:
        assert self.client is not None
        times = 2 if self.behaviour == "double_claim" else 1
        for i in range(times):
            try:
                self.client.transact("complete", tid, result_hash, request_id=rid)
            except Rejected as e:
                with self.lock:
                    self.rejections.append({"node": rt.name, "task_id": tid, "fn": "complete", "attempt": i + 1,
                                            "reason": e.receipt.get("reason"), "behaviour": self.behaviour})

    def _watch(self, rt: Any) -> None:
        """``lazy``: poll the chain for new tasks and claim each at once with a made-up result."""
        assert self.client is not None
        seen: set[int] = set()
        block = 0
        while not self._watch_stop.wait(clock.wall(float(self.cfg["poll_ms"]) / 1e3)):
            try:
                events = self.client.logs(block)
            except Exception:  # the gateway is going away at the end of the run
                continue
            for ev in events:
                block = max(block, int(ev["block"]))
                if ev["event"] != "Required" or int(ev["args"]["task_id"]) in seen:
                    continue
                tid = int(ev["args"]["task_id"])
                seen.add(tid)
                self._claim(rt, tid, keccak(f"lazy/{rt.name}/{tid}".encode()), tid)

    def settle(self, rt: Any) -> list[dict[str, Any]]:
        """Wait for this node's claims in flight; returns (and clears) the rejections seen so far."""
        with self.lock:
            pending, self.claims = self.claims, []
        for th in pending:
            th.join(clock.wall(120))
        with self.lock:
            out, self.rejections = self.rejections, []
        return out

    def stop(self, rt: Any) -> None:
        self._watch_stop.set()
        if self._watcher is not None:
            self._watcher.join(clock.wall(10))  # it may be in the middle of a claim

    # -- validating --------------------------------------------------------------------------------------
    def validate(self, rt: Any, task_id: int) -> dict[str, Any]:
        """Read ``task_id``'s claims from the chain, re-execute the task and vote on every claim."""
        assert self.client is not None
        c = self.cfg
        t0 = clock.now_ns()
        task = self.client.view("tasks", task_id, request_id=task_id)
        input_hash, n_claims = bytes(task[2]), int(task[5])
        node_of = {a.lower(): n for n, a in c["directory"].items()}
        claims = []
        for i in range(n_claims):
            who = node_of.get(str(self.client.view("claim_edge", task_id, i, request_id=task_id)).lower(), "")
            claims.append((who, bytes(self.client.view("claim_hash", task_id, i, request_id=task_id))))
        row: dict[str, Any] = {"validator": rt.name, "task_id": task_id, "claims": n_claims, "verdicts": None,
                               "max_rel_diff": None, "reexecuted": False, "settled": False}
        if rt.name in [w for w, _ in claims] or int(task[4]) > 2 or not claims:
            row.update(skipped="claimant" if claims else "no claims", ms=(clock.now_ns() - t0) / 1e6)
            return row
        verdicts, reference, diffs = 0, None, []
        if self.behaviour in ("garbage", "lazy"):
            verdicts = (1 << n_claims) - 1  # a cheater approves everything without computing
        else:
            for i, (who, claimed_hash) in enumerate(claims):
                reply = rt.request(who, "fetch_claim", None, {"role": "market_edge", "task_id": task_id}, task_id)
                if reply.kind != "claim" or reply.array is None:
                    continue  # nothing to show for the claim
                n_in = int(np.prod(reply.meta["in_shape"]))
                x = reply.array[:n_in].reshape(reply.meta["in_shape"]).astype(np.float32)
                out = reply.array[n_in:].reshape(reply.meta["out_shape"]).astype(np.float32)
                if h32(x) != input_hash or h32(out) != claimed_hash:
                    continue  # what it shows is not what was recorded
                if reference is None:
                    reference = np.asarray(rt.compute(KEY, x, task_id, int(c["cut"]), None), np.float32)
                diff = float(np.max(np.abs(out - reference)))
                scale = float(np.max(np.abs(reference))) or 1.0
                diffs.append(diff / scale)
                if diff <= float(c["atol"]) * scale and int(out.argmax()) == int(reference.argmax()):
                    verdicts |= 1 << i
        try:
            rc = self.client.transact("vote", task_id, verdicts, request_id=task_id)
        except Rejected as e:  # settled meanwhile, or a claim landed between our read and our vote
            row.update(skipped=str(e.receipt.get("reason")), ms=(clock.now_ns() - t0) / 1e6)
            return row
        row.update(verdicts=verdicts, max_rel_diff=max(diffs) if diffs else None, reexecuted=reference is not None,
                   settled=any(e["event"] == "Settled" for e in rc["events"]), skipped="",
                   ms=(clock.now_ns() - t0) / 1e6)
        return row


class Misbehaviour(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    node: str
    behaviour: Literal["garbage", "lazy", "double_claim"]


class ChainSpec(BaseModel):
    """The chain: embedded py-evm (default) or a JSON-RPC node on this machine, and the contract's terms."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    url: str | None = None
    block_ms: PositiveFloat | None = None  # None: a block per transaction (automine)
    host: str | None = None  # the node hosting the gateway; default: the first cloud node
    deposit_eth: PositiveFloat = 1.0
    slash_eth: float = Field(0.5, ge=0)
    bounty_eth: PositiveFloat = 0.01
    validators: PositiveInt = 3
    validator_share: float = Field(0.1, ge=0, le=1)
    validation_delay_ms: float = Field(200.0, ge=0)
    poll_ms: PositiveFloat = 20.0  # how often a watching node polls for new events

    @field_validator("url")
    @classmethod
    def _local_only(cls, v: str | None) -> str | None:
        from testbed.chain import check_chain_url

        return check_chain_url(v)
        import ipaddress
        from urllib.parse import urlparse

        host = urlparse(v).hostname or ""
        ok = host == "localhost"
        try:
            ip = ipaddress.ip_address(host)
            ok = ok or ip.is_loopback or ip in ipaddress.ip_network("198.18.0.0/15")
        except ValueError:
            pass
        if not ok:
            raise ValueError(f"{v}: the testbed only talks to a chain on this machine (loopback or 198.18.0.0/15)")
        return v


class MarketParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = "small_cnn"
    cut: int = Field(2, ge=0)  # the device runs blocks [0, cut)
    requests: PositiveInt = 10  # per device, per phase
    baseline: bool = True  # first the same requests without the chain, for the overhead
    chain: ChainSpec = Field(default_factory=lambda: ChainSpec.model_validate({}))
    misbehaviour: list[Misbehaviour] = Field(default_factory=list)
    atol: PositiveFloat = 1e-4  # |claimed - re-executed| <= atol * max|re-executed|, and the same argmax

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return MODELS.validate(v)


@WORKLOADS.register("chain_offloading")
class ChainOffloading(Workload):
    Params = MarketParams

    @property
    def p(self) -> MarketParams:
        assert isinstance(self.params, MarketParams)
        return self.params

    @classmethod
    def check(cls, params: BaseModel, topology: Topology, source: str) -> None:
        assert isinstance(params, MarketParams)
        require_tiers(topology, source, "blockchain-incentivized offloading", ("device", "edge"))
        edges = topology.by_tier(Tier.EDGE)
        host = params.chain.host or next(iter(topology.by_tier(Tier.CLOUD)), None)
        if host is None or host not in topology.nodes:
            raise ConfigError(f"the chain needs a host node, got {host!r}", file=source,
                              path="workload.params.chain.host", fix="name a cloud node, or add one to the topology")
        if host in edges or host in topology.by_tier(Tier.DEVICE):
            raise ConfigError(f"{host} takes part in the market, so it cannot also host the chain's gateway",
                              file=source, path="workload.params.chain.host", fix="use a cloud node")
        for i, m in enumerate(params.misbehaviour):
            if m.node not in edges:
                raise ConfigError(f"{m.node!r} is not an edge node", file=source,
                                  path=f"workload.params.misbehaviour[{i}].node", fix=f"one of {', '.join(edges)}")
        honest = len(edges) - len({m.node for m in params.misbehaviour})
        if params.chain.validators > len(edges) - 2:
            raise ConfigError(f"{params.chain.validators} validators per task need at least "
                              f"{params.chain.validators + 2} edge nodes (a server and a front-runner excluded)",
                              file=source, path="workload.params.chain.validators", fix="lower it or add edges")
        if honest < 1:
            raise ConfigError("no honest edge node is left", file=source, path="workload.params.misbehaviour",
                              fix="leave at least one edge honest")
        if params.chain.slash_eth > params.chain.deposit_eth:
            raise ConfigError("slash_eth exceeds deposit_eth", file=source, path="workload.params.chain.slash_eth",
                              fix="slash at most the deposit")

    def node_models(self, topology: Topology) -> dict[str, str | None]:
        return {n: self.p.model for n in topology.by_tier(Tier.DEVICE) + topology.by_tier(Tier.EDGE)}

    def setup(self, tb: Any) -> None:
        import ray

        topo: Topology = tb.topology
        c = self.p.chain
        self.devices, self.edges = topo.by_tier(Tier.DEVICE), topo.by_tier(Tier.EDGE)
        self.host = c.host or topo.by_tier(Tier.CLOUD)[0]
        self.behaviour = {e: "honest" for e in self.edges} | {m.node: m.behaviour for m in self.p.misbehaviour}
        chains = tb.load_chains(self.devices + self.edges, KEY, self.p.model)
        blocks: list[dict[str, Any]] = next(iter(chains.values()), [])
        if self.p.cut >= len(blocks):
            raise ConfigError(f"cut {self.p.cut} leaves nothing to offload: {self.p.model} has {len(blocks)} blocks",
                              path="workload.params.cut", fix=f"use 0..{len(blocks) - 1}")
        md = MODELS.get(self.p.model)
        self.chain = tb.start_chain(self.host, c.url, c.block_ms)
        self.contract = ray.get(self.chain.deploy.remote(CONTRACT, [
            int(c.deposit_eth * ETH), int(c.slash_eth * ETH), c.validators, int(c.validator_share * 10_000),
            TASK_TIMEOUT_BLOCKS]))
        info = ray.get(self.chain.info.remote())
        self.address = {n: address_of(node_key(self.seed, n)) for n in self.devices + self.edges}
        self.node_of = {a: n for n, a in self.address.items()}
        # the set-up grant: gas money and the deposit, from the chain's funded account
        ray.get(self.chain.fund.remote(list(self.address.values()), int((c.deposit_eth + 5) * ETH)))
        self.initial = ray.get(self.chain.balances.remote(list(self.address.values())))
        shared = {"seed": self.seed, "contract": self.contract, "contract_name": CONTRACT, "chain_id": info["chain_id"],
                  "gateway": self.host, "deposit_wei": int(c.deposit_eth * ETH), "bounty_wei": int(c.bounty_eth * ETH),
                  "cut": self.p.cut, "input_shape": list(md.input_shape), "spec": f"{self.p.model}/{self.p.cut}",
                  "directory": self.address, "poll_ms": c.poll_ms, "atol": self.p.atol,
                  "out_shape": [1, md.num_classes]}
        for d in self.devices:
            tb.add_role(d, "market_device", shared)
        for e in self.edges:
            tb.add_role(e, "market_edge", dict(shared, behaviour=self.behaviour[e]))
        self.rng = np.random.default_rng(self.seed)
        self.phases = (["nochain"] if self.p.baseline else []) + ["chain"]
        self.schedule = [(ph, i) for ph in self.phases for i in range(self.p.requests)]
        self.req_rows: list[dict[str, Any]] = []
        self.task_rows: list[dict[str, Any]] = []
        self.vote_rows: list[dict[str, Any]] = []
        self.balance_rows: list[dict[str, Any]] = []
        self.rejections: list[dict[str, Any]] = []
        self.joined = False
        self.t0 = clock.now()

    def total_steps(self) -> int:
        return len(self.schedule)

    def _join(self, tb: Any) -> None:
        import ray

        tb.set_phase("join")
        futs = [tb.call_async(n, "market_device" if n in self.devices else "market_edge", "join")
                for n in self.devices + self.edges]
        ray.get(futs, timeout=clock.wall(600))
        self.joined = True
        self._sample(tb, "joined")

    def step(self, tb: Any) -> StepResult:
        import ray

        phase, i = self.schedule.pop(0)
        with_chain = phase == "chain"
        if with_chain and not self.joined:
            self._join(tb)
        tb.set_phase(phase)
        n_e = len(self.edges)
        futs = []
        for k, d in enumerate(self.devices):
            rid = i * len(self.devices) + k
            first = (i + k) % n_e
            order = self.edges[first:] + self.edges[:first]
            futs.append(tb.call_async(d, "market_device", "request", rid=rid, edges=order, with_chain=with_chain))
        rows = ray.get(futs, timeout=clock.wall(600))
        for r in rows:
            r["phase"] = phase
            r["server_behaviour"] = self.behaviour[r["edge"]]
        self.req_rows += rows
        if with_chain:
            self._validate(tb, rows)
            self._sample(tb, f"step {i + 1}")
        return StepResult(progress=1, done=not self.schedule,
                          info={"label": f"{phase} {i + 1}/{self.p.requests}"})

    def _validate(self, tb: Any, rows: list[dict[str, Any]]) -> None:
        """After the validation delay, staked non-claimants, drawn at random, re-execute each task of the
        step and vote, in waves, until every task is settled or no candidate is left."""
        import ray

        clock.sleep(self.p.chain.validation_delay_ms / 1e3)
        for e in self.edges:
            self.rejections += tb.call(e, "market_edge", "settle")
        view = self._view
        k = self.p.chain.validators
        left = {r["task_id"]: [str(v) for v in self.rng.permutation(self.edges)] for r in rows}
        asked: dict[int, list[str]] = {t: [] for t in left}
        open_ = set(left)
        while open_:
            jobs = []
            for tid in sorted(open_):
                task = view("tasks", tid)
                if int(task[4]) > 2:  # paid or refunded
                    open_.discard(tid)
                    continue
                need = k - int(task[6])
                claiming = {self.node_of.get(view("claim_edge", tid, j), "") for j in range(int(task[5]))}
                picks: list[str] = []
                while left[tid] and len(picks) < need:
                    v = left[tid].pop()
                    if v not in claiming and view("staked", self.address[v]):
                        picks.append(v)
                if not picks:
                    open_.discard(tid)  # nobody left to validate: stays unsettled
                    continue
                asked[tid] += picks
                jobs += [(v, tid) for v in picks]
            if not jobs:
                break
            self.vote_rows += ray.get([tb.call_async(v, "market_edge", "validate", task_id=tid) for v, tid in jobs],
                                      timeout=clock.wall(600))
        for r in rows:
            tid = r["task_id"]
            st = view("tasks", tid)
            claimants = [self.node_of.get(view("claim_edge", tid, j), "") for j in range(int(st[5]))]
            hashes = [view("claim_hash", tid, j) for j in range(int(st[5]))]
            voters = [v["validator"] for v in self.vote_rows if v["task_id"] == tid and not v.get("skipped")]
            r.update({"claimants": ",".join(claimants), "validators": ",".join(voters)})
            self.task_rows.append({
                "task_id": tid, "device": r["device"], "server": r["edge"], "server_behaviour": r["server_behaviour"],
                "claimants": claimants, "claim_behaviours": [self.behaviour.get(c, "?") for c in claimants],
                # a claim is correct when it is the honest computation the device received
                "claim_correct_hash": [h == r["result_hash"] and self.behaviour.get(c) in ("honest", "double_claim")
                                       for c, h in zip(claimants, hashes, strict=True)],
                "validators": voters, "validator_behaviours": [self.behaviour[v] for v in voters],
                "asked": len(asked[tid]),
                "status": {1: "open", 2: "validating", 3: "paid", 4: "refunded"}.get(int(st[4]), str(st[4])),
                "winner": self.node_of.get(st[7], "")})

    def _view(self, fn: str, *args: Any) -> Any:
        import ray

        return ray.get(self.chain.view.remote(self.contract, fn, list(args)), timeout=clock.wall(60))

    def _sample(self, tb: Any, label: str) -> None:
        import ray

        addrs = list(self.address.values())
        wallets = ray.get(self.chain.balances.remote(addrs))
        t = clock.now() - self.t0
        for n, a in self.address.items():
            row = {"t_s": t, "label": label, "node": n, "tier": "device" if n in self.devices else "edge",
                   "behaviour": self.behaviour.get(n, "device"), "wallet_eth": wallets[a] / ETH}
            for f in ("deposits", "credit", "earned", "slashed"):
                row[f"{f}_eth"] = ray.get(self.chain.view.remote(self.contract, f, [a])) / ETH
            row["total_eth"] = row["wallet_eth"] + row["deposits_eth"] + row["credit_eth"]
            self.balance_rows.append(row)

    def teardown(self, tb: Any) -> None:
        import ray

        for e in getattr(self, "edges", []):
            try:
                tb.call(e, "market_edge", "stop", timeout=30)
            except Exception:  # the node may be gone already
                pass
        if getattr(self, "joined", False):
            try:
                self.events = ray.get(self.chain.events.remote(self.contract, 0), timeout=clock.wall(60))
            except Exception:
                self.events = []

    # -- results ------------------------------------------------------------------------------------------
    def _economics(self) -> pd.DataFrame:
        b = pd.DataFrame(self.balance_rows)
        if b.empty:
            return b
        last = b[b.label == b.label.iloc[-1]].set_index("node")
        req = pd.DataFrame(self.req_rows)
        chain_req = req[req.phase == "chain"] if not req.empty else req
        rows = []
        for n, a in self.address.items():
            start = self.initial[a] / ETH
            end = last.loc[n]
            served = int((chain_req.edge == n).sum()) if not chain_req.empty else 0
            paid = self.p.chain.bounty_eth * int((chain_req.device == n).sum()) if not chain_req.empty else 0.0
            wins = sum(1 for t in self.task_rows if t.get("winner") == n)
            rows.append({"node": n, "tier": end["tier"], "behaviour": end["behaviour"], "start_eth": start,
                         "deposit_end_eth": end["deposits_eth"], "slashed_eth": end["slashed_eth"],
                         "earned_eth": end["earned_eth"], "bounties_posted_eth": paid, "tasks_served": served,
                         "tasks_won": wins, "credit_eth": end["credit_eth"], "end_eth": end["total_eth"],
                         "net_eth": end["total_eth"] - start})
        return pd.DataFrame(rows)

    def artifacts(self) -> dict[str, pd.DataFrame]:
        tasks = pd.DataFrame(self.task_rows)
        for col in ("claimants", "claim_behaviours", "claim_correct_hash", "validators", "validator_behaviours"):
            if col in tasks:
                tasks[col] = tasks[col].map(lambda v: ",".join(map(str, v)))
        out = {"chain_requests": pd.DataFrame(self.req_rows), "chain_tasks": tasks,
               "chain_votes": pd.DataFrame(self.vote_rows), "chain_balances": pd.DataFrame(self.balance_rows),
               "chain_economics": self._economics(), "chain_rejections": pd.DataFrame(self.rejections)}
        ev = getattr(self, "events", [])
        if ev:
            out["chain_events"] = pd.DataFrame([{"event": e["event"], "block": e["block"], **{
                k: str(v) for k, v in e["args"].items()}} for e in ev])
        return out

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        req = pd.DataFrame(self.req_rows)
        if req.empty:
            return req
        out = []
        for ph, g in req.groupby("phase", sort=False):
            row: dict[str, Any] = {"phase": ph, "requests": len(g), "p50_ms": g.latency_ms.median(),
                                   "p95_ms": g.latency_ms.quantile(0.95), "mean_ms": g.latency_ms.mean(),
                                   "offload_p50_ms": g.offload_ms.median(), "require_p50_ms": g.require_ms.median(),
                                   "check_p50_ms": g.check_ms.median()}
            if ph == "chain":
                t = pd.DataFrame(self.task_rows)
                row.update(self._fraud(t))
            out.append(row)
        s = pd.DataFrame(out)
        if len(s) == 2:
            base = s.iloc[0]
            s["overhead_p50_ms"] = s.p50_ms - base.p50_ms
        return s

    def _fraud(self, t: pd.DataFrame) -> dict[str, Any]:
        if t.empty:
            return {}
        bad_claims = good_claims = caught = honest_slashed = 0
        slashed_tasks = {(int(e["args"]["task_id"]), e["args"]["edge"]) for e in getattr(self, "events", [])
                         if e["event"] == "Slashed"}
        for _, r in t.iterrows():
            for c, ok in zip(r.claimants, r.claim_correct_hash, strict=True):
                hit = (int(r.task_id), self.address[c]) in slashed_tasks
                if ok:
                    good_claims += 1
                    honest_slashed += hit
                else:
                    bad_claims += 1
                    caught += hit
        wrong_delivered = int((t.server_behaviour.isin(["garbage", "lazy"])).sum())
        return {"tasks": len(t), "paid": int((t.status == "paid").sum()),
                "refunded": int((t.status == "refunded").sum()),
                "unsettled": int((~t.status.isin(["paid", "refunded"])).sum()), "bad_claims": bad_claims,
                "bad_claims_slashed": caught, "good_claims": good_claims, "good_claims_slashed": honest_slashed,
                "wrong_results_delivered": wrong_delivered,
                "attacks_rejected": len(self.rejections)}

    def findings(self, summary: pd.DataFrame) -> pd.DataFrame:
        s = summary.set_index("phase")
        if "chain" not in s.index:
            return pd.DataFrame()
        c = s.loc["chain"]
        rows = []
        if c.get("tasks"):
            rows.append({"finding": "every wrong claim is caught by re-execution and slashed",
                         "result": "held" if c.bad_claims_slashed == c.bad_claims else "did not hold",
                         "held_in": "",
                         "evidence": f"{int(c.bad_claims_slashed)}/{int(c.bad_claims)} wrong claims slashed"})
            rows.append({"finding": "no correct claim is slashed",
                         "result": "held" if c.good_claims_slashed == 0 else "did not hold", "held_in": "",
                         "evidence": f"{int(c.good_claims_slashed)}/{int(c.good_claims)} correct claims slashed"})
            firsts = [t for t in self.task_rows if t.get("status") == "paid"]
            ok = sum(1 for t in firsts if t["winner"] == next(
                (cl for cl, good in zip(t["claimants"], t["claim_correct_hash"], strict=True) if good), None))
            rows.append({"finding": "the first correctly recorded edge node wins the bounty (survey IX-C3)",
                         "result": "held" if ok == len(firsts) and firsts else "did not hold", "held_in": "",
                         "evidence": f"{ok}/{len(firsts)} paid tasks went to the first correct claim"})
        if "overhead_p50_ms" in s.columns:
            rows.append({"finding": "chain overhead on a request's latency (median, chain - no chain)",
                         "result": "measured", "held_in": "",
                         "evidence": f"{c.overhead_p50_ms:.1f} ms "
                                     f"({s.loc['nochain'].p50_ms:.1f} -> {c.p50_ms:.1f} ms); "
                                     f"require tx {c.require_p50_ms:.1f} ms, stake checks {c.check_p50_ms:.1f} ms"})
        return pd.DataFrame(rows)

    @classmethod
    def figures(cls, run: Any) -> list[tuple[str, Any]]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figs = []
        f = run.path / "chain_balances.parquet"
        if f.exists():
            b = pd.read_parquet(f)
            fig, ax = plt.subplots(1, 2, figsize=(13, 4))
            for n, g in b.groupby("node", sort=False):
                style = "--" if g.behaviour.iloc[0] in ("garbage", "lazy", "double_claim") else "-"
                ax[0].plot(g.t_s, g.total_eth, style, label=f"{n} ({g.behaviour.iloc[0]})")
                ax[1].plot(g.t_s, g.deposits_eth, style, label=n)
            ax[0].set_ylabel("wallet + deposit + credit (ETH)")
            ax[1].set_ylabel("deposit (ETH)")
            for a in ax:
                a.set_xlabel("time (s)")
                a.grid(alpha=0.3)
            ax[0].legend(fontsize=7)
            figs.append(("Chain balances over time (dashed: misbehaving edges)", fig))
        f = run.path / "chain_requests.parquet"
        if f.exists():
            r = pd.read_parquet(f)
            fig, ax = plt.subplots(figsize=(6, 4))
            for ph, g in r.groupby("phase", sort=False):
                v = np.sort(g.latency_ms.to_numpy())
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=ph)
            ax.set_xlabel("request latency (ms)")
            ax.set_ylabel("CDF")
            ax.grid(alpha=0.3)
            ax.legend()
            figs.append(("Offloading latency with and without the chain", fig))
        return figs
