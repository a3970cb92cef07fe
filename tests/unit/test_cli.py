"""The command line and the Python API's first contact: version, log level, overrides, several files, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import testbed
from testbed.config.loader import experiment_from_dict, load_experiment, parse_override, read_yaml
from testbed.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo.yaml"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed.cli.app", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_version_log_level_and_public_names() -> None:
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"testbed {testbed.__version__}" != "testbed 0+unknown"
    bad = cli("--log-level", "LOUD", "validate", str(DEMO))
    assert bad.returncode == 2 and "--log-level 'LOUD'" in bad.stderr
    assert cli("--log-level", "debug", "validate", str(DEMO)).returncode == 0
    for name in testbed.__all__:
        assert getattr(testbed, name) is not None, name
    with pytest.raises(AttributeError):
        _ = testbed.no_such_name  # type: ignore[attr-defined]


def test_validate_takes_several_files_sweeps_included_and_speaks_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [1\n")
    r = cli("validate", "--json", str(DEMO), "sweeps/demo_links.yaml", "topologies/minimal.yaml", str(bad))
    assert r.returncode == 2, r.stderr
    rows = json.loads(r.stdout)
    assert [x["ok"] for x in rows] == [True, True, True, False]
    assert rows[0]["kind"] == "experiment" and rows[1] == {"file": "sweeps/demo_links.yaml", "ok": True,
                                                           "kind": "sweep", "runs": 12}
    assert rows[2]["nodes"] == 3 and "not valid YAML" in rows[3]["error"]
    assert not list(Path("/tmp").glob("tb-validate-*"))  # a sweep's points were written to a temporary dir
    plain = cli("validate", "sweeps/demo_links.yaml", "topologies/minimal.yaml")
    assert plain.returncode == 0 and "sweep sweeps/demo_links.yaml — 12 runs" in plain.stdout


def test_overrides_change_one_value_of_either_file() -> None:
    assert parse_override("workload.params.requests_per_device=5") == ("workload.params.requests_per_device", 5)
    assert parse_override("workload.params.tiers=[edge, cloud]") == ("workload.params.tiers", ["edge", "cloud"])
    assert parse_override("topology.links[0].up.rate=10mbit") == ("topology.links[0].up.rate", "10mbit")
    for text, msg in [("noequals", "not path=value"), ("=5", "not path=value"), ("a..b=1", "not a dotted path"),
                      ("a=[1", "not valid YAML"), ("a=*x", "not valid YAML"), ("a=!!python/object:os.system x",
                                                                                 "not valid YAML")]:
        with pytest.raises(ConfigError, match=msg):
            parse_override(text)
    exp = load_experiment(DEMO, overrides={"workload.params.requests_per_device": 3, "seed": 11,
                                           "topology.links[0].link_class": "ethernet",
                                           "topology.nodes[2].hardware_class": "intel_nuc"})
    assert exp.params.requests_per_device == 3 and exp.spec.seed == 11  # type: ignore[attr-defined]
    assert exp.topology.links[0].link_class == "ethernet" and exp.topology.nodes["edge"].hardware.name == "intel_nuc"
    base = load_experiment(DEMO)  # the files are not changed
    assert base.topology.links[0].link_class == "wifi_ac" and base.topology.nodes["edge"].hardware.name != "intel_nuc"
    with pytest.raises(ConfigError) as ei:
        load_experiment(DEMO, overrides={"workload.params.requests_per_device": -1})
    assert "workload.params.requests_per_device" in str(ei.value)
    with pytest.raises(ConfigError, match="does not name a value of the topology file"):
        load_experiment(DEMO, overrides={"topology.links[99].up.rate": "1mbit"})
    with pytest.raises(ConfigError, match="does not name a value of the experiment file"):
        load_experiment(DEMO, overrides={"workload.params.tiers[7]": "edge"})


def test_an_experiment_from_dicts() -> None:
    data = read_yaml(DEMO)
    topo = read_yaml(ROOT / "topologies" / "minimal.yaml")
    data["workload"]["params"] = {"model": "small_cnn", "tiers": ["edge"], "requests_per_device": 2}
    exp = experiment_from_dict(data, topology=topo)
    assert set(exp.topology.nodes) == {"dev", "edge", "cloud"} and exp.source == "<dict>"
    topo["nodes"][0]["hardware_class"] = "rpi9"
    with pytest.raises(ConfigError) as ei:
        experiment_from_dict(data, topology=topo)
    assert "topology" in str(ei.value) and "nodes[0].hardware_class" in str(ei.value)
