"""The sparse data path at ML-20M scale on this machine: synthetic data -> split ->
DataModule -> one CFGAN user-based epoch -> one full evaluation pass. Prints JSON with
wall times and peak RSS after each stage (no users x items matrix is ever dense on the host).
CFGAN uses the authors' settings for their largest data set (ML1M: G 1x300, D 1x250, batch
G 256 / D 512, one pass each, ZP with S = 90); the paper's ML100K batch of 32 would make an
epoch ~22k steps.

    python bench/scale.py                       # ML-20M shape, a whole epoch
    python bench/scale.py --max-steps 500       # time 500 training steps, extrapolate
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import torch

from advrec.data.datamodule import RecDataModule
from advrec.data.sources import Synthetic
from advrec.models.cfgan import CFGAN
from advrec.run.build import bare_trainer


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=138_493)
    ap.add_argument("--items", type=int, default=26_744)
    ap.add_argument("--interactions", type=int, default=20_000_000)
    ap.add_argument("--max-steps", type=int, default=None, help="cap the training epoch")
    ap.add_argument("--eval-batch-size", type=int, default=512)
    ap.add_argument("--skip-train", action="store_true")
    # CFGAN's released settings for its largest data set (ML1M): big batches, one pass each
    ap.add_argument("--g-hidden", type=int, default=300)
    ap.add_argument("--d-hidden", type=int, default=250)
    ap.add_argument("--batch-g", type=int, default=256)
    ap.add_argument("--batch-d", type=int, default=512)
    ap.add_argument("--g-steps", type=int, default=1)
    ap.add_argument("--d-steps", type=int, default=1)
    a = ap.parse_args()
    out: dict = {
        "shape": [a.users, a.items, a.interactions],
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "torch_threads": torch.get_num_threads(),
    }

    t = time.perf_counter()
    source = Synthetic(a.users, a.items, a.interactions, seed=0)
    data = source.load()
    out["generate_s"] = round(time.perf_counter() - t, 2)
    out["nnz"] = data.nnz
    dm = RecDataModule(
        source=_Loaded(data),
        split={"method": "random_holdout"},
        eval_batch_size=a.eval_batch_size,
        seed=0,
    )
    t = time.perf_counter()
    dm.setup()
    out["split_and_setup_s"] = round(time.perf_counter() - t, 2)
    out["peak_rss_gib_after_setup"] = round(peak_rss_gib(), 2)

    model = CFGAN(
        dm.n_users,
        dm.n_items,
        rows="users",
        scheme="ZP",
        s_zr=90,
        s_pm=90,
        g_hidden=[a.g_hidden],
        d_hidden=[a.d_hidden],
        batch_size_g=a.batch_g,
        batch_size_d=a.batch_d,
        g_steps=a.g_steps,
        d_steps=a.d_steps,
    )
    out["cfgan"] = {k: v for k, v in model.hparams.items() if k not in ("n_users", "n_items")}
    steps_per_epoch = len(dm.train_dataloader(model.plan()))
    out["train_steps_per_epoch"] = steps_per_epoch
    trainer = bare_trainer(
        max_epochs=1, limit_val_batches=0, limit_train_batches=a.max_steps or 1.0
    )
    if not a.skip_train:
        t = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        train_s = time.perf_counter() - t
        steps = a.max_steps or steps_per_epoch
        out["train_steps_timed"] = steps
        out["train_s"] = round(train_s, 1)
        out["epoch_s_estimate"] = round(train_s / steps * steps_per_epoch, 1)
        out["peak_rss_gib_after_train"] = round(peak_rss_gib(), 2)
    t = time.perf_counter()
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    out["eval_s"] = round(time.perf_counter() - t, 1)
    out["eval_users"] = int(result["test/n_users"])
    out["eval_users_per_s"] = round(result["test/n_users"] / (time.perf_counter() - t), 1)
    out["peak_rss_gib"] = round(peak_rss_gib(), 2)
    print(json.dumps(out, indent=2))


class _Loaded:
    """Hands already-generated Interactions to the DataModule (a Source with load())."""

    def __init__(self, data):
        self.data = data

    def load(self):
        return self.data


if __name__ == "__main__":
    main()
