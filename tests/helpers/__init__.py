"""Factories and fakes the tests share: entry points run as users run them, tiny data,
quiet Trainers. Fixtures live in conftest.py; test-only callbacks in killers.py; an
independent metric scorer in reference.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("ADVREC_DATA_DIR", REPO / "data"))


def needs_data(*parts: str):
    """Skip (with the reason shown) when a licensed dataset is not under ADVREC_DATA_DIR."""
    path = DATA_DIR.joinpath(*parts)
    return pytest.mark.skipif(
        not path.exists(), reason=f"real data not found: {path} (set ADVREC_DATA_DIR)"
    )


def as_from_a_terminal() -> None:
    """preexec_fn of every entry point the tests start: SIGINT back to its default, so the
    child installs Python's Ctrl-C handler even when pytest itself ignores SIGINT (started as
    `nohup pytest &`, which every child would otherwise inherit)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(
    module: str, *overrides: str, cwd: Path, env: dict | None = None, check=True, timeout=600
):
    """Run an entry point (python -m advrec.<module>) the way a user does."""
    full_env = {**os.environ, **(env or {}), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", f"advrec.{module}", *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=as_from_a_terminal,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def run_recommend(ckpt, out: Path, cwd: Path, *overrides: str, k: int = 20, env=None):
    """advrec-recommend of `ckpt` into `out`, as a user runs it."""
    return run_cli(
        "recommend",
        f"ckpt_path={ckpt}",
        f"k={k}",
        f"output={out}",
        f"hydra.run.dir={cwd / 'recommend'}",
        *overrides,
        cwd=cwd,
        env=env,
    )


def wandb_run_record(run_dir: Path) -> dict:
    """The run record of the offline W&B run under `run_dir`/wandb (its name, group, tags,
    job_type, project and config), read from the run's .wandb file (a LevelDB-style log of
    protobuf records: 32 KiB blocks of chunks with 7-byte headers after a 7-byte file header)."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, block, pos, buf, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B", data[:7]
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the rest of a block too short for a header, or padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # full / first; middle / last
        if kind in (1, 4):
            records.append(buf)
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            run = record.run
            return {
                "name": run.display_name,
                "group": run.run_group,
                "tags": list(run.tags),
                "job_type": run.job_type,
                "project": run.project,
                "config": {u.key: json.loads(u.value_json) for u in run.config.update},
            }
    raise AssertionError(f"no run record in {path}")


def synthetic_dm(n_users: int, n_items: int, n_interactions: int, seed: int = 0, **kw):
    """A set-up DataModule over seeded synthetic data with a 20 % random test holdout."""
    from advrec.data.datamodule import RecDataModule
    from advrec.data.sources import Synthetic

    dm = RecDataModule(
        source=Synthetic(
            n_users=n_users, n_items=n_items, n_interactions=n_interactions, seed=seed
        ),
        split={"method": "random_holdout", "test_fraction": 0.2},
        seed=0,
        **kw,
    )
    dm.setup()
    return dm


def quiet_trainer(**kw):
    """advrec's bare Trainer (no loggers, checkpoints, bars or sanity checks); `kw` win."""
    from advrec.run.build import bare_trainer

    return bare_trainer(**kw)


def ddp_metrics_match_one_process(tmp_path: Path, *overrides: str) -> dict:
    """Trains `overrides` through advrec-train under trainer=ddp_cpu (two processes, uneven
    user shards), evaluates the final checkpoint in one process with advrec-eval and checks
    every test metric agrees; returns the DDP run's metrics.json."""
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    run_cli(
        "train", *overrides, "trainer=ddp_cpu", "logger=csv", f"hydra.run.dir={ddp}", cwd=tmp_path
    )
    m = json.loads((ddp / "metrics.json").read_text())
    run_cli("eval", f"ckpt_path={m['checkpoint']}", f"hydra.run.dir={one}", cwd=tmp_path)
    again = json.loads((one / "metrics.json").read_text())
    tests = [k for k in m if k.startswith("test/")]
    assert len(tests) > 10 and m["refit"] == "train+validation"
    for key in tests:
        assert again[key] == pytest.approx(m[key], abs=1e-6), key
    return m


def planted_blocks_ndcg(make, epochs: int) -> tuple[float, float]:
    """(the model's, TopPop's) test NDCG@5 on planted blocks (tests.test_neighbours.Blocks:
    only a user's own history tells its block); `make(n_users, n_items)` builds the model,
    trained `epochs` epochs."""
    from advrec.data.datamodule import RecDataModule
    from advrec.models.pop import TopPop
    from tests.test_neighbours import Blocks

    dm = RecDataModule(source=Blocks(), split={"method": "user_holdout", "test_fraction": 0.3})
    dm.setup()
    out = []
    for m, n in (
        (make(dm.n_users, dm.n_items), epochs),
        (TopPop(dm.n_users, dm.n_items, ks=(5,)), 1),
    ):
        trainer = quiet_trainer(
            max_epochs=n, limit_train_batches=0 if isinstance(m, TopPop) else None
        )
        trainer.fit(m, datamodule=dm)
        out.append(trainer.test(m, datamodule=dm, verbose=False)[0]["test/ndcg@5"])
    return out[0], out[1]


def one_line_refusal(proc, *words) -> None:
    """The run stopped with exit 2 and one `advrec: error:` line holding `words`."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("advrec: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]


def write_tiny(root: Path) -> tuple[Path, pd.DataFrame]:
    """A predefined train/test pair with string ids under `root`; user u49 has no test item.
    Returns `root` and the test rows."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(50):
        for i in rng.choice(40, size=rng.integers(4, 12), replace=False):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6))))
    df = pd.DataFrame(rows, columns=["user", "item", "rating"]).drop_duplicates(["user", "item"])
    is_test = rng.random(len(df)) < 0.25
    is_test &= df["user"].to_numpy() != "u49"
    df[~is_test].to_csv(root / "t.train", sep=" ", header=False, index=False)
    df[is_test].to_csv(root / "t.test", sep=" ", header=False, index=False)
    return root, df[is_test]


def data_args(root: Path) -> list[str]:
    """Overrides that train on `write_tiny(root)`'s files."""
    return [
        "data=cfgan_ml100k",
        "data.name=tiny",
        f"data.source.train={root / 't.train'}",
        f"data.source.test={root / 't.test'}",
        "logger=csv",
    ]
