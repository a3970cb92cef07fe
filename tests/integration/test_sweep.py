"""Sweeps on a 3-node Ray cluster emulated on this machine: 2 points spread over the nodes, a second run
skips them all, and a node removed mid-sweep has its point re-run elsewhere."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import ConfigError
from testbed.sweep import run_sweep

from ..conftest import emulated_cluster
from .test_run import experiment


@pytest.fixture
def cluster3(calibration_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with emulated_cluster(calibration_file, monkeypatch, {}, [{"testbed_sweep": 1}] * 3) as (c, _):
        yield c


def sweep_file(tmp_path: Path, name: str, rates: list[str], requests: list[int], reps: int) -> Path:
    experiment(tmp_path, "userspace", "none", requests=2)
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""
name: {name}
experiment: exp.yaml
grid:
  topology.links[0].up.rate: {json.dumps(rates)}
  workload.params.requests_per_device: {json.dumps(requests)}
  workload.params.input_dtype: [float32]  # 12 KiB frames: the uplink rate shows beyond the bucket's burst
repetitions: {reps}
resources: {{testbed_sweep: 1}}
metrics: [latency_p50_ms]
""")
    return p


def test_sweep_spreads_resumes_and_survives_a_lost_node(tmp_path: Path, cluster3: Any) -> None:
    f = sweep_file(tmp_path, "grid2", ["1mbit", "100mbit"], [2], 1)
    table, root = run_sweep(f, tmp_path / "results")
    points = table.drop_duplicates("point")
    assert len(points) == 2 and (points.status == "complete").all(), points[["point", "status", "error"]]
    assert points.ray_node.nunique() >= 2  # spread over the cluster
    assert (root / "sweep.png").exists() and (root / "sweep.csv").exists()
    # every run's manifest records the values of its point
    one = points.iloc[0]
    man = json.loads((Path(one.run_dir) / "manifest.json").read_text())
    assert man["config"]["workload"]["params"]["requests_per_device"] == int(one["workload.params.requests_per_device"])
    # the device's uplink rate matters: the 1 Mbit/s points are slower
    dev = table[table.phase == "edge"] if "phase" in table else table
    by_rate = dev.groupby("topology.links[0].up.rate").latency_p50_ms.median()
    # what exceeds the burst (12 KiB - 3 KiB) takes 74 ms at 1 Mbit/s and under 1 ms at 100 Mbit/s
    assert by_rate["1mbit"] > by_rate["100mbit"] + 40

    # resume: nothing runs again
    seen: list[str] = []
    table2, _ = run_sweep(f, tmp_path / "results", progress=lambda d, n, label: seen.append(label))
    assert seen == ["2 already done"]  # and no point was run again (the progress would say)
    assert (table2.drop_duplicates("point").run_dir.tolist() == points.run_dir.tolist())

    # a node removed while its point runs: Ray re-runs the point on another node
    f2 = sweep_file(tmp_path, "lossy", ["20mbit"], [6, 7], 1)
    result: dict[str, Any] = {}

    def go() -> None:
        result["table"], result["root"] = run_sweep(f2, tmp_path / "results")

    th = threading.Thread(target=go)
    th.start()
    victim = None
    deadline = time.monotonic() + 120
    nodes = {n.node_id: n for n in cluster3.worker_nodes}
    while victim is None and time.monotonic() < deadline:
        for a in (tmp_path / "results/sweeps/lossy/points").glob("*/attempts.jsonl"):
            first = json.loads(a.read_text().splitlines()[0])["ray_node"]
            if first in nodes:
                victim = (a.parent.name, first)
                break
        time.sleep(0.2)
    assert victim is not None, "no point started"
    # its run has begun (the runner wrote the manifest): the node dies under a run, not before one
    started = tmp_path / f"results/sweeps/lossy/runs/lossy_{victim[0]}"
    while not list(started.glob("*/manifest.json")) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a file the run writes, not a guess at how long it takes
    assert list(started.glob("*/manifest.json")), "the point's run never started"
    cluster3.remove_node(nodes[victim[1]])
    th.join(600)
    t = result["table"].drop_duplicates("point").set_index("point")
    assert (t.status == "complete").all(), t[["status", "error"]]
    tries = [json.loads(x)["ray_node"]
             for x in (result["root"] / "points" / victim[0] / "attempts.jsonl").read_text().splitlines()]
    if t.loc[victim[0], "ray_node"] == victim[1]:
        pytest.fail(f"the point finished on the removed node: {tries}")
    assert tries[0] == victim[1] and tries[-1] != victim[1]


def test_bad_sweep_path_is_refused_before_anything_runs(tmp_path: Path) -> None:
    experiment(tmp_path, "userspace", "none")
    f = tmp_path / "bad.yaml"
    f.write_text("name: bad\nexperiment: exp.yaml\ngrid:\n  topology.links[7].up.rate: [1mbit]\n")
    with pytest.raises(ConfigError) as ei:
        run_sweep(f, tmp_path / "results")
    assert "grid.topology.links[7].up.rate" in str(ei.value) and str(f) in str(ei.value)
    assert not list((tmp_path / "results").glob("sweeps/bad/points/*/point.json"))
    f.write_text("name: bad\nexperiment: exp.yaml\ngrid:\n  workload.params.requets_per_device: [1]\n")
    with pytest.raises(ConfigError, match="requets_per_device"):
        run_sweep(f, tmp_path / "results")
    assert not list((tmp_path / "results").glob("sweeps/bad/**/manifest.json"))  # no run was started
    # the name is a folder under the results root: one that would reach outside it is refused
    f.write_text("name: ../../escaped\nexperiment: exp.yaml\ngrid:\n  workload.params.requests_per_device: [1]\n")
    with pytest.raises(ConfigError, match="not a valid identifier") as ei:
        run_sweep(f, tmp_path / "results")
    assert ei.value.path == "name"
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
