"""Federated learning end to end: a 5-client hierarchical run converges on digits and survives a dropout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

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
    round_timeout_s: 3  # a round takes 0.2-0.4 s here; the dropout's rounds wait this out
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
    full = hier[hier.contributed == 5].up_bytes.max() / 2  # a whole round: two edge rounds per cloud round
    assert (topk.up_bytes < 0.5 * full).all()  # 20 % of the coordinates, index + value each
    asy = r[r.variant == "fedavg/iid/async"]
    assert len(asy) == 3 and asy.accuracy.iloc[-1] > asy.accuracy.iloc[0] - 0.05
    assert (asy.staleness_max >= 1).any()  # updates did land on a model that had moved on
    s = out.summary.set_index("variant")
    assert s.loc["fedavg/iid/hier2", "rounds_to_target"] <= 8
    spans = load(out.path).spans
    assert (spans.kind == "dropout").any()


@pytest.mark.privileged("kernel links: a client that leaves has its links taken down")
def test_churn_clients_leave_and_join(tmp_path: Path, ray_local: None) -> None:
    """Churn. c3 is away from the start and joins at 6.5 s; rounds before that choose from the present clients only.
    c5 leaves 0.5 s into round 1, which times it out (round_timeout_s, 6 s) and goes on without it.

    Emulated-time floors keep this off the host's speed: c5 sits behind a 100 kbit/s link, so its copy of the model
    alone takes 1.5 s to arrive (it is still in round 1 when it leaves); round 1 lasts the 6 s timeout; every later
    round is at least a WAN round trip (70 ms), so the 29 after it end past 6.5 s, and round 2 starts before it."""
    topo = (ROOT / "topologies/fl_hier5.yaml").read_text().replace(
        "{ends: [c5, edge_b], link_class: wifi_n}",
        "{ends: [c5, edge_b], up: {rate: 100kbit, delay: 4ms}, down: {rate: 100kbit, delay: 4ms}}")
    assert "100kbit" in topo
    (tmp_path / "topo.yaml").write_text(topo)
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"""
name: flchurn
topology: {tmp_path / 'topo.yaml'}
workload:
  name: federated
  params:
    rounds: 30
    round_timeout_s: 6
    variants: [{{algorithm: fedavg, hierarchical: false, local_epochs: 1}}]
backends: {{links: kernel}}
scenario:
  events: [{{at_s: 6.5, join: c3}}, {{at_s: 0.5, leave: c5}}]
""")
    out = run_experiment(load_experiment(exp), tmp_path / "results")
    assert out.status == "complete" and not out.manifest["scenario"]["errors"]
    r = pd.read_parquet(out.path / "fl_rounds.parquet")
    # round 1: c3 is not there to be chosen; c5 was chosen and left during the round: timed out, not waited for
    assert r.selected.iloc[0] == 4 and "c5" in r.failed.iloc[0] and "c3" not in r.failed.iloc[0]
    assert r.round_s.iloc[0] < 6 + 2
    assert r.selected.iloc[1] == 3  # c1, c2, c4: c3 not yet back, c5 gone
    assert r.selected.iloc[-1] == 4 and r.contributed.iloc[-1] == 4  # c3 joined; c5 stays away
    assert r.accuracy.iloc[-1] > r.accuracy.iloc[0]
    ev = load(out.path).spans
    assert set(ev[ev.kind == "scenario"].node) == {"c3", "c5"}
