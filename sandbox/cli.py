"""The ``sandbox`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox", description="The compile sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compile the model zoo through the sandbox and print what happened")
    demo.add_argument("--models", nargs="*", help="zoo entries to run (default: all)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from sandbox.demo import run_demo

        return run_demo(args.models)
    return 2


if __name__ == "__main__":
    sys.exit(main())
