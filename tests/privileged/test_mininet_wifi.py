"""The mininet-wifi backend for real: runs where mininet-wifi and mac80211_hwsim exist (the Vagrant VM), and is
skipped elsewhere. On the build machines the translation is covered by tests/unit/test_mininet.py and the
attach-to-namespace path by the wired-Mininet test in tests/integration/test_scenario.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.config.loader import load_experiment
from testbed.emulation.mnbackend import find_mininet, hwsim_available
from testbed.results import load
from testbed.runner import run_experiment

from ..conftest import ROOT, is_root

pytestmark = [pytest.mark.privileged("mininet-wifi"), pytest.mark.skipif(
    not is_root() or find_mininet(wifi=True)[0] is None or not hwsim_available()[0],
    reason="needs root, mininet-wifi and mac80211_hwsim (the project's Vagrant VM)")]


def test_station_walks_away_over_mininet_wifi(tmp_path: Path, ray_local: None) -> None:
    (tmp_path / "exp.yaml").write_text(f"""
name: wifi_walk
topology: {ROOT / 'topologies/demo_split.yaml'}
workload: {{name: inference, params: {{model: small_cnn, tiers: [edge], requests_per_device: 60, interval_ms: 100,
  warmup: 1, chunk: 60, input_dtype: float32, on_failure: record}}}}
backends: {{links: mininet-wifi, compute: none}}
scenario:
  mobility: [{{device: cam, ap: edge, path_loss: {{exponent: 3.5, shadowing_db: 0}},
               waypoints: [[0, 2], [3, 60], [6, 2]]}}]
""")
    out = run_experiment(load_experiment(tmp_path / "exp.yaml"), tmp_path / "results")
    assert out.status == "complete"
    detail = out.manifest["backends"]["links_detail"]
    assert detail["name"] == "mininet-wifi" and "0" in detail["radio_links"]
    spans = load(out.path).spans
    req = spans[(spans.kind == "request") & (spans.phase == "edge")]
    assert len(req) == 60  # every request accounted for (answered or recorded as failed)
