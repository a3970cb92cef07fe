"""MoDNN and DeepThings end to end on a 3-device testbed: exact outputs, work stealing, bytes, memory."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from testbed.config.loader import load_experiment
from testbed.runner import run_experiment

TOPO = """
name: three_pis
nodes:
  - {name: gateway, tier: edge, hardware_class: rpi4b}
  - {name: ap, tier: edge, hardware_class: edge_server}
  - {name: d1, tier: device, hardware_class: rpi4b}
  - {name: d2, tier: device, hardware_class: rpi4b}
  - {name: d3, tier: device, hardware_class: rpi4b}
links:
  - {ends: [gateway, ap], up: {rate: 200mbit, delay: 1ms}}
  - {ends: [d1, ap], up: {rate: 200mbit, delay: 1ms}}
  - {ends: [d2, ap], up: {rate: 200mbit, delay: 1ms}}
  - {ends: [d3, ap], up: {rate: 200mbit, delay: 1ms}}
"""


def test_deepthings_and_modnn_on_three_devices(tmp_path: Path, ray_local: None) -> None:
    (tmp_path / "t.yaml").write_text(TOPO)
    (tmp_path / "ftp.yaml").write_text("""
name: ftp
topology: t.yaml
workload: {name: deepthings, params: {model: small_cnn, coordinator: gateway, fused: 8, grids: [[2, 2]],
           devices: [1, 3], frames: 3}}
""")
    out = run_experiment(load_experiment(tmp_path / "ftp.yaml"), tmp_path / "results")
    s = out.summary.set_index("devices")
    assert s.exact.all() and (s.max_abs_diff <= 1e-4).all()
    tiles = json.loads(s.loc[3, "tiles_per_device"])
    assert set(tiles) == {"d1", "d2", "d3"} and sum(tiles.values()) == 3 * 4  # every tile of every frame, once
    assert tiles["d1"] >= 1 and (s.bytes_per_frame > 0).all()
    mem = pd.read_parquet(out.path / "memory.parquet")
    assert len(mem) == 2 and (mem.peak_bytes > 0).all()

    (tmp_path / "modnn.yaml").write_text("""
name: modnn
topology: t.yaml
workload: {name: modnn, params: {model: small_cnn, devices: [1, 3], link_mbit: [50, 500], frames: 2}}
""")
    out = run_experiment(load_experiment(tmp_path / "modnn.yaml"), tmp_path / "results")
    s = out.summary
    assert s.exact.all() and len(s) == 4
    one, three = s[s.devices == 1], s[s.devices == 3]
    assert (three.bytes_per_frame.to_numpy() > one.bytes_per_frame.to_numpy()).all()  # bands crossed the links
    assert set(three.workers.iloc[0].split(",")) == {"d1", "d2", "d3"}
