"""advrec-recommend: top-K items per user as user_id,item_id,rank,score with raw ids."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from advrec.config import CONF_DIR
from advrec.data.datamodule import dense_rows
from advrec.errors import AdvrecError
from advrec.pipeline import build_datamodule, load_checkpoint
from advrec.utils.console import console, user_errors
from advrec.utils.io import write_csv


def _positions(raw_ids: np.ndarray, wanted: list) -> np.ndarray:
    index = {str(u): i for i, u in enumerate(raw_ids)}
    missing = [u for u in wanted if str(u) not in index]
    if missing:
        raise AdvrecError(
            f"{len(missing)} user id(s) not in the training data, e.g. {missing[:5]}; "
            "recommendations need a known user (check the id spelling)."
        )
    return np.array([index[str(u)] for u in wanted], dtype=np.int64)


def _wanted_users(cfg: DictConfig) -> list | None:
    if cfg.users is not None and cfg.users_file is not None:
        raise AdvrecError("give users=[...] or users_file=..., not both")
    if cfg.users_file is not None:
        path = Path(cfg.users_file)
        if not path.is_file():
            raise AdvrecError(f"users_file not found: {path}")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if cfg.users is not None:
        return list(cfg.users) if not isinstance(cfg.users, (str, int)) else [cfg.users]
    return None


@user_errors
def recommend(cfg: DictConfig) -> pd.DataFrame:
    """Write the top-`k` recommendations of `ckpt_path` to `output` (atomically)."""
    if int(cfg.k) < 1:
        raise AdvrecError(f"k={cfg.k} must be at least 1")
    model, run_cfg = load_checkpoint(cfg.ckpt_path, cfg.paths)
    model.to(cfg.device)
    dm = build_datamodule(run_cfg, rows=model.rows)
    wanted = _wanted_users(cfg)
    users = np.arange(dm.n_users) if wanted is None else _positions(dm.data.user_ids, wanted)
    history = dm.history("test")  # everything the user is known to have seen
    model.prepare_scoring(history)
    k = min(int(cfg.k), dm.n_items)
    parts = []
    for lo in range(0, len(users), int(cfg.batch_size)):
        u = users[lo : lo + int(cfg.batch_size)]
        batch = {"users": torch.from_numpy(u), "history": dense_rows(history, u)}
        rec = model.recommend({k_: v.to(model.device) for k_, v in batch.items()}, k)
        items, scores = rec["items"].cpu().numpy(), rec["scores"].cpu().numpy()
        keep = np.isfinite(scores)  # fewer than k unseen items: no padding with seen ones
        rows = np.repeat(u, k).reshape(len(u), k)
        ranks = np.tile(np.arange(1, k + 1), (len(u), 1))
        parts.append(
            pd.DataFrame(
                {
                    "user_id": dm.data.user_ids[rows[keep]],
                    "item_id": dm.data.item_ids[items[keep]],
                    "rank": ranks[keep],
                    "score": scores[keep],
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    write_csv(cfg.output, out)
    console.print(f"wrote {len(out)} recommendations for {len(users)} users to {cfg.output}")
    return out


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="recommend")
def main(cfg: DictConfig) -> None:
    recommend(cfg)


if __name__ == "__main__":
    main()
