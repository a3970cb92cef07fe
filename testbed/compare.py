"""``testbed compare RUN RUN...``: runs side by side, with what differs between their experiments.

The summaries are joined on the key columns they share (device, phase, variant, ...). Each metric gets one
column per run, and, with two runs, their ratio (second / first). The second table lists every value of the
runs' configurations (experiment, workload parameters, time dilation, seed) that is not the same in all of them,
so that a difference in the figures can be read against a difference in the set-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from testbed.results import load

KEYS = ("device", "phase", "variant", "config", "algorithm", "policy", "model", "tier", "label", "node")
PREFERRED = ("latency_p50_ms", "latency_p95_ms", "latency_mean_ms", "queue_ms", "compute_ms", "transfer_ms",
             "energy_j_per_request", "bytes_per_request", "final_accuracy", "accuracy", "overall_acc",
             "overall_latency_ms", "measured_total_ms", "prediction_error_pct")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, list) and any(isinstance(v, dict | list) for v in d):
        out = {}
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: d}


def _setup(manifest: dict[str, Any]) -> dict[str, Any]:
    """The parts of a manifest that describe what was run (not how long it took)."""
    time = manifest.get("time") or {}
    return _flatten({"experiment": manifest.get("experiment"), "seed": manifest.get("seed"),
                     "config": manifest.get("config", {}), "backends": {k: v for k, v in
                                                                      (manifest.get("backends") or {}).items()
                                                                      if k in ("links", "compute")},
                     "time_dilation": time.get("time_dilation"), "git": (manifest.get("git") or {}).get("revision")})


def labels_for(paths: list[Path]) -> list[str]:
    """Short, distinct names for the runs: their directory names, or A, B, ... where those repeat."""
    names = [p.name for p in paths]
    return names if len(set(names)) == len(names) else [chr(ord("A") + i) for i in range(len(paths))]


def compare(paths: list[str | Path], metrics: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summaries side by side, and the configuration values that differ.

    Raises
    ------
    FileNotFoundError
        If a path is not a run directory.
    ValueError
        Fewer than two runs, or summaries with no metric in common.
    """
    if len(paths) < 2:
        raise ValueError("compare needs at least two run directories")
    runs = [load(p) for p in paths]
    names = labels_for([r.path for r in runs])
    sums = [r.summary for r in runs]
    keys = [k for k in KEYS if all(k in s.columns for s in sums)]
    numeric = [c for c in sums[0].columns if c not in keys and all(c in s.columns for s in sums)
               and all(pd.api.types.is_numeric_dtype(s[c]) and not pd.api.types.is_bool_dtype(s[c]) for s in sums)]
    chosen = metrics or [c for c in PREFERRED if c in numeric] or numeric
    missing = [m for m in chosen if m not in numeric]
    if missing or not chosen:
        raise ValueError(f"no metric {missing or ''} common to every run's summary; common: {', '.join(numeric)}")
    table: pd.DataFrame | None = None
    for name, s in zip(names, sums, strict=True):
        part = s[keys + chosen].rename(columns={m: f"{m} [{name}]" for m in chosen})
        if table is None:
            table = part
        elif keys:
            table = table.merge(part, on=keys, how="outer")
        else:
            table = pd.concat([table.reset_index(drop=True), part.reset_index(drop=True)], axis=1)
    assert table is not None
    if len(runs) == 2:
        for m in chosen:
            a, b = table[f"{m} [{names[0]}]"], table[f"{m} [{names[1]}]"]
            table[f"{m} ratio"] = b / a.where(a != 0)
    table = table[keys + [c for m in chosen for c in table.columns if c.startswith(f"{m} ")]]
    setups = [_setup(r.manifest) for r in runs]
    paths_all = list(dict.fromkeys(k for s in setups for k in s))
    rows = [{"setting": k, **{n: s.get(k) for n, s in zip(names, setups, strict=True)}} for k in paths_all
            if len({repr(s.get(k)) for s in setups}) > 1]
    return table.reset_index(drop=True), pd.DataFrame(rows, columns=["setting", *names])
