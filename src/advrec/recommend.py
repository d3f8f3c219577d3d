"""advrec-recommend: top-K items per user as user_id,item_id,rank,score with raw ids."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import numpy as np
from omegaconf import DictConfig

from advrec.config import CONF_DIR
from advrec.errors import AdvrecError
from advrec.utils.console import console, user_errors

if TYPE_CHECKING:  # imported where used: `--help` answers without torch and Lightning
    import pandas as pd
    import scipy.sparse as sp
    import torch


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


def _new_users(cfg: DictConfig, model, dm) -> tuple[np.ndarray, torch.Tensor | None, sp.csr_matrix]:
    """Raw ids, encoded features and revealed items of the users in `new_users_file` (never
    seen in training): a features row each, and optionally an `items` column of raw item ids
    separated by `;` or spaces (what the user has already: read by models that fold a
    history in, never recommended back)."""
    import scipy.sparse as sp

    from advrec.data.sources import read_table

    name = type(model).__name__
    if not (model.uses_features or model.reads_history):
        raise AdvrecError(
            f"{name} cannot score a user it has never seen (it scores the users it trained); "
            "new users need a model that reads user features (CFGAN with model.condition="
            "features or social, GroupPop, SocialPop, SocialEASE, LoCo) or folds in the items "
            "they list in an 'items' column (EASE, ItemKNN, SLIM, RP3beta, iALS, Mult-VAE, "
            "DiffRec, EASE-GAN, user-based CFGAN)"
        )
    id_column = dm.features_cfg.get("id_column") or "user"
    table = read_table(cfg.new_users_file, dtype={id_column: str, "items": str})
    if id_column not in table.columns:
        raise AdvrecError(
            f"{cfg.new_users_file}: no {id_column!r} column naming the new users; columns "
            f"present: {list(table.columns)}"
        )
    if table.empty:
        raise AdvrecError(f"{cfg.new_users_file} has no rows")
    if "items" not in table.columns and not model.uses_features:
        raise AdvrecError(
            f"{name} scores a user from their items: add an 'items' column to "
            f"{cfg.new_users_file} (raw item ids separated by ';')"
        )
    ids = table[id_column].astype(str)
    repeated = ids[ids.duplicated()].unique().tolist()
    if repeated:
        raise AdvrecError(
            f"{cfg.new_users_file}: user id(s) {repeated[:5]} appear more than once; give "
            "each new user one row"
        )
    known = ids[ids.isin({str(u) for u in dm.data.user_ids})].tolist()
    if known:
        raise AdvrecError(
            f"{cfg.new_users_file}: {len(known)} id(s) already belong to users the model "
            f"was trained with (e.g. {known[:5]}); a new user needs a new id. For known users "
            "use users=[...] or users_file=..., which rank over the items they have not seen"
        )
    history = sp.lil_matrix((len(table), dm.n_items), dtype=np.float32)
    if "items" in table.columns:
        index = {str(v): j for j, v in enumerate(dm.data.item_ids)}
        for r, cell in enumerate(table["items"].fillna("").astype(str)):
            listed = cell.replace(";", " ").split()
            unknown = [t for t in listed if t not in index]
            if unknown:
                raise AdvrecError(
                    f"{cfg.new_users_file}: the items of row {r + 1} name item id(s) "
                    f"{unknown[:5]} the model does not know; list catalogue items only"
                )
            if not listed and not model.uses_features:  # all-zero scores: an arbitrary list
                raise AdvrecError(
                    f"{cfg.new_users_file}: row {r + 1} lists no items, and {name} scores a "
                    "user from their items only; give at least one"
                )
            history[r, [index[t] for t in listed]] = 1.0
        if not model.reads_history:
            console.print(
                f"{name} does not read a user's items: the listed items are only kept out of "
                "the recommendations"
            )
    features = dm.encode_new_users(table) if model.uses_features else None
    return table[id_column].to_numpy(), features, history.tocsr()


def _known(cfg: DictConfig, model, run_cfg: DictConfig) -> tuple:
    """Raw user and item ids, user features and known history (train + validation), from
    the checkpoint itself (no data file needed), or rebuilt from the data for checkpoints
    written before checkpoints stored their data."""
    import torch

    from advrec.data.datamodule import history_from
    from advrec.run.checkpoints import checked_datamodule

    ident = model.data_identity
    if ident and "history_indptr" in ident:
        ids = [
            np.asarray(v.numpy() if torch.is_tensor(v) else v)
            for v in (ident["user_ids"], ident["item_ids"])
        ]
        return ids[0], ids[1], ident.get("user_features"), history_from(ident)
    dm = checked_datamodule(run_cfg, model, cfg.ckpt_path)
    return dm.data.user_ids, dm.data.item_ids, dm.user_features, dm.history("test")


def _check_output(cfg: DictConfig) -> None:
    """Never a directory, never the checkpoint itself, never an existing file by accident."""
    out = Path(cfg.output)
    if out.is_dir():
        raise AdvrecError(f"output={out} is a directory; give a file name, e.g. {out}/recs.csv")
    if out.exists() and out.resolve() == Path(cfg.ckpt_path).resolve():
        raise AdvrecError(f"output={out} is the checkpoint being read; choose another file")
    if out.exists() and not cfg.get("overwrite", False):
        raise AdvrecError(f"output={out} exists; add overwrite=true to replace it")


def _accelerator(device: str) -> dict:
    """Trainer settings for `device`: cpu, cuda, cuda:<index> or mps."""
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise AdvrecError(f"device={device!r}: use cpu, cuda, cuda:<index> or mps")
    accelerator = {"cuda": "gpu"}.get(kind, kind)
    return {"accelerator": accelerator, "devices": [int(index)] if index else 1}


@user_errors
def recommend(cfg: DictConfig) -> pd.DataFrame:
    """Write the top-`k` recommendations of `ckpt_path` to `output` (atomically).

    Known users are ranked over the items they have not seen (train + validation history);
    users in `new_users_file` (a features row each, and the items they have) over the others.
    """
    import pandas as pd

    from advrec.data.batches import eval_loader
    from advrec.run.build import eval_trainer
    from advrec.run.checkpoints import checked_datamodule, load_checkpoint
    from advrec.utils.io import write_csv

    if int(cfg.k) < 1:
        raise AdvrecError(f"k={cfg.k} must be at least 1")
    _check_output(cfg)
    model, run_cfg = load_checkpoint(cfg.ckpt_path, cfg)
    model.to(cfg.device)
    wanted = _wanted_users(cfg)
    if cfg.get("new_users_file") is not None:
        if wanted is not None:
            raise AdvrecError("give known users (users / users_file) or new_users_file, not both")
        dm = checked_datamodule(run_cfg, model, cfg.ckpt_path)  # its feature encoder
        raw_ids, features, history = _new_users(cfg, model, dm)
        item_ids = dm.data.item_ids
        model.prepare_scoring(dm.history("test"))  # what the known users have (friends' items)
        model.scoring_new_users = True
        users = np.arange(len(raw_ids))
    else:
        raw_ids, item_ids, features, history = _known(cfg, model, run_cfg)
        users = np.arange(len(raw_ids)) if wanted is None else _positions(raw_ids, wanted)
        model.prepare_scoring(history)
    model.predict_k = k = min(int(cfg.k), len(item_ids))
    loader = eval_loader(history, None, users, features, int(cfg.batch_size))
    trainer = eval_trainer(cfg, **_accelerator(str(cfg.device)))
    parts = []
    for rec in trainer.predict(model, dataloaders=loader):
        u = rec["users"].cpu().numpy()
        items, scores = rec["items"].cpu().numpy(), rec["scores"].cpu().numpy()
        keep = np.isfinite(scores)  # fewer than k unseen items: no padding with seen ones
        rows = np.repeat(u, k).reshape(len(u), k)
        ranks = np.tile(np.arange(1, k + 1), (len(u), 1))
        parts.append(
            pd.DataFrame(
                {
                    "user_id": raw_ids[rows[keep]],
                    "item_id": item_ids[items[keep]],
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
