import pytest

from loadmem.errors import LoadmemError
from loadmem.units import format_bytes, format_duration, parse_duration, parse_percent, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("0.5s", 0.5), ("5m", 300), ("2h", 7200), ("1h30m", 5400),
     ("250ms", 0.25), ("1d", 86400), (" 10 s ", 10)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "-3s", "5 m 3", "1.2.3s"])
def test_parse_duration_rejects(text):
    with pytest.raises(LoadmemError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "n"),
    [("4096", 4096), ("512M", 512 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29), ("64k", 65536),
     ("1T", 1 << 40), ("10MB", 10 << 20)],
)
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "M", "12Q", "-1G", "1.2.3M"])
def test_parse_size_rejects(text):
    with pytest.raises(LoadmemError):
        parse_size(text)


def test_parse_percent():
    assert parse_percent("10%") == pytest.approx(0.10)
    assert parse_percent("0.25") == pytest.approx(0.25)
    assert parse_percent("5") == pytest.approx(0.05)


def test_format():
    assert format_bytes(331 << 20) == "331 MB"
    assert format_bytes(-(3 << 29), signed=True) == "-1.50 GB"
    assert format_bytes(None) == "n/a"
    assert format_duration(3 * 3600) == "3h00m"
    assert format_duration(125) == "2m05s"
