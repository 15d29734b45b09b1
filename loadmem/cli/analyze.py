"""(analyze: not implemented yet)"""

from __future__ import annotations

import argparse

from loadmem.errors import LoadmemError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise LoadmemError("loadmem analyze is not implemented yet")
