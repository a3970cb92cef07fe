"""The chain end to end: incentivized offloading with cheating edge nodes, and BlockFL with a poisoner
and a free rider, on the embedded EVM, with chain traffic on the emulated links."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from testbed.config.loader import load_experiment
from testbed.results import load
from testbed.runner import run_experiment

from ..conftest import ROOT, is_root

pytest.importorskip("eth_tester")
LINKS = "kernel" if is_root() else "userspace"


def test_market_pays_honest_edges_and_catches_every_fraud(tmp_path: Path, ray_local: None) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"""
name: market
topology: {ROOT / 'topologies/chain_market.yaml'}
backends: {{links: {LINKS}, compute: none}}
workload:
  name: chain_offloading
  params:
    requests: 3
    chain: {{validators: 3, validation_delay_ms: 50}}
    misbehaviour:
      - {{node: e3, behaviour: garbage}}
      - {{node: e5, behaviour: lazy}}
      - {{node: e6, behaviour: double_claim}}
""")
    out = run_experiment(load_experiment(exp), tmp_path / "results")
    f = pd.read_csv(out.path / "findings.csv").set_index("finding")
    assert (f.loc[[x for x in f.index if "overhead" not in x], "result"] == "held").all(), f.evidence.to_dict()
    s = out.summary.set_index("phase")
    c = s.loc["chain"]
    assert c.tasks == 12 and c.unsettled == 0 and c.paid >= 9
    assert c.bad_claims >= 2 and c.bad_claims_slashed == c.bad_claims and c.good_claims_slashed == 0
    assert s.loc["chain", "p50_ms"] > s.loc["nochain", "p50_ms"]  # the chain costs time on every request
    rej = pd.read_parquet(out.path / "chain_rejections.parquet")
    assert (rej[rej.node == "e6"].reason == "already claimed this task").all() and (rej.node == "e6").any()
    eco = pd.read_parquet(out.path / "chain_economics.parquet").set_index("node")
    assert eco.loc["e5", "slashed_eth"] > 0 and eco.loc["e5", "net_eth"] < 0  # the front-runner loses
    honest = eco[eco.behaviour == "honest"]
    assert (honest.slashed_eth == 0).all() and honest.earned_eth.sum() > 0
    # chain messages crossed the emulated network: a device's transactions reached the gateway (the cloud)
    spans = load(out.path).spans
    tx = spans[(spans.kind == "transfer") & (spans.src == "d1") & (spans.dst == "cloud")]
    assert len(tx) >= 4  # register, and at least three require_task
    txs = spans[(spans.kind == "chain_tx") & (spans.node == "d1")]
    assert len(txs) >= 4 and all(json.loads(a)["status"] == 1 for a in txs["attrs_json"])
    assert (spans.kind == "chain_exec").any()


def test_blockfl_excludes_poisoner_and_free_rider_and_pays_by_samples(tmp_path: Path, ray_local: None) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"""
name: bfl
topology: {ROOT / 'topologies/fl_hier5.yaml'}
backends: {{links: {LINKS}, compute: none}}
workload:
  name: federated
  params:
    rounds: 3
    round_timeout_s: 20
    target_accuracy: 0.85
    chain: {{reward_eth: 0.1}}
    variants:
      - {{name: plain, hierarchical: false, local_epochs: 2}}
      - {{name: plain/chain, hierarchical: false, local_epochs: 2, chain: true}}
      - name: attacked/chain
        hierarchical: false
        local_epochs: 2
        chain: true
        attackers: [{{client: c2, kind: poison, from_round: 1}}, {{client: c4, kind: free_rider, claim_samples: 1000}}]
""")
    out = run_experiment(load_experiment(exp), tmp_path / "results")
    f = pd.read_csv(out.path / "findings.csv")
    held = dict(zip(f.finding, f.result, strict=True))
    assert held["the chain leaves accuracy unchanged when nobody cheats"] == "held"
    assert held["poisoned and free-riding updates are excluded from aggregation and unrewarded"] == "held"
    assert held["rewards are proportional to the recorded sample count"] == "held"
    c = pd.read_parquet(out.path / "fl_chain.parquet")
    att = c[c.variant == "attacked/chain"]
    assert not att[att.behaviour != "honest"].accepted.any()
    assert att[att.client == "c2"].slashed_eth.sum() > 0
    assert att[~att.client.isin(["c2", "c4"])].accepted.all()
    # from_round reaches the client: c2 trains honestly in round 1 (accepted) and poisons from round 2 on
    c2 = att[att.client == "c2"].set_index("round")
    assert c2.loc[1, "behaviour"] == "honest" and c2.loc[1, "accepted"], c2
    assert (c2.loc[2:, "behaviour"] == "poison").all() and not c2.loc[2:, "accepted"].any(), c2
    r = pd.read_parquet(out.path / "fl_rounds.parquet")
    assert r[r.variant == "attacked/chain"].accuracy.iloc[-1] > 0.8
