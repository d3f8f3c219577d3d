"""Seeded, cached train/validation/test splits over one `Interactions` id space.

A split is one label per interaction (0 train, 1 validation, 2 test), so every method shares
the same result type and the same cache file: `<cache_dir>/splits/<key>.npz`, where the key
hashes the data fingerprint and every parameter that changes the labels.

`cold_users` holds out a seeded share of the *users* with their whole history (cold start:
nothing of theirs is trained on); as the validation method it holds out further users. A
predefined split whose validation or test users have no training interaction holds them out
the same way (Heater's Last.fm split).

`reveal=n` (few-shot cold start, the onboarding case): each held-out user shows `n` random
interactions of theirs (at most all but one, so every such user keeps a target). They are
that user's history when the user is scored - masked from the ranking, read by models that
fold a history in - never a target and never trained on while the user is held out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import SHOWN_TEST, SHOWN_VAL, TEST, TRAIN, VAL, Interactions
from advrec.errors import AdvrecError
from advrec.utils.io import write_bytes

log = logging.getLogger(__name__)
METHODS = (
    "random_holdout",
    "user_holdout",
    "leave_one_out",
    "temporal",
    "cold_users",
    "predefined",
)


@dataclass
class Split:
    """Train / validation / test matrices with the same shape as the source matrix."""

    data: Interactions
    folds: np.ndarray  # one label per interaction, aligned with data.matrix.data
    # the folds (TEST, VAL) that hold out users whole (cold_users): those users are no
    # training rows
    whole_users: tuple[int, ...] = ()

    @cached_property
    def _coo(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.coo()  # one expansion serves every part and describe()

    def _part(self, keep: np.ndarray) -> sp.csr_matrix:
        rows, cols = self._coo
        m = sp.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])),
            shape=self.data.matrix.shape,
        )
        m.sort_indices()
        return m

    def fingerprint(self) -> str:
        """A hash of the data and of every interaction's label."""
        h = hashlib.sha256(self.data.fingerprint().encode())
        h.update(np.ascontiguousarray(self.folds, dtype=np.int8).tobytes())
        return h.hexdigest()[:16]

    @property
    def train(self) -> sp.csr_matrix:
        """What a model is fitted on (validation excluded)."""
        return self._part(self.folds == TRAIN)

    @property
    def val(self) -> sp.csr_matrix | None:
        return self._part(self.folds == VAL) if (self.folds == VAL).any() else None

    @property
    def test(self) -> sp.csr_matrix:
        return self._part(self.folds == TEST)

    @property
    def train_full(self) -> sp.csr_matrix:
        """Train plus validation (with what validation users reveal): what a model is refit on."""
        return self._part(np.isin(self.folds, (TRAIN, VAL, SHOWN_VAL)))

    @property
    def val_history(self) -> sp.csr_matrix:
        """The known history when validation is scored: train plus what validation users reveal."""
        return self._part(np.isin(self.folds, (TRAIN, SHOWN_VAL)))

    @property
    def test_history(self) -> sp.csr_matrix:
        """The known history when the test is scored: everything but the test targets."""
        return self._part(self.folds != TEST)

    def held_out_users(self, refit: bool = False) -> np.ndarray:
        """Users a cold-start split holds out with their whole history (sorted); in a refit
        on train + validation, users held out for validation are training users."""
        folds = [f for f in self.whole_users if not (refit and f == VAL)]
        shown = [{TEST: SHOWN_TEST, VAL: SHOWN_VAL}[f] for f in folds]
        rows, _ = self._coo
        return np.unique(rows[np.isin(self.folds, folds + shown)])

    def describe(self) -> dict:
        rows, _ = self._coo
        out = {}
        for name, fold in (("train", TRAIN), ("val", VAL), ("test", TEST)):
            sel = self.folds == fold
            out[f"n_{name}"] = int(sel.sum())
            out[f"n_{name}_users"] = int(len(np.unique(rows[sel])))
        shown = np.isin(self.folds, (SHOWN_VAL, SHOWN_TEST))
        if shown.any():
            out["n_revealed"] = int(shown.sum())
        out["test_fingerprint"] = self.test_fingerprint()
        return out

    def test_fingerprint(self) -> str:
        """A hash of the data and of which interactions are test targets (or a test user's
        revealed history): two runs with the same one were tested on the same pairs, whatever
        their protocol carved out for validation (advrec-report pairs their users on it)."""
        h = hashlib.sha256(self.data.fingerprint().encode())
        for fold in (TEST, SHOWN_TEST):
            h.update(np.packbits(self.folds == fold).tobytes())
        return h.hexdigest()[:16]


def make_split(
    data: Interactions,
    method: str = "random_holdout",
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    val_method: str | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    reveal: int = 0,
) -> Split:
    """Label every interaction train / val / test (and revealed, `reveal` > 0); read or write
    the on-disk cache."""
    if method not in METHODS:
        raise AdvrecError(f"unknown split method {method!r}; choose one of {METHODS}")
    val_method = val_method or ("random_holdout" if method == "predefined" else method)
    if val_method not in METHODS[:-1]:
        raise AdvrecError(f"unknown validation method {val_method!r}; choose {METHODS[:-1]}")
    for name, frac in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= frac < 1.0:
            raise AdvrecError(f"{name}={frac} must lie in [0, 1)")
    if isinstance(reveal, bool) or not isinstance(reveal, int) or reveal < 0:
        raise AdvrecError(
            f"split.reveal={reveal!r}: give the number of interactions each cold user reveals "
            "(an integer >= 0; 0 = pure cold start)"
        )
    params = {
        "data": data.fingerprint(),
        "method": method,
        "test_fraction": test_fraction if method != "predefined" else None,
        "val_fraction": val_fraction,
        "val_method": val_method if val_fraction > 0 else None,
        "seed": seed,
        "version": 1,
    }
    if reveal:
        params["reveal"] = reveal
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir) / "splits" / f"{key}.npz" if cache_dir else None
    cached = _read_cache(path, data.nnz) if path is not None and path.is_file() else None
    folds = (
        cached
        if cached is not None
        else _compute(data, method, test_fraction, val_fraction, val_method, seed)
    )
    whole = _whole_folds(folds, data, method, val_method)  # revealing does not change it
    if cached is None:
        if reveal:
            _reveal(folds, data.coo()[0], whole, reveal, seed)
        if path is not None:
            _save_cache(path, folds)
    return Split(data, folds, whole)


def _whole_folds(folds, data, method, val_method) -> tuple[int, ...]:
    """The held-out folds (TEST, VAL) whose users are held out whole: those of `cold_users`,
    and a predefined file's whose users have no training interaction."""
    if method != "predefined":
        pairs = ((TEST, method), (VAL, val_method))
        return tuple(fold for fold, m in pairs if m == "cold_users" and (folds == fold).any())
    rows, _ = data.coo()
    trained = np.unique(rows[folds == TRAIN])
    out = []
    for fold, shown in ((TEST, SHOWN_TEST), (VAL, SHOWN_VAL)):
        users = np.unique(rows[np.isin(folds, (fold, shown))])
        if len(users) and not np.isin(users, trained).any():
            out.append(fold)
    return tuple(out)


def _reveal(folds: np.ndarray, rows: np.ndarray, whole: tuple, n: int, seed: int) -> None:
    """Label `n` seeded random interactions of each user of a whole-user fold as shown (at
    most all but one: every such user keeps a target), in place."""
    if not whole:
        raise AdvrecError(
            "split.reveal needs a cold-start split (users held out whole: split.method="
            "cold_users, or a predefined split whose test users have no training interaction)"
        )
    rng = np.random.default_rng([seed, 7919])  # its own stream: the fold labels do not move
    for fold, shown in ((TEST, SHOWN_TEST), (VAL, SHOWN_VAL)):
        if fold not in whole:
            continue
        idx = np.flatnonzero(folds == fold)  # sorted by user (canonical CSR order)
        users = rows[idx]
        order = np.lexsort((rng.random(len(idx)), users))
        counts = np.bincount(users)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.empty(len(idx), np.int64)
        pos[order] = np.arange(len(idx)) - starts[users[order]]
        take = np.minimum(n, counts - 1)[users]
        folds[idx[pos < take]] = shown


def _read_cache(path: Path, nnz: int) -> np.ndarray | None:
    """The cached labels, or None (and the entry discarded) when the file is damaged."""
    try:
        with np.load(path) as f:
            folds = f["folds"]
        if len(folds) == nnz and set(np.unique(folds)) <= {TRAIN, VAL, TEST, SHOWN_VAL, SHOWN_TEST}:
            return folds
        problem = f"{len(folds)} labels for {nnz} interactions"
    except Exception as e:  # truncated, not a zip, no 'folds' inside
        problem = f"{type(e).__name__}: {e}"
    log.warning("split cache %s is damaged (%s); discarded and rebuilt", path, problem)
    path.unlink(missing_ok=True)
    return None


def _compute(data, method, test_fraction, val_fraction, val_method, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, _ = data.coo()
    ts = data.timestamps
    if method == "predefined":
        if data.folds is None:
            raise AdvrecError(
                "split.method=predefined needs a source with train/test files "
                "(data.source._target_=advrec.data.sources.Predefined)"
            )
        folds = np.asarray(data.folds, dtype=np.int8).copy()  # a validation file: VAL
        if (folds == VAL).any():
            if val_fraction == 0:  # a protocol without validation trains on that file too
                folds[folds == VAL] = TRAIN
            val_fraction = 0.0  # else the file is the validation split; nothing is carved
    else:
        folds = np.full(data.nnz, TRAIN, np.int8)
        folds[_holdout(method, rows, ts, test_fraction, rng)] = TEST
    if val_fraction > 0:
        idx = np.flatnonzero(folds == TRAIN)
        sub_ts = None if ts is None else ts[idx]
        folds[idx[_holdout(val_method, rows[idx], sub_ts, val_fraction, rng)]] = VAL
    if not (folds == TEST).any():
        if method in ("user_holdout", "leave_one_out") and np.bincount(rows).max() < 2:
            raise AdvrecError(
                f"every user has a single interaction and split.method={method} keeps each "
                "user's only item for training, so nothing is left to test; use "
                "split.method=random_holdout or cold_users"
            )
        raise AdvrecError("the split left no test interactions; raise split.test_fraction")
    return folds


def _holdout(method, rows, ts, frac, rng) -> np.ndarray:
    """Boolean mask of the held-out interactions among `rows` (sorted by user)."""
    n = len(rows)
    if method in ("temporal", "leave_one_out") and ts is None:
        if method == "temporal":
            raise AdvrecError("split.method=temporal needs timestamps; this source has none")
    key = rng.random(n)
    if method == "cold_users":  # a seeded share of the users, with their whole history
        users = np.unique(rows)
        chosen = rng.permutation(users)[: int(round(frac * len(users)))]
        return np.isin(rows, chosen)
    if method == "random_holdout":
        out = np.zeros(n, bool)
        out[rng.permutation(n)[: int(round(frac * n))]] = True
        return out
    if method == "temporal":
        order = np.lexsort((key, ts))
        out = np.zeros(n, bool)
        out[order[n - int(round(frac * n)) :]] = True
        return out
    # per-user methods: position of each interaction within its user, newest/random first
    sort_key = -ts if (method == "leave_one_out" and ts is not None) else key
    order = np.lexsort((sort_key, rows))
    counts = np.bincount(rows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n) - starts[rows[order]]
    if method == "leave_one_out":
        n_out = (counts >= 2).astype(np.int64)
    else:  # user_holdout: round(frac * n_u), keeping at least one training item
        n_out = np.minimum(np.round(frac * counts).astype(np.int64), np.maximum(counts - 1, 0))
    return pos < n_out[rows]


def _save_cache(path: Path, folds: np.ndarray) -> None:
    try:
        write_bytes(path, lambda f: np.savez_compressed(f, folds=folds))
    except OSError as e:  # a read-only or full cache only costs time
        log.warning("split cache not written (%s): %s", path, e)
