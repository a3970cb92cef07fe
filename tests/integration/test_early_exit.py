"""Early exit end to end on the testbed: edge exits, the cloud finishes, raw offload, Edgent re-choosing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from testbed.config.loader import load_experiment
from testbed.runner import run_experiment

from ..conftest import ROOT


def test_exit_run_on_the_testbed(tmp_path: Path, ray_local: None, model_cache: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTBED_MODEL_CACHE", str(model_cache))
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"""
name: exits
topology: {ROOT / 'topologies/seed003_exit.yaml'}
workload:
  name: early_exit
  params:
    variants: [sem2, mem]
    mem_exits: [2, 5]
    thresholds: [0.05, 0.8]
    widths: [8, 8, 8, 8, 8, 8, 16, 16, 16]
    epochs: 8
    lr: 0.05
    test_samples: 64
    edgent: {{latency_target_ms: 40, pair: device-edge, batches: 4, change_after_batches: 2, uplink_mbit: 0.05}}
""")
    out = run_experiment(load_experiment(exp), tmp_path / "results")
    s = out.summary.set_index("config")
    assert (s.samples == 64).all()
    assert (s.local_exits + s.cloud_exits + s.dropped == 64).all()
    for m in ("SEM-2", "MEM-2", "MEM-5"):
        assert s.loc[f"{m} T=0.8", "local_exits"] >= s.loc[f"{m} T=0.05", "local_exits"]
        # whatever went on to the cloud really crossed the edge-cloud link, and nothing else did
        assert (s.loc[f"{m} T=0.05", "bytes_up_to_cloud"] > 0) == (s.loc[f"{m} T=0.05", "cloud_exits"] > 0)
    raw = s.loc["raw offload T=0.0"]
    assert raw.local_exits == 0 and raw.cloud_exits == 64 and raw.bytes_up_to_cloud >= 64 * 64
    assert raw.cloud_latency_ms > 10  # two crossings of the 5 ms metro link at least
    assert "SEM-2 T=0.3 drop=0.9" in s.index
    ed = pd.read_parquet(out.path / "edgent.parquet")
    assert len(ed) == 4 and list(ed.uplink_mbit) == [940.0, 940.0, 0.05, 0.05]
    # at 50 kbit/s no batch can cross to the edge within 40 ms: Edgent keeps the work on the device
    assert (ed[ed.uplink_mbit == 0.05].cut == ed[ed.uplink_mbit == 0.05].exit).all()
    f = pd.read_csv(out.path / "findings.csv")
    assert set(f.result) <= {"held", "did not hold", "measured", "not tested"} and len(f) >= 5
