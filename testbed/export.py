"""``testbed export RUN --format perfetto``: a run's spans as a Chrome trace (JSON) that Perfetto and
``chrome://tracing`` open.

One process track per node, and within it one thread track per kind of span (request, queue, compute, transfer,
scenario, ...). Spans of one kind that overlap at a node (transfers in flight together, requests queued behind
each other) go to numbered lanes of that kind, since a trace's slices on one thread must nest. The spans of one
request are linked by a flow across nodes, in the order they started (device's request, uplink, queue, compute,
downlink), so that clicking a request shows where each of its milliseconds went.

Times are the run's emulated times (the spans' own clock, see docs/design-notes.md §time), in microseconds from
the run's first span. Each slice keeps the span's figures (bytes, energy, CPU and class time, attributes) as args.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.results import json_safe, load

FORMATS = ("perfetto",)
KIND_ORDER = ("request", "queue", "compute", "transfer")  # thread order within a node; other kinds follow


def _lanes(starts: list[int], ends: list[int]) -> list[int]:
    """Greedy interval packing: for spans sorted by start, the lowest lane whose last span has ended."""
    free_at: list[int] = []
    out = []
    for s, e in zip(starts, ends, strict=True):
        lane = next((i for i, t in enumerate(free_at) if t <= s), len(free_at))
        if lane == len(free_at):
            free_at.append(e)
        else:
            free_at[lane] = e
        out.append(lane)
    return out


def _args(row: Any) -> dict[str, Any]:
    a: dict[str, Any] = {"request_id": int(row.request_id), "phase": row.phase, "duration_ms": row.duration_ms}
    for col in ("bytes", "energy_j", "cpu_ms", "class_ms"):
        v = getattr(row, col)
        if isinstance(v, float) and math.isnan(v):
            continue
        if v:
            a[col] = v
    if row.src or row.dst:
        a["src"], a["dst"] = row.src, row.dst
    if isinstance(row.attrs_json, str) and row.attrs_json:
        a.update(json.loads(row.attrs_json))
    return a


def perfetto_trace(spans: pd.DataFrame, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Chrome trace-event document (``{"traceEvents": [...]}``) of a run's spans."""
    manifest = manifest or {}
    events: list[dict[str, Any]] = []
    if spans.empty:
        return {"traceEvents": events, "displayTimeUnit": "ms", "metadata": {"run_id": manifest.get("run_id")}}
    sp = spans.sort_values(["start_ns", "end_ns"], kind="stable").reset_index(drop=True)
    t0 = int(sp.start_ns.min())
    nodes = sorted(sp.node.unique())
    kinds = [k for k in KIND_ORDER if k in set(sp.kind)] + sorted(set(sp.kind) - set(KIND_ORDER))
    lane = pd.Series(0, index=sp.index)
    for _, g in sp.groupby(["node", "kind"], sort=False):
        lane.loc[g.index] = _lanes(g.start_ns.astype("int64").tolist(), g.end_ns.astype("int64").tolist())
    # thread ids within a node's pid: numbered in kind order, then by lane
    kind_i = {k: i for i, k in enumerate(kinds)}
    threads = sorted({(n, k, int(ln)) for n, k, ln in zip(sp.node, sp.kind, lane, strict=True)},
                     key=lambda t: (t[0], kind_i[t[1]], t[2]))
    tids = {t: 1 + kind_i[t[1]] * 100_000 + t[2] for t in threads}
    pid = {n: i + 1 for i, n in enumerate(nodes)}
    for n in nodes:
        events.append({"ph": "M", "name": "process_name", "pid": pid[n], "tid": 0, "args": {"name": n}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": pid[n], "tid": 0,
                       "args": {"sort_index": pid[n]}})
    for (n, kind, ln), tid in tids.items():
        events.append({"ph": "M", "name": "thread_name", "pid": pid[n], "tid": tid,
                       "args": {"name": kind if ln == 0 else f"{kind} {ln + 1}"}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": pid[n], "tid": tid, "args": {"sort_index": tid}})
    where: dict[int, tuple[int, int, float]] = {}  # span row -> (pid, tid, ts)
    for row in sp.itertuples():
        tid = tids[(row.node, row.kind, int(lane.loc[row.Index]))]
        ts = (int(row.start_ns) - t0) / 1e3
        dur = max(0.0, (int(row.end_ns) - int(row.start_ns)) / 1e3)
        name = row.kind if row.request_id < 0 else f"{row.kind} #{int(row.request_id)}"
        events.append({"ph": "X", "name": name, "cat": row.kind, "pid": pid[row.node], "tid": tid, "ts": ts,
                       "dur": dur, "args": _args(row)})
        where[int(row.Index)] = (pid[row.node], tid, ts)
    # flows: the spans of each request, in start order; ids are unique per (phase, request)
    req = sp[sp.request_id >= 0]
    for fid, (_, g) in enumerate(req.groupby(["phase", "request_id"], sort=False), start=1):
        if len(g) < 2:
            continue
        idx = g.index.tolist()
        for j, i in enumerate(idx):
            p, t, ts = where[int(i)]
            ph = "s" if j == 0 else "f" if j == len(idx) - 1 else "t"
            ev: dict[str, Any] = {"ph": ph, "id": fid, "name": "request", "cat": "request", "pid": p, "tid": t,
                                  "ts": ts}
            if ph == "f":
                ev["bp"] = "e"  # bind to the slice that encloses ts, not the next one
            events.append(ev)
    meta = {"run_id": manifest.get("run_id"), "experiment": manifest.get("experiment"),
            "clock": "emulated time, microseconds from the run's first span",
            "time_dilation": (manifest.get("time") or {}).get("time_dilation"), "t0_ns": t0}
    return {"traceEvents": events, "displayTimeUnit": "ms", "metadata": meta}


def export_run(run_dir: str | Path, fmt: str = "perfetto", out: str | Path | None = None) -> Path:
    """Write a run's trace; returns its path (default: ``RUN/trace.perfetto.json``).

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` is not a run directory.
    ValueError
        For an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    r = load(run_dir)
    doc = perfetto_trace(r.spans, r.manifest)
    path = Path(out) if out is not None else r.path / "trace.perfetto.json"
    path.write_text(json.dumps(json_safe(doc), separators=(",", ":"), allow_nan=False))
    return path
