"""Scenario timelines: events and traces resolve against the topology; bad input names file, path and row."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.config.loader import load_topology
from testbed.config.models import ScenarioSpec
from testbed.errors import ConfigError
from testbed.scenario import timeline

ROOT = Path(__file__).resolve().parents[2]


def topo():  # type: ignore[no-untyped-def]
    return load_topology(ROOT / "topologies/minimal.yaml")


def test_events_and_traces_in_time_order_with_directions(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("t_s,rate_mbit,delay_ms\n0,10,5\n2,5,\n4,20,8\n")
    spec = ScenarioSpec.model_validate({
        "events": [{"at_s": 1.0, "link": ["edge", "dev"], "up": {"rate": "2mbit"}},  # named backwards
                   {"at_s": 3.0, "link": ["dev", "edge"], "down_for_s": 0.5}],
        "traces": [{"link": ["edge", "cloud"], "file": "t.csv", "direction": "up", "loop": True}],
        "horizon_s": 10})
    acts = timeline(spec, topo(), "exp.yaml", tmp_path)
    assert [a.t_s for a in acts] == sorted(a.t_s for a in acts)
    ev = next(a for a in acts if a.source == "events[0]")
    assert ev.up is None and ev.down is not None and ev.down.rate_mbit == 2  # edge→dev is the link's down
    assert [a.kind for a in acts if a.source == "events[1]"] == ["down", "up"]
    tr = [a for a in acts if a.source == "traces[0]"]
    # a looping trace: rows at 0, 2, 4, then again from 6 (period = last + one step) up to the horizon
    assert [a.t_s for a in tr] == [0, 2, 4, 6, 8, 10]
    assert tr[1].up is not None and tr[1].up.rate_mbit == 5 and tr[1].up.delay_ms is None and tr[1].down is None


@pytest.mark.parametrize("csv_text, needle", [
    ("t,rate\n0,1\n", "columns"),
    ("t_s,rate_mbit\n2,1\n1,5\n", "goes back in time"),
    ("t_s,rate_mbit\n0,-3\n", "line 2"),
    ("t_s,rate_mbit\n", "no rows"),
    ("t_s,rate_mbit\nnan,1\n", "not a time"),
    ("t_s,rate_mbit\n0,inf\n", "line 2"),
])
def test_bad_traces(tmp_path: Path, csv_text: str, needle: str) -> None:
    (tmp_path / "t.csv").write_text(csv_text)
    spec = ScenarioSpec.model_validate({"traces": [{"link": ["dev", "edge"], "file": "t.csv"}]})
    with pytest.raises(ConfigError, match=needle) as ei:
        timeline(spec, topo(), "exp.yaml", tmp_path)
    assert ei.value.path == "scenario.traces[0].file"


def test_bad_events(tmp_path: Path) -> None:
    for ev, needle in [({"at_s": 1, "link": ["dev", "cloud"], "up": {"rate": "1mbit"}}, "no link joins"),
                       ({"at_s": 1, "link": ["dev", "edge"]}, "changes nothing"),
                       ({"at_s": 1, "link": ["dev", "edge"], "down_for_s": 1, "up": {"rate": "1mbit"}}, "not both")]:
        with pytest.raises(ConfigError, match=needle):
            timeline(ScenarioSpec.model_validate({"events": [ev]}), topo(), "exp.yaml", tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        timeline(ScenarioSpec.model_validate({"traces": [{"link": ["dev", "edge"], "file": "nope.csv"}]}), topo(),
                 "exp.yaml", tmp_path)


def test_experiment_file_with_a_bad_scenario_is_refused(tmp_path: Path) -> None:
    from testbed.config.loader import load_experiment

    exp = tmp_path / "e.yaml"
    exp.write_text(f"""
name: e
topology: {ROOT / 'topologies/minimal.yaml'}
workload: {{name: inference}}
scenario: {{events: [{{at_s: 1, link: [dev, nowhere], up: {{rate: 1mbit}}}}]}}
""")
    with pytest.raises(ConfigError, match="no link joins") as ei:
        load_experiment(exp)
    assert ei.value.path == "scenario.events[0].link" and ei.value.file == str(exp)


def test_mobility_rate_falls_with_distance_and_is_seeded(tmp_path: Path) -> None:
    from testbed.config.models import MobilitySpec
    from testbed.mobility import rate_and_loss, trajectory

    # the 802.11ac ladder: at 35 dB the top step, at 6 dB the lowest, below 5 dB out of range
    assert rate_and_loss(35, "wifi_ac", 300) == (300, 0.0)
    r, loss = rate_and_loss(6, "wifi_ac", 300)
    assert r == pytest.approx(300 * 6.5 / 86.7) and loss == pytest.approx(5.0)
    assert rate_and_loss(0, "wifi_ac", 300)[1] == 30.0
    m = MobilitySpec.model_validate({"device": "dev", "ap": "edge", "waypoints": [[0, 2], [10, 120]],
                                     "path_loss": {"exponent": 3.5, "shadowing_db": 0}, "step_s": 1})
    s = trajectory(m, 300, seed=5, wifi="wifi_ac")
    rates = [x.rate_mbit for x in s]
    assert rates[0] == 300 and rates[-1] < 1 and rates == sorted(rates, reverse=True)  # no shadowing: monotone
    noisy = MobilitySpec.model_validate({"device": "dev", "ap": "edge", "random_waypoint": {"duration_s": 30}})
    a, b = trajectory(noisy, 90, seed=1), trajectory(noisy, 90, seed=1)
    assert [x.snr_db for x in a] == [x.snr_db for x in b] != [x.snr_db for x in trajectory(noisy, 90, seed=2)]
    with pytest.raises(ValueError, match="either waypoints or random_waypoint"):
        MobilitySpec.model_validate({"device": "dev", "ap": "edge"})


def test_mobility_becomes_link_actions_on_the_device_link(tmp_path: Path) -> None:
    spec = ScenarioSpec.model_validate({"mobility": [{"device": "dev", "ap": "edge", "waypoints": [[0, 2], [10, 150]],
                                                      "path_loss": {"shadowing_db": 0, "exponent": 3.5}}]})
    acts = timeline(spec, topo(), "exp.yaml", tmp_path, seed=3)
    assert acts and all(a.source == "mobility[0]" and a.link == 0 for a in acts)
    assert acts[0].up is not None and acts[-1].up is not None and acts[-1].up.rate_mbit < acts[0].up.rate_mbit
    assert {"distance_m", "snr_db", "wifi"} <= set(acts[-1].info)
    with pytest.raises(ConfigError, match="no link joins"):
        timeline(ScenarioSpec.model_validate({"mobility": [{"device": "dev", "ap": "cloud",
                                                            "waypoints": [[0, 2]]}]}), topo(), "e.yaml", tmp_path)
    # a microsecond step over a 1000 s walk would be 10^9 samples: refused before one is made
    tiny = {"device": "dev", "ap": "edge", "waypoints": [[0, 2], [1000, 150]], "step_s": 1e-6}
    with pytest.raises(ConfigError, match="over 200000") as ei:
        timeline(ScenarioSpec.model_validate({"mobility": [tiny]}), topo(), "e.yaml", tmp_path)
    assert ei.value.path == "scenario.mobility[0].step_s"


def test_partition_and_cpu_spike_events(tmp_path: Path) -> None:
    spec = ScenarioSpec.model_validate({"events": [
        {"at_s": 2, "partition": ["edge"], "heal_after_s": 1},
        {"at_s": 1, "cpu_spike": "edge", "cores": 2, "duration_s": 3}]})
    acts = timeline(spec, topo(), "exp.yaml", tmp_path)
    downs = [a for a in acts if a.kind == "down"]
    assert sorted(a.link for a in downs) == [0, 1]  # the edge's two links, both cut
    assert sorted(a.t_s for a in acts if a.kind == "up") == [3, 3]
    spike = next(a for a in acts if a.kind == "cpu_spike")
    assert spike.node == "edge" and spike.info == {"cores": 2, "duration_s": 3}
    with pytest.raises(ConfigError, match="cuts no link"):
        timeline(ScenarioSpec.model_validate({"events": [{"at_s": 0, "partition": ["dev", "edge", "cloud"]}]}),
                 topo(), "e.yaml", tmp_path)
    with pytest.raises(ConfigError, match="no node"):
        timeline(ScenarioSpec.model_validate({"events": [{"at_s": 0, "cpu_spike": "x", "duration_s": 1}]}),
                 topo(), "e.yaml", tmp_path)


def test_churn_events(tmp_path: Path) -> None:
    spec = ScenarioSpec.model_validate({"events": [
        {"at_s": 2, "leave": "dev", "rejoin_after_s": 1.5},
        {"at_s": 4, "join": "cloud"}]})  # join alone: absent from the start
    acts = timeline(spec, topo(), "exp.yaml", tmp_path)
    assert [(a.t_s, a.kind, a.node) for a in acts] == [
        (0.0, "leave", "cloud"), (2.0, "leave", "dev"), (3.5, "join", "dev"), (4.0, "join", "cloud")]
    assert acts[0].info == {"absent_from_start": True}
    with pytest.raises(ValueError, match="either leave"):
        ScenarioSpec.model_validate({"events": [{"at_s": 1, "leave": "dev", "join": "dev"}]})
    with pytest.raises(ConfigError, match="no node") as e:
        timeline(ScenarioSpec.model_validate({"events": [{"at_s": 0, "leave": "phone"}]}), topo(), "e.yaml", tmp_path)
    assert e.value.path == "scenario.events[0].leave"


def test_traces_that_would_never_end_are_refused_at_once(tmp_path: Path) -> None:
    """A looping trace whose rows share one time has no period: it used to loop forever in validate, taking
    1.2 GB in 20 s. One with a period too short for its horizon would make millions of changes."""
    (tmp_path / "t.csv").write_text("t_s,rate_mbit\n0,1\n0,2\n")
    with pytest.raises(ConfigError, match="span no time") as ei:
        timeline(ScenarioSpec.model_validate({"traces": [{"link": ["dev", "edge"], "file": "t.csv", "loop": True}]}),
                 topo(), "exp.yaml", tmp_path)
    assert ei.value.path == "scenario.traces[0].loop"
    (tmp_path / "u.csv").write_text("t_s,rate_mbit\n0,1\n0.001,2\n")
    with pytest.raises(ConfigError, match="horizon_s"):
        timeline(ScenarioSpec.model_validate({"traces": [{"link": ["dev", "edge"], "file": "u.csv", "loop": True}],
                                              "horizon_s": 1e6}), topo(), "exp.yaml", tmp_path)
    (tmp_path / "v.csv").write_text("t_s,rate_mbit\n" + "".join(f"{i},1\n" for i in range(100_001)))
    with pytest.raises(ConfigError, match="more than 100000 rows"):
        timeline(ScenarioSpec.model_validate({"traces": [{"link": ["dev", "edge"], "file": "v.csv"}]}), topo(),
                 "exp.yaml", tmp_path)


def test_a_cpu_spike_is_bounded_by_the_file_and_by_the_host_when_it_runs(tmp_path: Path) -> None:
    import os
    from dataclasses import replace

    from pydantic import ValidationError

    from testbed.config.loader import load_experiment
    from testbed.runner import check_host

    n = os.cpu_count() or 1
    ScenarioSpec.model_validate({"events": [{"at_s": 0, "cpu_spike": "edge", "cores": 64, "duration_s": 1}]})
    with pytest.raises(ValidationError, match="over 1024"):
        ScenarioSpec.model_validate({"events": [{"at_s": 0, "cpu_spike": "edge", "cores": 10**9, "duration_s": 1}]})
    exp = load_experiment(ROOT / "experiments" / "demo.yaml")
    for cores, ok in ((n, True), (n + 1, False)):
        sc = ScenarioSpec.model_validate({"events": [{"at_s": 0, "cpu_spike": "edge", "cores": cores,
                                                      "duration_s": 1}]})
        e = replace(exp, spec=exp.spec.model_copy(update={"scenario": sc}))
        if ok:
            check_host(e)
        else:
            with pytest.raises(ConfigError, match=f"more than this host's {n}") as ei:
                check_host(e)
            assert ei.value.path == "scenario.events[0].cores"
