"""The same experiment on a multi-node Ray cluster: actors land where the tier resources say."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.config.loader import load_experiment
from testbed.results import load
from testbed.runner import run_experiment

from .test_run import experiment


@pytest.fixture
def ray_cluster(calibration_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("TESTBED_CALIBRATION", str(calibration_file))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "resources": {"testbed_cloud": 10}})
    ids = {}
    for tier in ("edge", "device"):
        node = cluster.add_node(num_cpus=1, resources={f"testbed_{tier}": 10})
        ids[tier] = node.node_id
    ids["cloud"] = cluster.head_node.node_id
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    try:
        yield ids
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_tiers_placed_by_custom_resources(tmp_path: Path, ray_cluster: dict[str, str]) -> None:
    exp = load_experiment(experiment(tmp_path, "userspace", "dilation", requests=2))
    out = run_experiment(exp, tmp_path / "results")
    assert out.status == "complete"
    placement = load(out.path).manifest["placement"]
    for node, tier in (("cam0", "device"), ("cam1", "device"), ("edge", "edge"), ("cloud", "cloud")):
        assert placement[node]["ray_node_id"] == ray_cluster[tier], (node, placement[node])
        assert placement[node]["resources_asked"] == {f"testbed_{tier}": 0.001}
