"""Federated learning end to end: a 5-client hierarchical run converges on digits and survives a dropout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from testbed.config.loader import load_experiment
from testbed.results import load
from testbed.runner import run_experiment

from ..conftest import ROOT


def test_hierarchical_fedavg_converges_and_survives_a_dropout(tmp_path: Path, ray_local: None) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"""
name: fl5
topology: {ROOT / 'topologies/fl_hier5.yaml'}
workload:
  name: federated
  params:
    rounds: 8
    round_timeout_s: 5
    target_accuracy: 0.85
    variants:
      - {{algorithm: fedavg, hierarchical: true, edge_period: 2, local_epochs: 2}}
      - {{algorithm: fedavg, hierarchical: false, compression: topk, topk_frac: 0.2, rounds: 3}}
      - {{algorithm: fedavg, mode: async, local_epochs: 2, rounds: 3}}
    dropouts: [{{round: 2, clients: [c3]}}]
""")
    out = run_experiment(load_experiment(exp), tmp_path / "results")
    r = pd.read_parquet(out.path / "fl_rounds.parquet")
    hier = r[r.variant == "fedavg/iid/hier2"]
    assert len(hier) == 8 and hier.accuracy.iloc[-1] >= 0.85 > hier.accuracy.iloc[0] - 0.2
    # round 3 (index 2): c3 dropped out; the round completed with the other four
    assert "c3" in hier.failed.iloc[2] and hier.contributed.iloc[2] == 4
    assert hier.contributed.iloc[3] == 5  # and it is back the round after
    topk = r[r.variant == "fedavg/iid/topk"]
    full = hier.up_bytes.iloc[0] / 2  # two edge rounds per cloud round
    assert (topk.up_bytes < 0.5 * full).all()  # 20 % of the coordinates, index + value each
    asy = r[r.variant == "fedavg/iid/async"]
    assert len(asy) == 3 and asy.accuracy.iloc[-1] > asy.accuracy.iloc[0] - 0.05
    assert (asy.staleness_max >= 1).any()  # updates did land on a model that had moved on
    s = out.summary.set_index("variant")
    assert s.loc["fedavg/iid/hier2", "rounds_to_target"] <= 8
    spans = load(out.path).spans
    assert (spans.kind == "dropout").any()
