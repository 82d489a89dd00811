"""The `fp8attn` command. Each subcommand lives beside the code it drives and registers itself
through a `register(subparsers)` function that sets `func` on its parser."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand modules, imported at start-up: keep their top level light (no transformers import).
SUBCOMMAND_MODULES = (
    "fp8attn.analysis.report",
    "fp8attn.integration.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fp8attn", description="FP8 attention toolkit: error reports, model evaluation, calibration")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
