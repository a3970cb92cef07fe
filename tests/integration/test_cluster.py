"""The same experiment on a multi-node Ray cluster: actors land where the tier resources say."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.config.loader import load_experiment
from testbed.results import load
from testbed.runner import run_experiment

from ..conftest import emulated_cluster
from .test_run import experiment


@pytest.fixture
def ray_cluster(calibration_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    with emulated_cluster(calibration_file, monkeypatch, {"testbed_cloud": 10},
                          [{f"testbed_{tier}": 10} for tier in ("edge", "device")]) as (cluster, (edge, device)):
        yield {"edge": edge, "device": device, "cloud": cluster.head_node.node_id}


def test_tiers_placed_by_custom_resources(tmp_path: Path, ray_cluster: dict[str, str]) -> None:
    exp = load_experiment(experiment(tmp_path, "userspace", "dilation", requests=2))
    out = run_experiment(exp, tmp_path / "results")
    assert out.status == "complete"
    placement = load(out.path).manifest["placement"]
    for node, tier in (("cam0", "device"), ("cam1", "device"), ("edge", "edge"), ("cloud", "cloud")):
        assert placement[node]["ray_node_id"] == ray_cluster[tier], (node, placement[node])
        assert placement[node]["resources_asked"] == {f"testbed_{tier}": 0.001}


SITES = """
name: sites
nodes:
  - {name: dev, tier: device, hardware_class: rpi4b, site: a}
  - {name: edge, tier: edge, hardware_class: edge_server, site: a}
  - {name: cloud, tier: cloud, hardware_class: cloud_gpu, site: b}
links:
  - {ends: [dev, edge], up: {rate: 100mbit, delay: 2ms}}
  - {ends: [edge, cloud], up: {rate: 1mbit, delay: 5ms}}
"""


@pytest.fixture
def two_sites(calibration_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    with emulated_cluster(calibration_file, monkeypatch, {},
                          [{f"testbed_site_{s}": 100} for s in ("a", "b")]) as (_, (a, b)):
        yield {"a": a, "b": b}


@pytest.mark.privileged("kernel links")
def test_sites_pin_actors_and_links_between_them_fall_back_to_userspace(tmp_path: Path,
                                                                          two_sites: dict[str, str]) -> None:
    (tmp_path / "topo.yaml").write_text(SITES)
    (tmp_path / "exp.yaml").write_text("""
name: sites
topology: topo.yaml
workload: {name: inference, params: {model: small_cnn, tiers: [edge, cloud], requests_per_device: 6, warmup: 1,
  input_dtype: float32}}
backends: {links: kernel, compute: none}
""")
    out = run_experiment(load_experiment(tmp_path / "exp.yaml"), tmp_path / "results")
    assert out.status == "complete"
    assert not [w for w in out.warnings if "nice" in w], out.warnings  # the cluster's workers run at nice 0
    m = load(out.path).manifest
    for node, site in (("dev", "a"), ("edge", "a"), ("cloud", "b")):
        assert m["placement"][node]["ray_node_id"] == two_sites[site], (node, m["placement"][node])
        assert m["placement"][node]["resources_asked"] == {f"testbed_site_{site}": 0.001}
    lb = m["backends"]["links_detail"]["link_backends"]
    assert lb["0"].endswith("kernel") and lb["1"].startswith("edge-cloud: userspace")
    # the 1 Mbit/s edge-cloud link is still enforced, now by the device's transport: of a 12 KiB input, what
    # exceeds the bucket's burst (two segments) takes 70 ms+ at 1 Mbit/s
    s = out.summary.set_index("phase")
    assert s.loc["cloud", "latency_p50_ms"] > s.loc["edge", "latency_p50_ms"] + (12 * 1024 - 3028) * 8 / 1e3


def test_missing_site_resource_is_refused(tmp_path: Path, ray_cluster: dict[str, str]) -> None:
    from testbed.errors import ResourceError

    (tmp_path / "topo.yaml").write_text(SITES)
    (tmp_path / "exp.yaml").write_text("""
name: sites
topology: topo.yaml
workload: {name: inference, params: {model: small_cnn, tiers: [edge], requests_per_device: 1}}
backends: {links: userspace, compute: none}
""")
    with pytest.raises(ResourceError, match="testbed_site_a"):
        run_experiment(load_experiment(tmp_path / "exp.yaml"), tmp_path / "results")
