"""The locustfiles named in a Locust command line (loadmem/load/locust_argv.py): the one
reader behind the default recording name and the messages that name a locustfile."""

from pathlib import Path

import pytest

from loadmem.cli.run import _locustfile_name
from loadmem.load.locust_argv import locustfile_values, locustfiles_in


@pytest.mark.parametrize("argv, values", [
    (["-f", "a.py"], ["a.py"]),
    (["-fa.py", "-u", "3"], ["a.py"]),
    (["--locustfile=a.py,b.py"], ["a.py,b.py"]),
    (["--locustfile", "pkg.mod"], ["pkg.mod"]),
    (["-u", "3", "-H", "http://127.0.0.1:1"], []),
    (["--headless", "-f"], []),
])
def test_values_of_every_spelling(argv, values):
    assert locustfile_values(argv) == values


def test_lists_and_directories_as_locust_reads_them(tmp_path: Path):
    d = tmp_path / "many"
    d.mkdir()
    for name in ("b.py", "a.py", "_helpers.py", "notes.txt"):
        (d / name).write_text("")
    found = locustfiles_in(["-f", f"{d}, one.py"])
    assert found == [str(d / "a.py"), str(d / "b.py"), "one.py"]


def test_the_default_recording_name_is_the_first_locustfile():
    assert _locustfile_name(["-f", "dir/shop.py,other.py"]) == "shop"
    assert _locustfile_name(["-fscenarios/demo.py"]) == "demo"
    assert _locustfile_name(["--locustfile=scenarios/"]) == "scenarios"
    assert _locustfile_name(["-u", "2"]) is None
