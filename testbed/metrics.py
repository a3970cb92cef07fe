"""Spans and resource samples: recorded in actors, drained by the driver, written as Parquet chunks.

A span is one activity (request, compute, transfer, queue, ...) with monotonic start/end (ns,
CLOCK_MONOTONIC, comparable across processes on one host), bytes, energy and attributes.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

SPAN_COLUMNS = ["run_id", "request_id", "phase", "node", "kind", "start_ns", "end_ns", "duration_ms",
                "bytes", "energy_j", "src", "dst", "cpu_ms", "class_ms", "attrs_json"]


def make_span(run_id: str, node: str, kind: str, start_ns: int, end_ns: int, *, request_id: int = -1,
              phase: str = "", nbytes: int = 0, energy_j: float = 0.0, src: str = "", dst: str = "",
              cpu_ms: float = math.nan, class_ms: float = math.nan, **attrs: Any) -> dict[str, Any]:
    """One span as a flat record (the Parquet row)."""
    return {"run_id": run_id, "request_id": int(request_id), "phase": phase, "node": node, "kind": kind,
            "start_ns": int(start_ns), "end_ns": int(end_ns), "duration_ms": (end_ns - start_ns) / 1e6,
            "bytes": int(nbytes), "energy_j": float(energy_j), "src": src, "dst": dst, "cpu_ms": float(cpu_ms),
            "class_ms": float(class_ms), "attrs_json": json.dumps(attrs, default=str) if attrs else ""}


class Buffer:
    """A thread-safe list that the driver drains."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(item)

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self._items = self._items, []
        return out


class SpanBuffer(Buffer):
    """A node actor's spans, with per node the requests its workload began and the request spans it recorded.
    ``drain_counted`` takes both under one lock, so a request is either in the drained spans or still counted as
    begun and unrecorded (in flight), never both or neither."""

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[str, list[int]] = {}

    def begin(self, node: str) -> None:
        with self._lock:
            self._counts.setdefault(node, [0, 0])[0] += 1

    def add(self, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(item)
            if item.get("kind") == "request":
                self._counts.setdefault(str(item.get("node")), [0, 0])[1] += 1

    def drain_counted(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
        """The spans since the last drain, and the counts since the buffer began."""
        with self._lock:
            out, self._items = self._items, []
            counts = {n: {"started": c[0], "recorded": c[1]} for n, c in self._counts.items()}
        return out, counts


class ChunkWriter:
    """Appends records as numbered Parquet files under ``directory`` (a crash keeps earlier chunks)."""

    def __init__(self, directory: Path, columns: list[str] | None = None) -> None:
        self.directory = directory
        self.columns = columns
        self.count = 0
        self.rows = 0

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        import pandas as pd

        self.directory.mkdir(parents=True, exist_ok=True)
        df = pd.DataFrame.from_records(records, columns=self.columns)
        tmp = self.directory / f".part-{self.count:05d}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        from testbed.results import fsync_replace

        fsync_replace(tmp, self.directory / f"part-{self.count:05d}.parquet")
        self.count += 1
        self.rows += len(records)
