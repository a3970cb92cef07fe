"""Wireless links that follow a moving device: log-distance path loss with shadowing, SNR to an 802.11
rate step, and distance over time from waypoints or a random-waypoint walk.

The rate model: 802.11n/ac/ax pick the highest modulation-and-coding step whose minimum SNR the link has,
so the usable rate is the class's catalogued rate (what the link gives close to the access point) times
that step's share of the top step's PHY rate. The SNR thresholds are the usual receiver-sensitivity
figures (IEEE 802.11-2020, Table 19-23, converted to SNR over a -90 dBm noise floor); they differ between
chipsets by a few dB. Within 2 dB of a step's threshold, frames are lost (up to 10 % at the threshold);
below the lowest step the device is out of range: 1 % of the lowest step's rate and 30 % loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from testbed.config.models import LinkSpec, MobilitySpec

# (min SNR dB, PHY rate as a share of the top step) per class; n: MCS0-7, ac: MCS0-9, ax: MCS0-11
LADDERS: dict[str, tuple[tuple[float, float], ...]] = {
    "wifi_n": ((5, 6.5), (8, 13), (10, 19.5), (13, 26), (16, 39), (20, 52), (21, 58.5), (23, 65)),
    "wifi_ac": ((5, 6.5), (8, 13), (10, 19.5), (13, 26), (16, 39), (20, 52), (21, 58.5), (23, 65), (28, 78),
                (30, 86.7)),
    "wifi_ax": ((5, 8.6), (8, 17.2), (10, 25.8), (13, 34.4), (16, 51.6), (20, 68.8), (21, 77.4), (23, 86),
                (28, 103.2), (30, 114.7), (33, 129), (35, 143.4)),
}


def rate_and_loss(snr_db: float, wifi: str, top_rate_mbit: float) -> tuple[float, float]:
    """Usable rate (Mbit/s) and loss (%) at ``snr_db`` for class ``wifi`` whose best rate is ``top_rate_mbit``."""
    ladder = LADDERS[wifi]
    top = ladder[-1][1]
    usable = [(thr, phy) for thr, phy in ladder if snr_db >= thr]
    if not usable:
        return top_rate_mbit * ladder[0][1] / top * 0.01, 30.0
    thr, phy = usable[-1]
    margin = snr_db - thr
    loss = 0.0 if margin >= 2 else 10.0 * (2 - margin) / 2
    return top_rate_mbit * phy / top, loss


def walk(spec: MobilitySpec, rng: np.random.Generator) -> list[tuple[float, float]]:
    """(t_s, distance_m) knots of the device's path."""
    if spec.waypoints is not None:
        return [(float(t), float(d)) for t, d in spec.waypoints]
    rw = spec.random_waypoint
    assert rw is not None
    t, d = 0.0, float(rng.uniform(rw.min_distance_m, rw.max_distance_m))
    knots = [(t, d)]
    while t < rw.duration_s:
        nxt = float(rng.uniform(rw.min_distance_m, rw.max_distance_m))
        t += abs(nxt - d) / float(rng.uniform(*rw.speed_mps))
        d = nxt
        knots.append((t, d))
        if rw.pause_s:
            t += rw.pause_s
            knots.append((t, d))
    return knots


def distance_at(knots: list[tuple[float, float]], t: float) -> float:
    if t <= knots[0][0]:
        return knots[0][1]
    for (t0, d0), (t1, d1) in zip(knots, knots[1:], strict=False):
        if t0 <= t <= t1:
            return d0 if t1 == t0 else d0 + (d1 - d0) * (t - t0) / (t1 - t0)
    return knots[-1][1]


@dataclass
class Sample:
    t_s: float
    distance_m: float
    snr_db: float
    rate_mbit: float
    loss_pct: float


def trajectory(spec: MobilitySpec, top_rate_mbit: float, seed: int, wifi: str | None = None,
               until_s: float = math.inf, max_samples: int | None = None) -> list[Sample]:
    """The link's state every ``step_s`` along the device's path (seeded: the same seed, the same run), up to
    ``until_s``. ValueError if that is more than ``max_samples`` samples (checked before any is made)."""
    rng = np.random.default_rng(seed)
    knots = walk(spec, rng)
    end = min(knots[-1][0], until_s)
    n = int(math.floor(end / spec.step_s)) + 1
    if max_samples is not None and n > max_samples:
        raise ValueError(f"{n} samples (every {spec.step_s:g} s for {end:g} s) is over {max_samples}")
    pl = spec.path_loss
    x = 0.0
    out = []
    for k in range(n):
        t = k * spec.step_s
        d = max(distance_at(knots, t), 0.1)
        # AR(1) shadowing with the stationary standard deviation shadowing_db
        x = pl.correlation * x + math.sqrt(1 - pl.correlation ** 2) * float(rng.normal(0, pl.shadowing_db))
        path_loss = pl.pl0_db + 10 * pl.exponent * math.log10(d) + x
        snr = spec.tx_power_dbm - path_loss - spec.noise_dbm
        rate, loss = rate_and_loss(snr, wifi or spec.wifi, top_rate_mbit)
        out.append(Sample(t, d, snr, rate, loss))
    return out


def link_spec(base: LinkSpec, s: Sample) -> LinkSpec:
    return LinkSpec(rate_mbit=max(s.rate_mbit, 0.01), delay_ms=base.delay_ms, jitter_ms=base.jitter_ms,
                    loss_pct=s.loss_pct)
