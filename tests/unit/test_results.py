"""Run directories: strict JSON out, old runs still read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from testbed.metrics import make_span
from testbed.results import MANIFEST_SCHEMA_VERSION, expand_attrs, json_safe, load, write_json


def _strict(text: str) -> object:
    def refuse(c: str) -> object:
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(text, parse_constant=refuse)


def test_manifest_json_is_strict(tmp_path: Path) -> None:
    data = {"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": {"d": (2, math.nan)}, "e": "NaN", "f": 1.5}
    write_json(tmp_path / "m.json", data)
    out = _strict((tmp_path / "m.json").read_text())
    assert out == {"a": None, "b": [1.0, None, None], "c": {"d": [2, None]}, "e": "NaN", "f": 1.5}
    assert json_safe(math.nan) is None and json_safe(0.5) == 0.5
    assert not list(tmp_path.glob("*.tmp"))


def test_attrs_json_expands_and_an_old_run_still_loads(tmp_path: Path) -> None:
    new = tmp_path / "new"
    (new / "spans").mkdir(parents=True)
    rows = [make_span("r", "cam0", "request", 0, 10_000_000, request_id=1, status="ok", target="edge"),
            make_span("r", "edge", "compute", 1, 5, request_id=1)]
    pd.DataFrame.from_records(rows).to_parquet(new / "spans" / "part-00000.parquet")
    write_json(new / "manifest.json", {"schema_version": MANIFEST_SCHEMA_VERSION, "x": math.nan})
    r = load(new)
    assert "attrs_json" in r.spans and "attrs" not in r.spans.columns
    ex = expand_attrs(r.spans)
    assert ex.loc[0, "status"] == "ok" and ex.loc[0, "target"] == "edge" and pd.isna(ex.loc[1, "status"])
    assert r.manifest["x"] is None
    # schema 1: NaN in the manifest, the column named "attrs"
    old = tmp_path / "old"
    (old / "spans").mkdir(parents=True)
    pd.DataFrame.from_records(rows).rename(columns={"attrs_json": "attrs"}).to_parquet(
        old / "spans" / "part-00000.parquet")
    (old / "manifest.json").write_text('{"status": "complete", "wall_s": NaN}')
    r1 = load(old)
    assert math.isnan(r1.manifest["wall_s"]) and list(r1.spans.columns) == list(r.spans.columns)
    assert expand_attrs(r1.spans).loc[0, "target"] == "edge"
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nothing")


def _spans() -> pd.DataFrame:
    ms = 1_000_000
    rows = []
    for rid, (dev, t) in enumerate([("cam0", 0), ("cam1", 1)]):  # two requests at one edge, at about one time
        t *= ms
        rows += [make_span("r", dev, "request", t, t + 40 * ms, request_id=rid, phase="edge", target="edge"),
                 make_span("r", "edge", "transfer", t + 1 * ms, t + 5 * ms, request_id=rid, phase="edge", src=dev,
                           dst="edge", nbytes=1000),
                 make_span("r", "edge", "queue", t + 5 * ms, t + 5 * ms + rid * 10 * ms, request_id=rid,
                           phase="edge", at="compute"),
                 make_span("r", "edge", "compute", t + 5 * ms + rid * 10 * ms, t + 15 * ms + rid * 10 * ms,
                           request_id=rid, phase="edge", cpu_ms=9.0),
                 make_span("r", dev, "transfer", t + 30 * ms, t + 39 * ms, request_id=rid, phase="edge", src="edge",
                           dst=dev, nbytes=40)]
    rows.append(make_span("r", "edge", "scenario", 0, 0, event="set"))
    return pd.DataFrame.from_records(rows)


def test_perfetto_trace_has_a_track_per_node_nested_lanes_and_a_flow_per_request(tmp_path: Path) -> None:
    from testbed.export import export_run, perfetto_trace

    doc = perfetto_trace(_spans(), {"run_id": "r", "time": {"time_dilation": 2.0}})
    ev = doc["traceEvents"]
    procs = {e["args"]["name"]: e["pid"] for e in ev if e["name"] == "process_name"}
    assert set(procs) == {"cam0", "cam1", "edge"}
    slices = [e for e in ev if e["ph"] == "X"]
    assert len(slices) == 11 and all(e["dur"] >= 0 and e["ts"] >= 0 for e in slices)
    # slices on one thread never overlap (the two uplinks to the edge overlap in time: two lanes)
    by_thread: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for e in slices:
        by_thread.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for iv in by_thread.values():
        iv.sort()
        assert all(a[1] <= b[0] + 1e-9 for a, b in zip(iv, iv[1:], strict=False)), iv
    names = {e["args"]["name"] for e in ev if e["name"] == "thread_name" and e["pid"] == procs["edge"]}
    assert {"transfer", "transfer 2", "queue", "compute", "scenario"} <= names
    # one flow per request: starts at the device's request, steps through the edge, ends at the downlink
    for fid in (1, 2):
        fl = [e for e in ev if e.get("id") == fid and e["ph"] in "stf"]
        assert [e["ph"] for e in fl] == ["s", "t", "t", "t", "f"] and fl[-1]["bp"] == "e"
        assert fl[0]["pid"] == procs[f"cam{fid - 1}"] and fl[2]["pid"] == procs["edge"]
    comp = next(e for e in slices if e["cat"] == "compute")
    assert comp["args"]["cpu_ms"] == 9.0 and comp["name"] == "compute #0"
    # the file: strict JSON, written into the run directory
    run = tmp_path / "run"
    (run / "spans").mkdir(parents=True)
    _spans().to_parquet(run / "spans" / "part-00000.parquet")
    write_json(run / "manifest.json", {"run_id": "r", "schema_version": MANIFEST_SCHEMA_VERSION})
    path = export_run(run)
    assert path == run / "trace.perfetto.json"
    assert len(_strict(path.read_text())["traceEvents"]) == len(ev)  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown export format"):
        export_run(run, "otlp")


def _run_dir(root: Path, name: str, p50: list[float], requests: int, k: float) -> Path:
    d = root / name
    d.mkdir(parents=True)
    pd.DataFrame({"device": ["cam0", "cam0"], "phase": ["device", "edge"], "latency_p50_ms": p50,
                  "compute_ms": [90.0, 10.0], "fastest": [False, True]}).to_csv(d / "summary.csv", index=False)
    write_json(d / "manifest.json", {"experiment": "demo", "seed": 1, "time": {"time_dilation": k},
                                     "config": {"workload": {"params": {"requests_per_device": requests,
                                                                        "tiers": ["device", "edge"]}}}})
    return d


def test_compare_sets_runs_side_by_side_with_what_differs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from testbed.cli.app import app
    from testbed.compare import compare

    a = _run_dir(tmp_path, "a", [100.0, 40.0], 5, 10.0)
    b = _run_dir(tmp_path, "b", [100.0, 60.0], 3, 10.0)
    table, diff = compare([a, b])
    assert list(table.columns[:2]) == ["device", "phase"]
    edge = table[table.phase == "edge"].iloc[0]
    assert edge["latency_p50_ms [a]"] == 40.0 and edge["latency_p50_ms [b]"] == 60.0
    assert edge["latency_p50_ms ratio"] == pytest.approx(1.5) and "fastest [a]" not in table
    assert diff.to_dict(orient="records") == [
        {"setting": "config.workload.params.requests_per_device", "a": 5, "b": 3}]
    with pytest.raises(ValueError, match="at least two"):
        compare([a])
    with pytest.raises(ValueError, match="no metric"):
        compare([a, b], ["nope"])
    r = CliRunner().invoke(app, ["compare", str(a), str(b), "--json", "--metric", "compute_ms"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["differences"][0]["setting"].endswith("requests_per_device")
    assert set(doc["table"][0]) == {"device", "phase", "compute_ms [a]", "compute_ms [b]", "compute_ms ratio"}
    assert CliRunner().invoke(app, ["compare", str(a), str(tmp_path / "none")]).exit_code == 2


def test_span_buffer_counts_each_request_once_across_concurrent_drains() -> None:
    """A request is either in a drain's spans or still begun-and-unrecorded in its counts, never both: the
    manifest's ``requests.lost`` rests on it."""
    import threading

    from testbed.metrics import SpanBuffer, make_span

    buf = SpanBuffer()
    n = 20000
    stop = threading.Event()
    drained: list[dict[str, object]] = []

    def requests() -> None:
        for i in range(n):
            buf.begin("cam")
            buf.add(make_span("r", "cam", "compute", 0, 1, request_id=i))  # not a request span: not counted
            buf.add(make_span("r", "cam", "request", 0, 1, request_id=i))
        stop.set()

    t = threading.Thread(target=requests)
    t.start()
    checks = 0
    while not stop.is_set() or checks == 0:
        spans, counts = buf.drain_counted()
        drained += spans
        got = sum(1 for s in drained if s["kind"] == "request")
        c = counts.get("cam", {"started": 0, "recorded": 0})
        assert c["recorded"] == got and 0 <= c["started"] - c["recorded"] <= 1
        checks += 1
    t.join()
    spans, counts = buf.drain_counted()
    drained += spans
    assert counts == {"cam": {"started": n, "recorded": n}}
    assert sum(1 for s in drained if s["kind"] == "request") == n
