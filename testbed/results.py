"""Run directories: ``results/<experiment>/<YYYYmmdd-HHMMSS>-<run8>/`` and their loader.

A run directory holds ``manifest.json`` (status: running → complete | failed | interrupted),
``topology.resolved.json``, ``spans/part-*.parquet``, ``resources/part-*.parquet``,
``summary.csv``/``summary.json`` and, after ``testbed report``, ``report.html``.

The manifest's ``schema_version`` (``MANIFEST_SCHEMA_VERSION``) says what a run directory holds:

- 1 (no ``schema_version`` key): the manifest may contain ``NaN``; the spans' JSON column is ``attrs``.
- 2: strict JSON (non-finite numbers are ``null``); the spans' column is ``attrs_json`` (``attrs`` is shadowed
  by pandas' ``DataFrame.attrs``); the manifest adds the host's CPU model, governor and load and the catalog
  entries the run used (``catalog``). ``load`` reads both.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.metrics import SPAN_COLUMNS

MANIFEST_SCHEMA_VERSION = 2


@dataclass
class RunResults:
    """A loaded run."""

    path: Path
    manifest: dict[str, Any]
    spans: pd.DataFrame
    resources: pd.DataFrame
    summary: pd.DataFrame

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"


def _read_parts(d: Path, columns: list[str] | None = None) -> pd.DataFrame:
    parts = sorted(d.glob("part-*.parquet")) if d.exists() else []
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def load(path: str | Path) -> RunResults:
    """Load a run directory into DataFrames.

    Raises
    ------
    FileNotFoundError
        If ``path`` has no manifest.json.
    """
    p = Path(path)
    mf = p / "manifest.json"
    if not mf.exists():
        raise FileNotFoundError(f"{p} is not a run directory (no manifest.json)")
    manifest = json.loads(mf.read_text())  # runs before schema 2 may hold NaN, which Python's json reads
    summary = pd.read_csv(p / "summary.csv") if (p / "summary.csv").exists() else pd.DataFrame()
    spans = _read_parts(p / "spans", SPAN_COLUMNS)
    if "attrs" in spans.columns and "attrs_json" not in spans.columns:  # schema 1 named the column "attrs"
        spans = spans.rename(columns={"attrs": "attrs_json"})
    return RunResults(p, manifest, spans, _read_parts(p / "resources"), summary)


def expand_attrs(spans: pd.DataFrame) -> pd.DataFrame:
    """The spans' ``attrs_json`` (one JSON object per span, or empty) as columns, one per key, on the spans'
    index: ``expand_attrs(spans)["status"]``. Keys a span lacks are NaN."""
    if spans.empty or "attrs_json" not in spans:
        return pd.DataFrame(index=spans.index)
    rows = [json.loads(a) if isinstance(a, str) and a else {} for a in spans["attrs_json"]]
    return pd.DataFrame.from_records(rows, index=spans.index)


def fsync_replace(tmp: Path, path: Path) -> None:
    """Make ``tmp`` durable, then move it over ``path`` and make the move durable too: after a crash or a power
    cut the file is either its old or its new self, never a torn or empty one."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_safe(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, ±inf) as ``None``: strict JSON, which ``JSON.parse``, ``jq`` and
    other languages' readers accept (Python's ``json`` writes the non-standard ``NaN`` by default)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as strict JSON (no NaN: see ``json_safe``), durably (``fsync_replace``)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, default=str, allow_nan=False))
    fsync_replace(tmp, path)


def request_table(spans: pd.DataFrame) -> pd.DataFrame:
    """One row per request: end-to-end latency and its breakdown (compute, transfer, queue), bytes, energy."""
    if spans.empty:
        return pd.DataFrame()
    req = spans[spans.kind == "request"].set_index(["phase", "request_id"])
    parts = spans[spans.kind.isin(["compute", "transfer", "queue"]) & (spans.request_id >= 0)]
    agg = parts.pivot_table(index=["phase", "request_id"], columns="kind", values="duration_ms", aggfunc="sum")
    agg = agg.add_suffix("_ms")
    by = parts.groupby(["phase", "request_id"])
    extra = pd.DataFrame({"bytes": by["bytes"].sum(), "energy_j": by["energy_j"].sum()})
    out = req[["node", "duration_ms", "attrs_json"]].rename(columns={"duration_ms": "latency_ms", "node": "device"})
    out = out.join(agg).join(extra)
    out["target"] = out["attrs_json"].map(lambda a: json.loads(a).get("target", "") if a else "")
    out["target_tier"] = out["attrs_json"].map(lambda a: json.loads(a).get("target_tier", "") if a else "")
    out["status"] = out["attrs_json"].map(lambda a: json.loads(a).get("status", "ok") if a else "ok")
    return out.drop(columns=["attrs_json"]).reset_index()


def hop_breakdown(spans: pd.DataFrame) -> pd.DataFrame:
    """Mean ms per request of each hop of its path, per (device, phase).

    Hops: ``uplink`` (transfers leaving the device, link delay included), ``relay`` (between
    servers, e.g. edge → cloud and back), ``queue`` (waiting for a node's message handler or for its one
    compute process, behind other requests) and ``compute`` (wherever they ran), ``downlink`` (the reply
    reaching the device), and ``other`` = end-to-end latency minus those (actor calls, serialisation).
    """
    req = spans[spans.kind == "request"][["phase", "request_id", "node", "duration_ms"]]
    if req.empty:
        return pd.DataFrame()
    req = req.rename(columns={"node": "device", "duration_ms": "latency_ms"})
    parts = spans[spans.kind.isin(["compute", "transfer", "queue"]) & (spans.request_id >= 0)]
    parts = parts.merge(req[["phase", "request_id", "device"]], on=["phase", "request_id"])
    direction = parts.src.eq(parts.device).map({True: "uplink", False: "relay"}).where(
        ~parts.dst.eq(parts.device), "downlink")
    hop = parts.kind.where(parts.kind != "transfer", direction)
    per_req = parts.assign(hop=hop).pivot_table(index=["device", "phase", "request_id"], columns="hop",
                                                values="duration_ms", aggfunc="sum").fillna(0.0)
    per_req = per_req.join(req.set_index(["device", "phase", "request_id"])["latency_ms"])
    cols = [c for c in ("uplink", "relay", "queue", "compute", "downlink") if c in per_req]
    per_req["other"] = (per_req["latency_ms"] - per_req[cols].sum(axis=1)).clip(lower=0.0)
    return per_req.groupby(["device", "phase"])[cols + ["other"]].mean()


def link_bytes(spans: pd.DataFrame, hops: dict[str, list[str]]) -> pd.DataFrame:
    """Bytes per link and direction, from transfer spans and each pair's path (``"a>b" -> [link names]``)."""
    rows: dict[str, int] = {}
    tr = spans[spans.kind == "transfer"]
    for (src, dst), b in tr.groupby(["src", "dst"])["bytes"].sum().items():
        for hop in hops.get(f"{src}>{dst}", []):
            rows[hop] = rows.get(hop, 0) + int(b)
    return pd.DataFrame(sorted(rows.items()), columns=["link", "bytes"])
