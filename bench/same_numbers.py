"""Numbers unchanged across a refactor: run one battery of short advrec-train runs with a
given source tree, then compare two batteries' metrics.json key by key.

    python bench/same_numbers.py run --out /tmp/before --src /path/to/old/checkout/src
    python bench/same_numbers.py run --out /tmp/after            # the installed advrec
    python bench/same_numbers.py compare /tmp/before/battery.json /tmp/after/battery.json

`run` starts each run as `python -m advrec.train` with PYTHONPATH=<src> (so an old
checkout's code and its conf/ are used; it needs the same packages) in <out>/<name>/ and
writes <out>/battery.json: {name: metrics.json}. `compare` prints JSON: per run, the metric
keys that differ (with both values), the keys only one side has, and whether every shared
metric is equal; it exits 1 when any run differs or failed (as `run` does when a run fails).
Times, paths, dates and versions are not compared. Needs ADVREC_DATA_DIR.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

# ML-100K runs that pass through every layer the refactors touch: closed forms and their
# grids, the GAN layer (CFGAN, IRGAN with its pre-training, GAR), features, cold start, the
# refit.
BATTERY: dict[str, list[str]] = {
    "ease": ["experiment=ease_cfgan_ml100k"],
    "ease_grid": ["data=cfgan_ml100k", "model=ease", "model.search={lam:[100,500,2000]}"],
    "cfgan_5_epochs": [
        "experiment=cfgan_ml100k", "trainer.max_epochs=5", "trainer.check_val_every_n_epoch=1",
    ],
    "irgan_3_epochs_pretrain": [
        "experiment=irgan_ml100k", "trainer.max_epochs=3", "pretrain.trainer.max_epochs=4",
    ],
    "cfgan_features": [
        "experiment=cfgan_features_ml100k", "trainer.max_epochs=5",
        "trainer.check_val_every_n_epoch=1",
    ],
    "grouppop": ["data=ml100k_coldstart", "model=grouppop", "model.search={min_users:[5,20,80]}"],
    "multvae": ["experiment=multvae_ml100k", "trainer.max_epochs=3"],
    "ials": ["experiment=ials_cfgan_ml100k", "trainer.max_epochs=3"],
    "slim": ["experiment=slim_cfgan_ml100k"],
    "easegan": ["experiment=easegan_cfgan_ml100k", "trainer.max_epochs=3"],
    "gar": ["data=ml100k_coldstart", "model=gar", "trainer.max_epochs=4"],
    "dropoutnet": ["data=ml100k_coldstart", "model=dropoutnet", "trainer.max_epochs=4"],
}  # fmt: skip

# metrics.json keys that describe the run, not its numbers
VOLATILE = ("time", "path", "checkpoint", "dir", "date", "version", "git", "host", "rss")


def _volatile(key: str) -> bool:
    return key.endswith("_s") or any(part in key for part in VOLATILE)


def _env(src: str | None) -> dict:
    """The child processes' environment; with `src`, refuses unless that tree's advrec is the
    one they import (a wrong path would silently run the installed advrec: two equal batteries
    from one code)."""
    env = dict(os.environ, WANDB_MODE="disabled")
    if not src:
        return env
    root = Path(src).resolve()
    env["PYTHONPATH"] = str(root)
    probe = [sys.executable, "-c", "import advrec; print(advrec.__file__)"]
    got = subprocess.run(probe, env=env, capture_output=True, text=True).stdout.strip()
    if not (root / "advrec" / "train.py").is_file() or not got.startswith(str(root)):
        sys.exit(
            f"same_numbers: error: --src {src} is not a checkout's src/ holding advrec/ "
            f"(it would import {got or 'nothing'}); pass e.g. <checkout>/src"
        )
    return env


def run_battery(out: Path, src: str | None, seed: int) -> dict:
    env = _env(src)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, overrides in BATTERY.items():
        rundir = (out / name).resolve()
        cmd = [
            sys.executable, "-m", "advrec.train",
            *overrides, f"seed={seed}", f"hydra.run.dir={rundir}",
        ]  # fmt: skip
        start = time.time()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        took = round(time.time() - start, 1)
        (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
        metrics = rundir / "metrics.json"
        if proc.returncode or not metrics.is_file():
            results[name] = {"error": f"exit {proc.returncode}; see {out / name}.log"}
        else:
            results[name] = json.loads(metrics.read_text())
        print(json.dumps({"run": name, "rc": proc.returncode, "seconds": took}), flush=True)
    (out / "battery.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    return results


def _flat(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[f"{prefix}{k}"] = v
    return flat


def compare(a: dict, b: dict) -> dict:
    report = {}
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b or "error" in a[name] or "error" in b[name]:
            report[name] = {"equal": False, "missing_or_failed": [a.get(name), b.get(name)]}
            continue
        fa = {k: v for k, v in _flat(a[name]).items() if not _volatile(k)}
        fb = {k: v for k, v in _flat(b[name]).items() if not _volatile(k)}
        shared = sorted(set(fa) & set(fb))
        differ = {
            k: [fa[k], fb[k]]
            for k in shared
            if not (fa[k] == fb[k] or (math.isnan(fa[k]) and math.isnan(fb[k])))
        }
        report[name] = {
            "equal": bool(shared) and not differ,  # nothing shared is nothing checked
            "shared_keys": len(shared),
            "differ": differ,
            "only_first": sorted(set(fa) - set(fb)),
            "only_second": sorted(set(fb) - set(fa)),
        }
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--src", help="a checkout's src/ to run instead of the installed advrec")
    r.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("compare")
    c.add_argument("first", type=Path)
    c.add_argument("second", type=Path)
    args = p.parse_args()
    if args.cmd == "run":
        results = run_battery(args.out, args.src, args.seed)
        sys.exit(1 if any("error" in r for r in results.values()) else 0)
    batteries = []
    for f in (args.first, args.second):
        try:
            batteries.append(json.loads(f.read_text()))
        except (OSError, ValueError) as e:
            sys.exit(f"same_numbers: error: {f} is not a battery.json ({e}); make one with `run`")
    report = compare(*batteries)
    summary = {"all_equal": all(r["equal"] for r in report.values()), "runs": report}
    print(json.dumps(summary, indent=1))
    sys.exit(0 if summary["all_equal"] else 1)


if __name__ == "__main__":
    main()
