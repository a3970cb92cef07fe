"""The mininet-wifi translation (pure: runs everywhere) and the backends' refusals where Mininet is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.config.loader import load_topology
from testbed.config.models import MobilitySpec
from testbed.emulation import mnbackend
from testbed.emulation.mnbackend import MininetNetwork, translate
from testbed.errors import ConfigError, EmulationError

ROOT = Path(__file__).resolve().parents[2]

CAMPUS: dict[str, Any] = {
    "name": "campus",
    "nodes": [{"name": "cam1", "tier": "device", "hardware_class": "rpi4b"},
              {"name": "cam2", "tier": "device", "hardware_class": "jetson_nano"},
              {"name": "phone", "tier": "device", "hardware_class": "rpi4b"},
              {"name": "edge", "tier": "edge", "hardware_class": "edge_server"},
              {"name": "edge2", "tier": "edge", "hardware_class": "intel_nuc"},
              {"name": "cloud", "tier": "cloud", "hardware_class": "cloud_gpu"}],
    "links": [{"ends": ["cam1", "edge"], "link_class": "wifi_ac"},
              {"ends": ["edge", "cam2"], "link_class": "wifi_ac"},   # named edge-first
              {"ends": ["phone", "edge2"], "link_class": "wifi_n"},
              {"ends": ["edge", "cloud"], "link_class": "wan"},
              {"ends": ["edge2", "cloud"], "link_class": "wan"}],
}


def topo(tmp_path: Path, doc: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(doc or CAMPUS))
    return load_topology(p)


def mob(**kw: Any) -> MobilitySpec:
    return MobilitySpec.model_validate({"device": "cam1", "ap": "edge", **kw})


def test_wifi_translation_stations_aps_hosts_and_addresses(tmp_path: Path) -> None:
    t = topo(tmp_path)
    plan = translate(t, "abcdef12", wifi=True)
    names = plan["names"]
    assert {names[n] for n in ("cam1", "cam2", "phone")} == {s["name"] for s in plan["stations"]}
    assert {names[n] for n in ("edge", "edge2", "cloud")} == {h["name"] for h in plan["hosts"]}
    aps = {ap["edge"]: ap for ap in plan["access_points"]}
    assert (aps["edge"]["mode"], aps["edge"]["channel"]) == ("ac", 36)
    assert (aps["edge2"]["mode"], aps["edge2"]["channel"]) == ("n2", 1)  # 802.11n at 2.4 GHz in mininet-wifi
    radio = {r["node"]: r for r in plan["radio"]}
    assert set(radio) == {"cam1", "cam2", "phone"}
    # the station keeps its topology address; the edge holds the other end of each link on its AP port
    lk = t.links[1]  # edge -- cam2: a is the edge
    assert radio["cam2"]["addr_station"] == lk.b_address and radio["cam2"]["addr_edge"] == lk.a_address
    uplinks = {w["b"]: w for w in plan["wired"] if w["index"] is None}
    assert set(uplinks) == {names["edge"], names["edge2"]}
    assert sorted(uplinks[names["edge"]]["addrs_b"]) == sorted([radio["cam1"]["addr_edge"], radio["cam2"]["addr_edge"]])
    # wired links keep their index, addresses and the kernel backend's interface name
    wan = [w for w in plan["wired"] if w["index"] is not None]
    assert [(w["node_a"], w["node_b"], w["final"]) for w in wan] == [("edge", "cloud", "l3"), ("edge2", "cloud", "l4")]
    for w in plan["wired"]:  # created under host-unique names of ours (the leak check sees them), <= 15 chars
        assert w["intf_a"].startswith("tbv") and len(w["intf_a"]) <= 15 and len(w["intf_b"]) <= 15
    for s in plan["stations"]:
        assert len(f"{s['name']}-wlan0") <= 15


def test_wired_translation_has_no_radio(tmp_path: Path) -> None:
    plan = translate(topo(tmp_path), "abcdef12", wifi=False)
    assert plan["mode"] == "wired" and not plan["stations"] and not plan["access_points"] and not plan["radio"]
    assert len(plan["hosts"]) == 6 and len(plan["wired"]) == 5


def test_walks_become_position_tracks_relative_to_the_ap(tmp_path: Path) -> None:
    m = mob(waypoints=[[0, 2], [15, 110], [30, 2]], path_loss={"exponent": 3.5, "shadowing_db": 4}, step_s=0.5)
    plan = translate(topo(tmp_path), "abcdef12", wifi=True, mobility=[m], seed=7)
    ap = next(a for a in plan["access_points"] if a["edge"] == "edge")
    sta = next(s for s in plan["stations"] if s["name"] == plan["names"]["cam1"])
    assert sta["position"] == f"{ap['x'] + 2:.2f},10.0,0" and (sta["mode"], sta["channel"]) == ("ac", 36)
    (track,) = plan["tracks"]
    assert track["station"] == sta["name"] and len(track["samples"]) == 61  # 0..30 s every 0.5 s
    x = {t: float(p.split(",")[0]) - ap["x"] for t, p in track["samples"]}
    assert x[0.0] == pytest.approx(2) and x[15.0] == pytest.approx(110) and x[7.5] == pytest.approx(56)
    assert plan["propagation"] == {"model": "logNormalShadowing", "exp": 3.5, "variance": 4.0}
    # a second AP sits far away: the walk never brings cam1 near it
    others = [a["x"] for a in plan["access_points"] if a["edge"] != "edge"]
    assert all(abs(x - (ap["x"] + 110)) > 500 for x in others)


def test_random_waypoint_is_the_kernel_backends_walk(tmp_path: Path) -> None:
    """The same seed gives the same walk as testbed.mobility (what the kernel backend replays)."""
    import numpy as np

    from testbed.mobility import distance_at, walk

    m = mob(random_waypoint={"min_distance_m": 3, "max_distance_m": 60, "speed_mps": [1, 2], "duration_s": 40},
            path_loss={"shadowing_db": 0}, step_s=1.0)
    plan = translate(topo(tmp_path), "abcdef12", wifi=True, mobility=[m], seed=3)
    ap = next(a for a in plan["access_points"] if a["edge"] == "edge")
    knots = walk(m, np.random.default_rng(3))
    got = [float(p.split(",")[0]) - ap["x"] for _, p in plan["tracks"][0]["samples"]]
    assert got == pytest.approx([max(distance_at(knots, float(k)), 0.1) for k in range(len(got))], abs=0.01)
    assert all(3 - 0.01 <= d <= 60 + 0.01 for d in got[1:])
    assert plan["propagation"]["model"] == "logDistance"


@pytest.mark.parametrize("change, needle", [
    (lambda d: d["links"].append({"ends": ["cam1", "edge2"], "link_class": "wifi_n"}), "two edge nodes"),
    (lambda d: d["links"].__setitem__(1, {"ends": ["edge", "cam2"], "link_class": "wifi_n"}), "mix classes"),
    (lambda d: d["nodes"][0].__setitem__("count", 2), "device pool"),
])
def test_untranslatable_topologies_are_refused(tmp_path: Path, change: Any, needle: str) -> None:
    doc = yaml.safe_load(yaml.safe_dump(CAMPUS))
    change(doc)
    with pytest.raises(ConfigError, match=needle):
        translate(topo(tmp_path, doc), "abcdef12", wifi=True)


def test_mobility_must_follow_a_radio_link(tmp_path: Path) -> None:
    m = MobilitySpec.model_validate({"device": "cam1", "ap": "edge2", "waypoints": [[0, 1], [5, 9]]})
    with pytest.raises(ConfigError, match="not a station of edge2") as e:
        translate(topo(tmp_path), "abcdef12", wifi=True, mobility=[m])
    assert e.value.path == "scenario.mobility[0]"


def test_missing_mininet_wifi_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnbackend, "find_mininet", lambda wifi: (None, "python3 cannot import mn_wifi.net"))
    monkeypatch.setattr(mnbackend.os, "geteuid", lambda: 0)
    with pytest.raises(EmulationError, match="mininet-wifi link backend is not available.*Vagrant") as e:
        MininetNetwork.check_mininet(wifi=True)
    assert "links: kernel" in str(e.value)


def test_doctor_reports_both_mininet_backends() -> None:
    from testbed.doctor import _probe_mininet

    caps = {c.name: c for c in _probe_mininet()}
    assert set(caps) == {"mininet", "mininet-wifi"}
    py, _ = mnbackend.find_mininet(wifi=True)
    hw, _ = mnbackend.hwsim_available()
    assert caps["mininet-wifi"].ok == (py is not None and hw)
    if not caps["mininet-wifi"].ok:
        assert "Vagrant" in caps["mininet-wifi"].detail
