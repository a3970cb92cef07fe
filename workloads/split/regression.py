"""Per-layer-type latency regression, as Neurosurgeon builds it, for hardware classes not profiled.

For each layer kind (conv, linear, pool, norm, act, other) a non-negative linear model
``ms = a * GFLOP + b * MB_out + c`` is fitted on blocks profiled on a *reference* node. A class that
was not profiled is predicted as the reference prediction times the class's slowdown, the ratio of
its published whole-model latency to the reference's (from the catalog and calibration).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LayerRegression:
    """Per-kind linear latency models."""

    coef: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @staticmethod
    def _x(flops: float, out_bytes: float) -> np.ndarray:
        return np.array([flops / 1e9, out_bytes / 1e6, 1.0])

    def fit(self, rows: Iterable[tuple[str, float, float, float]]) -> LayerRegression:
        """Fit on ``(kind, flops, out_bytes, ms)`` rows; kinds with too few rows fall back to all rows."""
        from scipy.optimize import nnls

        data: dict[str, list[tuple[float, float, float]]] = {}
        for kind, flops, ob, ms in rows:
            data.setdefault(kind, []).append((flops, ob, ms))
        everything = [r for v in data.values() for r in v]
        for kind, vals in [*data.items(), ("*", everything)]:
            use = vals if len(vals) >= 3 else everything
            a = np.stack([self._x(f, b) for f, b, _ in use])
            y = np.array([m for _, _, m in use])
            sol, _ = nnls(a, y)
            self.coef[kind] = (float(sol[0]), float(sol[1]), float(sol[2]))
        return self

    def predict(self, kind: str, flops: float, out_bytes: float, scale: float = 1.0) -> float:
        c = self.coef.get(kind, self.coef["*"])
        return scale * float(np.dot(np.array(c), self._x(flops, out_bytes)))
