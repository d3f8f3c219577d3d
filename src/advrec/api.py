"""advrec from Python (a notebook, a script): the same runs as the command line.

    from advrec.api import read_report, recommend, train
    run = train(["model=ease", "data=cfgan_ml100k"], run_dir="runs/ease")
    run.metrics["test/ndcg@20"], run.dir, run.per_user()     # metrics.json, per user
    recommend(run.checkpoint, users=[196, 186], k=10)       # raw ids in, raw ids out
    recommend(run.checkpoint, new_users="new.csv", k=10)    # from features / items
    read_report("docs/benchmark_ml100k")                    # report.csv as a DataFrame

`train` runs `advrec-train` in a child process (a run is a process, as on the command line:
seeds, Lightning and Hydra state start clean, and Ctrl-C stops it the same way); its output
goes to this process's stdout. `recommend` runs in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from advrec.errors import AdvrecError

__all__ = ["Run", "read_report", "recommend", "train"]


@dataclass(frozen=True)
class Run:
    """A finished run: its folder and its metrics.json."""

    dir: Path
    metrics: dict

    @property
    def checkpoint(self) -> Path:
        """The tested model (checkpoints/final.ckpt)."""
        return Path(self.metrics["checkpoint"])

    def per_user(self, split: str = "test") -> pd.DataFrame:
        """per_user_<split>.parquet: one row per evaluated user (raw id, every metric@K)."""
        from advrec.metrics.per_user import file_name, read_per_user

        return read_per_user(self.dir / file_name(split))


def train(
    overrides: Sequence[str] = (), run_dir: str | Path | None = None, quiet: bool = False
) -> Run:
    """`advrec-train <overrides>` into `run_dir` (default outputs/api/<time>); returns the
    Run, or raises AdvrecError with the run's own error line."""
    run_dir = Path(run_dir or Path("outputs") / "api" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    if any(str(o).startswith(("hydra.run.dir=", "-m", "--multirun")) for o in overrides):
        raise AdvrecError("advrec.train runs one run into run_dir=...; give no hydra.run.dir or -m")
    cmd = [sys.executable, "-m", "advrec.train", *map(str, overrides), f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    error = None
    for line in proc.stdout:
        if line.startswith("advrec: error:"):
            error = line.strip()[len("advrec: error: ") :]
        if not quiet:
            print(line, end="")
    if proc.wait() != 0:
        raise AdvrecError(error or f"advrec-train exited with status {proc.returncode}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return Run(run_dir.resolve(), metrics)


def recommend(
    checkpoint: str | Path,
    users: Sequence | None = None,
    k: int = 20,
    new_users: str | Path | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Top-`k` items per user (user_id, item_id, rank, score; raw ids), as advrec-recommend:
    `users` (raw ids; None = every known user), or the new users of a features / items file
    (`new_users`, advrec-recommend's new_users_file)."""
    from hydra import compose, initialize_config_dir

    from advrec.config import CONF_DIR
    from advrec.recommend import recommend as run_recommend
    from advrec.utils.console import quiet

    quiet()  # the library noise the command line silences too
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recs.csv"
        overrides = [
            f"ckpt_path={Path(checkpoint).resolve()}",
            f"k={int(k)}",
            f"output={out}",
            f"device={device}",
            f"paths.output_dir={tmp}",  # no Hydra run here to name it
        ]
        if users is not None:
            overrides.append(f"users=[{','.join(json.dumps(str(u)) for u in users)}]")
        if new_users is not None:
            overrides.append(f"new_users_file={Path(new_users).resolve()}")
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("recommend", overrides=overrides)
        # the function under the command line's wrapper: errors raise here, never exit
        return run_recommend.__wrapped__(cfg)


def read_report(path: str | Path) -> pd.DataFrame:
    """An advrec-report folder's table (report.csv) as a DataFrame."""
    path = Path(path)
    csv = path / "report.csv" if path.is_dir() else path
    if not csv.is_file():
        raise AdvrecError(f"{csv} not found: give a folder advrec-report wrote (out=...)")
    return pd.read_csv(csv)
