import pytest

from testbed.config.units import format_rate, parse_rate_mbit, parse_size_bytes, parse_time_ms


@pytest.mark.parametrize("text,mbit", [("10mbit", 10.0), ("500kbit", 0.5), ("1gbit", 1000.0), ("25Mbps", 25.0),
                                       ("1.5mbit", 1.5)])
def test_rates(text: str, mbit: float) -> None:
    assert parse_rate_mbit(text) == pytest.approx(mbit)


@pytest.mark.parametrize("bad", ["10", 10, "-5mbit", "0mbit", "10 furlongs", "fast"])
def test_bad_rates(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_rate_mbit(bad)  # type: ignore[arg-type]


def test_times_and_sizes() -> None:
    assert parse_time_ms("20ms") == 20.0
    assert parse_time_ms("1.5s") == 1500.0
    assert parse_time_ms("300us") == pytest.approx(0.3)
    assert parse_time_ms(0) == 0.0
    with pytest.raises(ValueError):
        parse_time_ms(20)
    assert parse_size_bytes("512MiB") == 512 * 2**20
    assert parse_size_bytes("4GB") == 4 * 10**9
    assert format_rate(1000.0) == "1gbit" and format_rate(10.0) == "10mbit" and format_rate(0.5) == "500kbit"
