"""Config loading: good files resolve; each kind of bad input gives one message with file, path and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.config.loader import load_catalog, load_experiment, load_topology
from testbed.config.models import Tier
from testbed.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
name: t
nodes:
  - {name: cam, tier: device, hardware_class: rpi4b, count: 3}
  - {name: edge, tier: edge, hardware_class: edge_server}
  - {name: cloud, tier: cloud, hardware_class: cloud_gpu}
links:
  - {ends: [cam, edge], link_class: wifi_ac, up: {rate: 20mbit}}
  - {ends: [edge, cloud], up: {rate: 100mbit, delay: 20ms}, down: {rate: 200mbit, delay: 20ms, jitter: 1ms}}
"""


def write(tmp_path: Path, text: str, name: str = "topo.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_catalog_has_required_classes() -> None:
    cat = load_catalog()
    for hc in ["rpi3b", "rpi4b", "rpi5", "jetson_nano", "jetson_tx2", "intel_nuc", "edge_server", "cloud_gpu"]:
        assert hc in cat.hardware_classes
        assert cat.hardware_classes[hc].sources, f"{hc} has no sources"
    for lc in ["wifi_n", "wifi_ac", "lte", "5g", "ethernet", "wan"]:
        assert lc in cat.link_classes
        assert cat.link_classes[lc].sources
    assert cat.hardware_classes["rpi4b"].reference_latency_ms["resnet18"].value == pytest.approx(100.3)


def test_good_topology_resolves(tmp_path: Path) -> None:
    topo = load_topology(write(tmp_path, GOOD))
    assert sorted(topo.nodes) == ["cam0", "cam1", "cam2", "cloud", "edge"]
    assert topo.pools == {"cam": ("cam0", "cam1", "cam2")}
    assert len(topo.links) == 4
    lk = topo.links[0]
    # link class merged field by field: rate overridden, delay from wifi_ac, down untouched
    assert lk.up.rate_mbit == 20.0 and lk.up.delay_ms == 4.0 and lk.down.rate_mbit == 300.0
    p = topo.path("cam1", "cloud")
    assert [h.dst for h in p.hops] == ["edge", "cloud"]
    assert p.rate_mbit == 20.0 and p.delay_ms == pytest.approx(24.0)
    back = topo.path("cloud", "cam1")
    assert back.rate_mbit == 200.0 and back.jitter_ms == pytest.approx((1 + 3**2) ** 0.5)
    assert topo.nearest("cam2", Tier.CLOUD) == "cloud"
    addrs = [n.address for n in topo.nodes.values()] + [a for lk in topo.links for a in (lk.a_address, lk.b_address)]
    assert len(set(addrs)) == len(addrs)
    assert all(a.startswith("198.1") for a in addrs)


@pytest.mark.parametrize("mutate,path,needle", [
    (lambda s: s.replace("hardware_class: rpi4b", "hardware_class: rpi4"), "nodes[0].hardware_class",
     "Did you mean 'rpi4b'"),
    (lambda s: s.replace("ends: [cam, edge]", "ends: [cam, egde]"), "links[0].ends[1]", "not a node"),
    (lambda s: s.replace("rate: 20mbit", "rate: -20mbit"), "links[0]", "must be positive"),
    (lambda s: s.replace("rate: 20mbit", "rate: 20"), "links[0]", "no unit"),
    (lambda s: s.replace("name: cloud, tier", "name: edge, tier"), "nodes[2].name", "duplicate"),
    (lambda s: s.replace("name: cloud, tier", "name: cloud-1, tier").replace("[edge, cloud]", "[edge, cloud-1]"),
     "nodes[2].name", "not a valid identifier"),
    (lambda s: s.replace("count: 3", "count: 0"), "nodes[0].count", "at least 1"),
    (lambda s: s.replace("count: 3", "count: 100000000"), "nodes[0].count", "over the 1024"),
    (lambda s: s.replace("rate: 20mbit", "rate: 2000gbit"), "links[0]", "less than or equal to 1000000"),
    (lambda s: s.replace("delay: 20ms, jitter", "delay: 100s, jitter"), "links[1]", "less than or equal to 60000"),
    (lambda s: s.replace("rate: 20mbit", "rate_mbit: .nan"), "links[0]", "finite number"),
    (lambda s: s.replace("delay: 20ms, jitter", "delay_ms: .inf, jitter"), "links[1]", "finite number"),
    (lambda s: s.replace("link_class: wifi_ac", "link_class: wifi_acc"), "links[0].link_class", "wifi_ac"),
    (lambda s: s.replace("  - {ends: [edge, cloud]", "  - {ends: [cloud, cloud]"), "links[1]", "itself"),
    (lambda s: s.split("  - {ends: [edge, cloud]")[0], "links", "disconnected"),
    (lambda s: s + "colour: blue\n", "colour", "unknown key"),
])
def test_bad_topologies(tmp_path: Path, mutate, path: str, needle: str) -> None:  # type: ignore[no-untyped-def]
    p = write(tmp_path, mutate(GOOD))
    with pytest.raises(ConfigError) as ei:
        load_topology(p)
    msg = str(ei.value)
    assert str(p) in msg, msg
    assert path in msg, msg
    assert needle in msg, msg
    assert "fix:" in msg, msg


def test_bad_experiment(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    exp = write(tmp_path, "name: e\ntopology: topo.yaml\nworkload: {name: inferense}\n", "exp.yaml")
    with pytest.raises(ConfigError) as ei:
        load_experiment(exp)
    assert "workload.name" in str(ei.value) and "Did you mean 'inference'" in str(ei.value)
    exp.write_text("name: e\ntopology: topo.yaml\nworkload: {name: inference, params: {model: resnet81}}\n")
    with pytest.raises(ConfigError) as ei:
        load_experiment(exp)
    assert "workload.params.model" in str(ei.value) and "resnet18" in str(ei.value)
    exp.write_text("name: e\ntopology: missing.yaml\nworkload: {name: inference}\n")
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(exp)


def test_validate_cli_exit_codes(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace("rpi4b", "rpi4"))
    r = subprocess.run([sys.executable, "-m", "testbed.cli.app", "validate", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "nodes[0].hardware_class" in r.stderr and "Did you mean" in r.stderr
    ok = subprocess.run([sys.executable, "-m", "testbed.cli.app", "validate", str(ROOT / "experiments/demo.yaml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_all_shipped_files_validate() -> None:
    from testbed.config.loader import load_any

    files = sorted((ROOT / "topologies").glob("*.yaml")) + sorted((ROOT / "experiments").glob("*.yaml"))
    assert files
    for f in files:
        load_any(f)


def test_every_shipped_experiment_has_a_reduced_size_that_validates() -> None:
    """``testbed bench experiments`` runs each file at its reduced size: every file has one, each override names a
    value of its file and reaches the validated parameters unchanged, and the result validates."""
    from testbed.config.loader import load_experiment
    from testbed.suites import REDUCED, shipped_experiments

    names = {f.name for f in shipped_experiments()}
    assert names == set(REDUCED), f"add to / remove from REDUCED: {sorted(names ^ set(REDUCED))}"
    for f in shipped_experiments():
        over = REDUCED[f.name]
        if over is None:
            continue
        exp = load_experiment(f, overrides=over)
        for k, v in over.items():
            got = exp.params.model_dump() if k.startswith("workload.params.") else None
            if got is not None:
                for step in k.removeprefix("workload.params.").replace("]", "").replace("[", ".").split("."):
                    got = got[int(step)] if step.isdigit() else got[step]
                assert got == v, (f.name, k, got, v)


def test_schema_export() -> None:
    from testbed.config.models import ExperimentSpec, TopologySpec

    s = TopologySpec.model_json_schema()
    assert "nodes" in s["properties"] and ExperimentSpec.model_json_schema()["properties"]["workload"]


def test_address_pool_must_stay_in_the_benchmarking_range(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + "address_pool: 192.168.1.0/24\n")
    with pytest.raises(ConfigError) as ei:
        load_topology(p)
    assert "address_pool" in str(ei.value) and "198.18.0.0/15" in str(ei.value)
    assert load_topology(write(tmp_path, GOOD + "address_pool: 198.19.0.0/16\n")).nodes["edge"].address.startswith(
        "198.19.")


def test_privileged_backends_refused_without_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from testbed.runner import check_privileges

    write(tmp_path, GOOD)
    exp = load_experiment(write(tmp_path, "name: e\ntopology: topo.yaml\nworkload: {name: inference}\n", "e.yaml"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError) as ei:
        check_privileges(exp, "kernel", "dilation")
    assert "backends.links" in str(ei.value) and "userspace" in str(ei.value)
    with pytest.raises(ConfigError, match="backends.compute"):
        check_privileges(exp, "userspace", "cgroup")
    check_privileges(exp, "userspace", "dilation")


def test_compute_plans_follow_the_catalog(tmp_path: Path) -> None:
    from testbed.calibration import CalibrationStore, plan_compute

    cat = load_catalog()
    store = CalibrationStore(host="test", host_ms={"resnet18": 25.0, "mobilenet_v2": 15.0, "alexnet": 20.0,
                                                   "vgg16": 200.0, "small_cnn": 1.0})
    rpi = plan_compute("d", cat.hardware_classes["rpi4b"], "resnet18", "cgroup", store)
    assert rpi.target_ms == pytest.approx(100.3) and rpi.slowdown == pytest.approx(100.3 / 25.0)
    assert rpi.cpu_cores == pytest.approx(25.0 / 100.3) and not rpi.host_speed
    assert rpi.memory_bytes == 4096 * 2**20 and 2_000 <= rpi.period_us <= 20_000
    store.cgroup_cores["rpi4b/resnet18"] = 0.3
    assert plan_compute("d", cat.hardware_classes["rpi4b"], "resnet18", "cgroup", store).cpu_cores == 0.3
    # a model the class has no figure for: the class's ratio on its other models
    small = plan_compute("d", cat.hardware_classes["rpi4b"], "small_cnn", "dilation", store)
    assert small.target_ms is not None and small.slowdown > 1 and "derived" in small.basis
    # no figure at all, or faster than the host: host speed, flagged
    edge = plan_compute("e", cat.hardware_classes["edge_server"], "resnet18", "cgroup", store)
    cloud = plan_compute("c", cat.hardware_classes["cloud_gpu"], "resnet18", "cgroup", store)
    assert edge.host_speed and edge.cpu_cores is None and cloud.host_speed and cloud.slowdown == 1.0
    assert plan_compute("x", cat.hardware_classes["rpi4b"], None, "cgroup", store).host_speed


def test_hop_breakdown_from_spans() -> None:
    import pandas as pd

    from testbed.metrics import make_span
    from testbed.results import hop_breakdown

    ms = 1_000_000
    spans = pd.DataFrame([
        make_span("r", "cam", "request", 0, 50 * ms, request_id=1, phase="edge"),
        make_span("r", "edge", "transfer", 0, 20 * ms, request_id=1, phase="edge", src="cam", dst="edge"),
        make_span("r", "edge", "queue", 20 * ms, 21 * ms, request_id=1, phase="edge"),
        make_span("r", "edge", "compute", 21 * ms, 41 * ms, request_id=1, phase="edge"),
        make_span("r", "cam", "transfer", 41 * ms, 48 * ms, request_id=1, phase="edge", src="edge", dst="cam"),
    ])
    row = hop_breakdown(spans).loc[("cam", "edge")]
    assert (row.uplink, row.queue, row.compute, row.downlink, row.other) == pytest.approx((20, 1, 20, 7, 2))


@pytest.mark.parametrize("content, needle", [
    (b"name: \xff\xfe\n", "not UTF-8"),
    (("a: " + "[" * 100_000 + "]" * 100_000 + "\n").encode(), "nested more than 40"),  # was a RecursionError
    (b"a: &x [1, 2]\nb: *x\n", "aliases"),  # the billion-laughs shape, at its smallest
    (b"a: " + b"x" * (5 * 2**20) + b"\n", "over the"),
])
def test_malformed_files_get_one_message(tmp_path: Path, content: bytes, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=needle) as ei:
        load_topology(p)
    assert str(p) in str(ei.value) and "fix:" in str(ei.value)
    if "nested" in needle:  # and through the CLI (once: a process costs seconds): one message, exit 2
        r = subprocess.run([sys.executable, "-m", "testbed.cli.app", "validate", str(p)], capture_output=True,
                           text=True, check=False)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stdout + r.stderr, r.stderr
