"""Choosing the run's time dilation k, and what k does to compute plans (no host measurement: the host's model
times are given, as a calibration cache would hold them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.calibration import CGROUP_MIN_CORES, CalibrationStore, plan_compute
from testbed.config.loader import load_catalog, load_experiment, load_topology
from testbed.dilation import HEADROOM, UTILISATION, choose
from testbed.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def store(**host_ms: float) -> CalibrationStore:
    return CalibrationStore(host="test", host_ms=dict(host_ms))


def topo(tmp_path: Path, nodes: str, links: str) -> object:
    p = tmp_path / "t.yaml"
    p.write_text(f"name: t\nnodes:\n{nodes}\nlinks:\n{links}\n")
    return load_topology(p)


def pair(tmp_path: Path, a: tuple[str, str, str], b: tuple[str, str, str], link_class: str = "wifi_ac") -> object:
    """Two nodes, each (name, tier, hardware class), on one link."""
    nodes = "\n".join(f"  - {{name: {n}, tier: {t}, hardware_class: {c}}}" for n, t, c in (a, b))
    return topo(tmp_path, nodes, f"  - {{ends: [{a[0]}, {b[0]}], link_class: {link_class}}}")


def figure(hardware_class: str, model: str = "resnet18") -> float:
    """The catalog's published latency (ms) of ``model`` on ``hardware_class``."""
    return float(load_catalog().hardware_classes[hardware_class].reference_latency_ms[model].value)


CAM_H200 = (("cam", "device", "rpi4b"), ("cloud", "cloud", "cloud_h200"))


def test_auto_is_set_by_the_fastest_class(tmp_path: Path) -> None:
    t = pair(tmp_path, *CAM_H200)
    ch = choose(t, {"cam": "resnet18", "cloud": "resnet18"}, store(resnet18=75.0), host_cores=2)  # type: ignore[arg-type]
    h200 = figure("cloud_h200")
    assert ch.mode == "auto" and ch.binding == "class speed: cloud"
    assert ch.k >= HEADROOM * 75.0 / h200  # rounded up, never down
    assert ch.k <= HEADROOM * 75.0 / h200 * 1.1
    assert ch.approximated == []


def test_auto_may_run_faster_than_the_world_when_the_host_has_room(tmp_path: Path) -> None:
    t = pair(tmp_path, ("a", "device", "rpi3b"), ("b", "device", "rpi3b"), "wifi_n")
    ch = choose(t, {"a": "resnet18", "b": "resnet18"}, store(resnet18=75.0), host_cores=2)  # type: ignore[arg-type]
    pi3 = figure("rpi3b")
    want = max(HEADROOM * 75.0 / pi3, 2 * 75.0 / pi3 / (UTILISATION * 2))
    assert ch.k < 1.0
    assert want <= ch.k <= want * 1.1


def test_cpu_demand_raises_k_when_many_nodes_compute(tmp_path: Path) -> None:
    nodes = "\n".join(f"  - {{name: d{i}, tier: device, hardware_class: rpi4b}}" for i in range(8))
    links = "\n".join(f"  - {{ends: [d{i}, d{i + 1}], link_class: ethernet}}" for i in range(7))
    t = topo(tmp_path, nodes, links)
    ch = choose(t, {f"d{i}": "resnet18" for i in range(8)}, store(resnet18=75.0), host_cores=2)  # type: ignore[arg-type]
    assert ch.binding == "CPU demand"
    assert ch.k * UTILISATION * 2 >= 8 * 75.0 / 100.3


def test_no_compute_keeps_real_time(tmp_path: Path) -> None:
    t = pair(tmp_path, ("a", "device", "rpi4b"), ("b", "edge", "rpi4b"))
    assert choose(t, {}, store(), host_cores=2).k == 1.0  # type: ignore[arg-type]


def test_beyond_the_bound_refuses_or_approximates(tmp_path: Path) -> None:
    t = pair(tmp_path, *CAM_H200)
    m = {"cam": "resnet18", "cloud": "resnet18"}
    with pytest.raises(ConfigError) as e:
        choose(t, m, store(resnet18=75.0), max_time_dilation=5, host_cores=2, source="x.yaml")  # type: ignore[arg-type]
    assert "max_time_dilation" in str(e.value) and "approximate_classes" in str(e.value) and "cloud" in str(e.value)
    ch = choose(t, m, store(resnet18=75.0), max_time_dilation=5, approximate=True, host_cores=2)  # type: ignore[arg-type]
    assert ch.k == pytest.approx(HEADROOM * 75.0 / 100.3, rel=0.1)  # reaches the Pi, not beyond
    assert ch.approximated == ["cloud"]
    assert any("cloud" in w and "may not reach" in w for w in ch.warnings)


def test_fixed_k_is_kept_and_unreachable_classes_flagged(tmp_path: Path) -> None:
    t = pair(tmp_path, *CAM_H200)
    ch = choose(t, {"cam": "resnet18", "cloud": "resnet18"}, store(resnet18=75.0), 3.0,  # type: ignore[arg-type]
                host_cores=2)
    assert ch.k == 3.0 and ch.mode == "fixed" and ch.approximated == ["cloud"]


def test_plans_scale_with_k_and_small_quotas_use_dilation() -> None:
    hc = load_catalog().hardware_classes["rpi4b"]
    s = store(resnet18=75.0)
    p1 = plan_compute("cam", hc, "resnet18", "cgroup", s, 1.0)
    assert p1.backend == "cgroup" and p1.cpu_cores == pytest.approx(75.0 / 100.3)
    p10 = plan_compute("cam", hc, "resnet18", "cgroup", s, 10.0)
    assert 75.0 / (100.3 * 10) < CGROUP_MIN_CORES
    assert p10.backend == "dilation" and "below" in p10.backend_reason
    assert p10.target_ms == 100.3 and p10.wall_target_ms == pytest.approx(1003.0)
    assert p10.slowdown == p1.slowdown  # emulated ms per host CPU ms does not depend on k
    # a class faster than the host runs at host speed at k = 1, at its own speed once k covers it
    h200 = load_catalog().hardware_classes["cloud_h200"]
    assert plan_compute("c", h200, "resnet18", "dilation", s, 1.0).host_speed
    assert not plan_compute("c", h200, "resnet18", "dilation", s, 80.0).host_speed


@pytest.mark.parametrize("value", ["0", "-2", ".nan", ".inf", "fast", "true"])
def test_bad_time_dilation_is_one_clear_message(tmp_path: Path, value: str) -> None:
    exp = (ROOT / "experiments" / "demo.yaml").read_text().replace("seed: 1", f"seed: 1\ntime_dilation: {value}")
    p = tmp_path / "e.yaml"
    p.write_text(exp.replace("../topologies/", str(ROOT / "topologies") + "/"))
    with pytest.raises(ConfigError) as e:
        load_experiment(p)
    msg = str(e.value)
    assert "time_dilation" in msg and "positive finite number" in msg and str(p) in msg


def test_a_k_no_tbf_can_hold_is_refused_by_validate(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("name: t\nnodes:\n  - {name: a, tier: device, hardware_class: rpi4b}\n"
                                     "  - {name: b, tier: edge, hardware_class: rpi4b}\n"
                                     "links:\n  - {ends: [a, b], up: {rate: 20kbit}, down: {rate: 20kbit}}\n")
    exp = "name: e\ntopology: t.yaml\nworkload: {name: inference, params: {tiers: [device, edge]}}\n"
    (tmp_path / "e.yaml").write_text(exp + "time_dilation: 500\n")
    with pytest.raises(ConfigError) as e:
        load_experiment(tmp_path / "e.yaml")
    msg = str(e.value)
    assert "time_dilation" in msg and "a--b" in msg and "smaller time_dilation" in msg
    (tmp_path / "e.yaml").write_text(exp + "time_dilation: 50\n")
    assert load_experiment(tmp_path / "e.yaml").spec.time_dilation == 50.0


def test_bench_records_are_json_with_numpy_figures() -> None:
    """A bench row may carry numpy scalars (a pandas median, a numpy comparison); its record must still be JSON
    (the demo bench once finished 13 minutes of runs and then failed writing its record)."""
    import json

    import numpy as np

    from testbed.bench import Row, as_records

    rows = [Row("demo", "x", np.float64(101.5), 100.3, "ms", np.float64(1.2), 10.0, "%"),
            Row("demo", "winner", int(np.bool_(True)), 1, "agree", np.int64(0), 0, "")]
    back = json.loads(json.dumps(as_records(rows)))
    assert back[0]["measured"] == 101.5 and back[0]["ok"] is True and back[1]["ok"] is True


def test_a_fixed_k_too_large_for_a_link_is_refused_by_validate(tmp_path: Path) -> None:
    """A fixed k whose wall rate no TBF can hold is refused when the experiment is loaded, naming the link, its
    direction, the file and the fix (the same check runs on auto's k once chosen, before anything is built)."""
    (tmp_path / "t.yaml").write_text("name: t\nnodes:\n  - {name: a, tier: device, hardware_class: rpi4b}\n"
                                     "  - {name: b, tier: edge, hardware_class: rpi4b}\nlinks:\n"
                                     "  - {ends: [a, b], up: {rate: 20kbit}, down: {rate: 10mbit}}\n")
    exp = tmp_path / "e.yaml"
    exp.write_text("name: e\ntopology: t.yaml\n"
                   "workload: {name: inference, params: {model: small_cnn, tiers: [device, edge]}}\n"
                   "time_dilation: 250\n")
    with pytest.raises(ConfigError) as e:
        load_experiment(exp)
    msg = str(e.value)
    assert "(up)" in msg and "time_dilation 250" in msg and str(exp) in msg and "smaller time_dilation" in msg
    exp.write_text(exp.read_text().replace("time_dilation: 250", "time_dilation: 200"))
    assert load_experiment(exp).spec.time_dilation == 200
