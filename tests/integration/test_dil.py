"""Seed 004 end to end: demonstrations as Ray tasks, DIL/SOS/DQN trained, decisions executed on the testbed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from testbed.config.loader import load_experiment
from testbed.runner import run_experiment

from ..conftest import ROOT


def test_dil_policies_are_trained_scored_and_executed(tmp_path: Path, ray_local: None) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"""
name: dil
topology: {ROOT / 'topologies/demo_split.yaml'}
workload:
  name: dil_offloading
  params: {{subtasks: 4, demonstrations: 4000, demo_tasks: 2, test_states: 400, epochs: 6, dqn_steps: 150,
            decision_time_t: [4, 6], testbed_model: small_cnn, testbed_demonstrations: 2000, execute_states: 1,
            requests_per_decision: 1}}
""")
    out = run_experiment(load_experiment(exp), tmp_path / "results")
    s = out.summary
    uni = s[s.setting == "uniform"].set_index("policy")
    assert uni.loc["OOS", "accuracy"] == 1.0 and uni.loc["OOS", "cost_vs_oos"] == 1.0
    assert uni.loc["DIOS", "accuracy"] > uni.loc["ROS", "accuracy"]
    assert uni.loc["DIOS", "cost_vs_oos"] < uni.loc["ROS", "cost_vs_oos"]
    assert (s.cost_vs_oos >= 1.0 - 1e-9).all()  # nothing beats the optimum
    ex = pd.read_parquet(out.path / "dil_executed.parquet")
    assert set(ex.policy) == {"OOS", "DIOS", "SOS", "DROS", "GOS", "LOS", "EOS", "COS", "ROS"}
    assert (ex.measured_latency_ms > 0).all()
    # all-cloud crossed the (re-shaped) radio link and the wired link with delay W at least twice each way
    cos = ex[ex.policy == "COS"].iloc[0]
    assert cos.measured_latency_ms >= 2 * cos.wired_ms
    t = pd.read_parquet(out.path / "dil_decision_time.parquet")
    assert list(t.subtasks) == [4, 6] and (t.exhaustive_us.iloc[1] > t.exhaustive_us.iloc[0])
