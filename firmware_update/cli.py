"""``homewatt-fw``: firmware bundle tooling.

Only ``version`` exists so far; keygen/build/sign/verify/inspect arrive with the signed-bundle
work, and until then the tool says so instead of pretending.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("homewatt")
    except PackageNotFoundError:
        return "unknown (not installed as a distribution)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="homewatt-fw",
        description="Build, sign and inspect homewatt firmware bundles. "
        "Signed bundles are not implemented yet; this release only reports its version.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("version", help="print the homewatt version this tool belongs to")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(_version())
    return 0


if __name__ == "__main__":
    sys.exit(main())
