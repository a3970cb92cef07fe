"""Seed 003's findings checked on a run, and plots in the manner of its Figs 5-8."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def findings(s: pd.DataFrame) -> pd.DataFrame:
    """Each of the seed's findings as one line: held / did not hold, with the evidence."""
    rows: list[dict[str, Any]] = []
    plain = s[s.drop_threshold.isna() & (s.exit > 0)]
    sem = plain[plain.model.str.startswith("SEM")]
    mem = plain[plain.model.str.startswith("MEM")]

    def add(finding: str, ok: list[bool], evidence: str) -> None:
        if ok:
            rows.append({"finding": finding, "result": "held" if all(ok) else "did not hold",
                         "held_in": f"{sum(ok)}/{len(ok)}", "evidence": evidence})
        else:
            rows.append({"finding": finding, "result": "not tested", "held_in": "0/0", "evidence": evidence})

    pairs = sem.merge(mem, on=["exit", "threshold"], suffixes=("_sem", "_mem"))
    add("SEM >= MEM in local exits at each exit point",
        list(pairs.local_exits_sem >= pairs.local_exits_mem),
        "; ".join(f"k={r.exit} T={r.threshold}: {r.local_exits_sem} vs {r.local_exits_mem}"
                  for r in pairs.itertuples()))
    add("SEM >= MEM in overall accuracy at each exit point",
        list(pairs.overall_acc_sem >= pairs.overall_acc_mem - 1e-9),
        "; ".join(f"k={r.exit} T={r.threshold}: {r.overall_acc_sem:.1f} vs {r.overall_acc_mem:.1f}"
                  for r in pairs.itertuples()))
    more, lower = [], []
    for _, g in plain.groupby("model"):
        g = g.sort_values("threshold")
        if len(g) > 1:
            more.append(bool(np.all(np.diff(g.local_exits.to_numpy()) >= 0)))
            lower.append(bool(np.all(np.diff(g.overall_acc.to_numpy()) <= 1e-9)))
    add("higher T -> more local exits (every model)", more, f"{sum(more)} of {len(more)} models monotone")
    add("higher T -> lower overall accuracy (every model)", lower, f"{sum(lower)} of {len(lower)} models monotone")
    interior, ev = [], []
    for (fam, t), g in plain.assign(fam=plain.model.str[:3]).groupby(["fam", "threshold"]):
        g = g.sort_values("exit")
        if len(g) >= 3:
            k = int(g.exit.iloc[int(np.argmin(g.overall_latency_ms.to_numpy()))])
            interior.append(bool(g.exit.min() < k < g.exit.max()))
            ev.append(f"{fam} T={t}: min at exit {k}")
    add("overall latency has an interior minimum over exit positions", interior, "; ".join(ev))
    raw = s[s.exit == 0]
    if not raw.empty and "bytes_up_to_cloud" in s:
        rb = float(raw.bytes_up_to_cloud.iloc[0])
        r3 = sem[sem.threshold == 0.3] if (sem.threshold == 0.3).any() else sem
        ratios = [rb / b if b else float("inf") for b in r3.bytes_up_to_cloud]
        rows.append({"finding": "communication: raw offload bytes / local-exit bytes (DDNN), SEM at T=0.3",
                     "result": "measured", "held_in": "",
                     "evidence": "; ".join(f"{m}: {x:.2f}x" for m, x in zip(r3.model, ratios, strict=True))})
    return pd.DataFrame(rows)


def figures(run: Any) -> list[tuple[str, Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = run.summary
    if s.empty or "local_exits" not in s.columns:
        return []
    out: list[tuple[str, Any]] = []
    plain = s[s.drop_threshold.isna() & (s.exit > 0)]
    t0 = 0.3 if (plain.threshold == 0.3).any() else float(plain.threshold.iloc[0])
    for fam in ("SEM", "MEM"):
        g = plain[(plain.threshold == t0) & plain.model.str.startswith(fam)].sort_values("exit")
        if g.empty:
            continue
        fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
        ax[0].bar(g.exit, g.local_exits)
        ax[0].set_title("samples exited locally")
        for col in ("edge_acc", "cloud_acc", "overall_acc"):
            ax[1].plot(g.exit, g[col], marker="o", label=col.replace("_acc", ""))
            if f"paper_{col}" in g:
                ax[1].scatter(g.exit, g[f"paper_{col}"], marker="x", color="k")
        ax[1].set_title("accuracy (%) ; x = paper (CIFAR-10)")
        ax[1].legend()
        for col in ("edge_latency_ms", "cloud_latency_ms", "overall_latency_ms"):
            ax[2].plot(g.exit, g[col], marker="o", label=col.replace("_latency_ms", ""))
        ax[2].set_title("latency per sample (ms)")
        ax[2].legend()
        for a in ax:
            a.set_xlabel("exit point")
            a.grid(alpha=0.3)
        out.append((f"Seed 003 Fig. {5 if fam == 'SEM' else 6}: {fam}s at T = {t0}", fig))
        fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
        for t, gt in plain[plain.model.str.startswith(fam)].groupby("threshold"):
            gt = gt.sort_values("exit")
            ax[0].plot(gt.exit, gt.local_exits, marker="o", label=f"T={t}")
            ax[1].plot(gt.exit, gt.overall_acc, marker="o", label=f"T={t}")
            ax[2].plot(gt.exit, gt.overall_latency_ms, marker="o", label=f"T={t}")
        for a, title in zip(ax, ("samples exited locally", "overall accuracy (%)", "overall latency (ms)"),
                            strict=True):
            a.set_title(title)
            a.set_xlabel("exit point")
            a.legend()
            a.grid(alpha=0.3)
        out.append((f"Seed 003 Fig. {7 if fam == 'SEM' else 8}: {fam}s for every exit threshold", fig))
    return out
