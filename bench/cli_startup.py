"""Wall time of the calls that should answer at once: `--help` and `--cfg job` of each entry
point (median of --repeats runs, each a fresh process). Prints JSON.

    python bench/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CALLS = {
    "advrec-train --help": ["advrec.train", "--help"],
    "advrec-train --cfg job": ["advrec.train", "--cfg", "job"],
    "advrec-eval --help": ["advrec.eval", "--help"],
    "advrec-recommend --help": ["advrec.recommend", "--help"],
    "advrec-report --help": ["advrec.report", "--help"],
}


def timed(argv: list[str], cwd: str) -> float:
    script = shutil.which(
        argv[0].replace("advrec.", "advrec-"), path=os.path.dirname(sys.executable)
    )
    cmd = [script, *argv[1:]] if script else [sys.executable, "-m", *argv]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as cwd:  # nothing written where it is run from
        for name, argv in CALLS.items():
            times = [timed(argv, cwd) for _ in range(args.repeats)]
            out[name] = {
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
            }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
