"""Parsing of human unit strings ("20ms", "10mbit", "512MiB"): the only place units are converted.

Rates are decimal (1 mbit = 10^6 bit/s, as tc and iperf use); sizes accept both decimal (MB) and
binary (MiB) suffixes; times resolve to milliseconds.
"""

from __future__ import annotations

import re

_NUM = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

_RATE_UNITS = {
    "bit": 1e-6, "bps": 1e-6,
    "kbit": 1e-3, "kbps": 1e-3,
    "mbit": 1.0, "mbps": 1.0,
    "gbit": 1e3, "gbps": 1e3,
}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "min": 60e3}
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}


def _split(text: str, kind: str, units: dict[str, float] | dict[str, int]) -> tuple[float, str]:
    m = re.fullmatch(_NUM + r"\s*([a-zA-Z]+)", text.strip())
    if not m:
        raise ValueError(
            f"{kind} {text!r} needs a number and a unit, e.g. " + ", ".join(repr("10" + u) for u in list(units)[:4])
        )
    value, unit = float(m.group(1)), m.group(2).lower()
    if unit not in units:
        raise ValueError(f"unknown {kind} unit {m.group(2)!r} in {text!r}; known: {', '.join(units)}")
    return value, unit


def parse_rate_mbit(value: str | int | float) -> float:
    """Parse a link rate into Mbit/s.

    Parameters
    ----------
    value:
        A string with a unit ("10mbit", "500kbit", "1gbit", "25Mbps"). Bare numbers are rejected,
        because "10" could mean bit/s or Mbit/s.

    Raises
    ------
    ValueError
        For unit-less, negative, zero or malformed values.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"rate {value!r} has no unit; write e.g. '{value}mbit' (or use the field rate_mbit)")
    num, unit = _split(str(value), "rate", _RATE_UNITS)
    rate = num * _RATE_UNITS[unit]
    if rate <= 0:
        raise ValueError(f"rate {value!r} must be positive")
    return rate


def parse_time_ms(value: str | int | float) -> float:
    """Parse a duration ("20ms", "1.5s", "300us") into milliseconds; bare 0 is allowed."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value == 0:
            return 0.0
        raise ValueError(f"time {value!r} has no unit; write e.g. '{value}ms'")
    num, unit = _split(str(value), "time", _TIME_UNITS)
    ms = num * _TIME_UNITS[unit]
    if ms < 0:
        raise ValueError(f"time {value!r} must not be negative")
    return ms


def parse_size_bytes(value: str | int) -> int:
    """Parse a size ("512MiB", "4GB", "64kib") into bytes; a bare int is taken as bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"size {value!r} must not be negative")
        return value
    num, unit = _split(str(value), "size", _SIZE_UNITS)
    return int(num * _SIZE_UNITS[unit])


def format_rate(mbit: float) -> str:
    """Format Mbit/s as the shortest exact tc-style string ("10mbit", "1gbit", "500kbit")."""
    if mbit >= 1000 and (mbit / 1000).is_integer():
        return f"{int(mbit // 1000)}gbit"
    if mbit.is_integer():
        return f"{int(mbit)}mbit"
    return f"{mbit * 1000:g}kbit"
