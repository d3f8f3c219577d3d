"""One CFGAN iZP epoch on ML100K through Lightning vs a plain PyTorch loop of the same math.

Same data, batches (the DataModule's phased sampler: 2 D passes at 64, 4 G passes at 32),
networks, masks and Adam updates; the plain loop only drops Lightning. Prints JSON.

    ADVREC_DATA_DIR=../shared/datasets python bench/train_overhead.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from advrec.data.datamodule import RecDataModule
from advrec.data.sources import Predefined
from advrec.models.cfgan import CFGAN, PM, ZR
from advrec.models.nets import l2
from advrec.models.samplers import HashedNegatives
from advrec.pipeline import bare_trainer


def datamodule(data_dir: Path) -> RecDataModule:
    base = data_dir / "cfgan-splits" / "ML100K" / "ML100K."
    dm = RecDataModule(Predefined(f"{base}train", f"{base}test"), {"method": "predefined"})
    dm.setup()
    return dm


def plain_epoch(model: CFGAN, dm, loader, opt_g, opt_d, epoch: int) -> None:
    h = model.hparams  # negatives=independent: N^PM and N^ZR under their own salts
    negatives = HashedNegatives(h.seed)
    negatives.use(dm.fit_rows_matrix("items"))
    for batch in loader:
        x, ids = batch["x"], batch["ids"]
        fake_mask = x + negatives(ids, x, h.s_pm, PM, epoch).float()
        if batch["phase"] == "D":
            with torch.no_grad():
                fake = model.generator(x) * fake_mask
            real = model.discriminator(torch.cat([x, x], 1))
            fake = model.discriminator(torch.cat([x, fake], 1))
            loss = (
                F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
                + h.reg_d * l2(model.discriminator)
            )
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        else:
            zr_mask = negatives(ids, x, h.s_zr, ZR, epoch).float()
            out = model.generator(x)
            d_fake = model.discriminator(torch.cat([x, out * fake_mask], 1))
            loss = (
                F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
                + h.reg_g * l2(model.generator)
                + h.alpha * (out.pow(2) * zr_mask).sum(1).mean()
            )
            opt_g.zero_grad(set_to_none=True)
            model.discriminator.requires_grad_(False)
            loss.backward()
            model.discriminator.requires_grad_(True)
            opt_g.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--data-dir", default=os.environ.get("ADVREC_DATA_DIR", "data"))
    a = ap.parse_args()
    torch.manual_seed(0)
    dm = datamodule(Path(a.data_dir))

    model = CFGAN(dm.n_users, dm.n_items)
    trainer = bare_trainer(max_epochs=a.epochs, limit_val_batches=0)
    t = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    lightning_s = (time.perf_counter() - t) / a.epochs

    ref = CFGAN(dm.n_users, dm.n_items)
    opt_g, opt_d = ref.configure_optimizers()
    loader = dm.train_dataloader(ref.plan())
    t = time.perf_counter()
    for epoch in range(a.epochs):
        loader.batch_sampler.set_epoch(epoch)
        plain_epoch(ref, dm, loader, opt_g, opt_d, epoch)
    plain_s = (time.perf_counter() - t) / a.epochs

    print(
        json.dumps(
            {
                "model": "CFGAN iZP (ML100K, G 400 / D 125, batch G 32 / D 64, steps G 4 / D 2)",
                "steps_per_epoch": len(loader),
                "epochs_timed": a.epochs,
                "lightning_s_per_epoch": round(lightning_s, 4),
                "plain_s_per_epoch": round(plain_s, 4),
                "ratio": round(lightning_s / plain_s, 3),
                "lightning_epochs_per_s": round(1 / lightning_s, 3),
                "torch_threads": torch.get_num_threads(),
                "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
