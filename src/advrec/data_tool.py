"""advrec-data: the datasets advrec's presets read, where they come from and whether the
files under the data folder are the published ones.

    advrec-data list                  # every dataset, its presets, present or not
    advrec-data where lastfm          # where it comes from, its licence, where it goes
    advrec-data verify [name ...]     # SHA-256 of every file against the registry
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from advrec.data.registry import DATASETS, data_dir, find, placement, verify
from advrec.errors import AdvrecError


def _status(d, root: Path) -> str:
    present = [(root / d.folder / rel).is_file() for rel in d.files]
    if all(present):
        return "present"
    return "missing" if not any(present) else f"{sum(present)} of {len(present)} files"


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="advrec-data", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["list", "where", "verify"])
    parser.add_argument("names", nargs="*", help="datasets or data presets (default: all)")
    parser.add_argument("--data-dir", type=Path, help="default: $ADVREC_DATA_DIR, else ./data")
    args = parser.parse_args(argv)
    root = args.data_dir or data_dir()
    chosen = [find(n) for n in args.names] if args.names else list(DATASETS.values())
    if args.command == "list":
        print(f"data folder: {root}")
        for d in chosen:
            presets = ", ".join(f"data={p}" for p in d.presets)
            print(f"{d.folder:<26} {_status(d, root):<14} {presets}")
        return 0
    if args.command == "where":
        for d in chosen:
            print(f"{d.folder}\n  {placement(d, root)}\n  paper: {d.paper}\n  licence: {d.licence}")
        return 0
    bad = 0
    for d in chosen:
        if args.names == [] and _status(d, root) == "missing":
            print(f"{d.folder}: not placed (advrec-data where {d.folder})")
            continue
        for rel, status in verify(d, root):
            bad += status.startswith(("MISSING", "CHECKSUM"))
            print(f"{d.folder}/{rel}: {status}")
    return 1 if bad else 0


def main() -> None:
    try:
        sys.exit(run())
    except AdvrecError as e:
        print(f"advrec-data: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
