"""Readers that turn files (or a seeded generator) into `Interactions`.

Each source is a small class with a `load() -> Interactions`; Hydra instantiates it from
`data.source`. Sources never know about models or splits (except predefined train/test files,
which they label through `Interactions.folds`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from advrec.data.download import MOVIELENS, fetch
from advrec.data.interactions import TEST, TRAIN, VAL, Interactions
from advrec.errors import AdvrecError

log = logging.getLogger(__name__)


def missing_hint(path: Path) -> str:
    """What to do about a missing data file: where a registered dataset comes from and where
    it goes (advrec-data where), else how to point advrec at the folder that holds it."""
    from advrec.data.registry import DATASETS, placement

    for d in DATASETS.values():
        for rel in d.files:
            suffix = Path(d.folder) / rel
            if path.as_posix().endswith(suffix.as_posix()):
                root = Path(str(path)[: -len(suffix.as_posix())] or ".")
                return f"{placement(d, root)}; or set ADVREC_DATA_DIR to the folder that holds it."
    return DATA_HINT


DATA_HINT = (
    "Set ADVREC_DATA_DIR (or paths.data_dir=...) to the folder that holds it"
    " (MovieLens sources download it there when download=true)."
)


def read_table(
    path: Path | str,
    sep: str | None = None,
    header: bool = True,
    names: list[str] | None = None,
    encoding: str = "utf-8",
    dtype=None,
) -> pd.DataFrame:
    """Read CSV/TSV/whitespace/Parquet with a clear error for a missing or broken file.

    `sep=None` picks by extension: .parquet, .tsv/.tab (tab), .csv (comma), else whitespace.
    `dtype=str` reads text files as written (ids like `05` keep their zero; Parquet keeps its
    own types); numbers are parsed later where a column is numeric.
    """
    path = Path(path)
    if not path.is_file():
        raise AdvrecError(f"data file not found: {path}. {missing_hint(path)}")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
            return df if names is None else df.set_axis(names, axis=1)
        if sep is None:
            sep = {".csv": ",", ".tsv": "\t", ".tab": "\t"}.get(path.suffix, r"\s+")
        return pd.read_csv(
            path,
            sep=sep,
            header=0 if header else None,
            names=names,
            encoding=encoding,
            dtype=dtype,
            # as text only an empty field is missing: an id "NA" or "null" is an id
            keep_default_na=dtype is not str,
            na_values=[""] if dtype is str else None,
            engine="python" if len(sep) > 1 and sep != r"\s+" else "c",
            skipinitialspace=True,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        raise AdvrecError(f"cannot parse {path}: {e}") from None


class Source:
    """Base class: `load()` returns Interactions."""

    name = "data"

    def load(self) -> Interactions:  # pragma: no cover - interface
        raise NotImplementedError


class MovieLens(Source):
    """MovieLens 100K / 1M / 20M from the official archives (user features where present)."""

    def __init__(
        self,
        version: str = "100k",
        data_dir: str = "data",
        download: bool = True,
        threshold: float | None = None,
        kcore: int = 0,
        downloader=None,
    ):
        if version not in MOVIELENS:
            raise AdvrecError(f"unknown MovieLens version {version!r}; choose {list(MOVIELENS)}")
        self.version, self.data_dir, self.download = version, Path(data_dir), download
        self.threshold, self.kcore, self.downloader = threshold, kcore, downloader
        self.name = f"MovieLens-{version}"

    def folder(self) -> Path:
        archive = MOVIELENS[self.version]
        folder = self.data_dir / archive.folder
        if (folder / self._ratings_file()).is_file():
            return folder
        if not self.download:
            raise AdvrecError(
                f"{self.name}: {folder / self._ratings_file()} not found. {DATA_HINT}"
            )
        return fetch(archive, self.data_dir, self.downloader)

    def _ratings_file(self) -> str:
        return {"100k": "u.data", "1m": "ratings.dat", "20m": "ratings.csv"}[self.version]

    def load(self) -> Interactions:
        folder = self.folder()
        cols = ["user", "item", "rating", "time"]
        if self.version == "100k":
            df = read_table(folder / "u.data", sep="\t", header=False, names=cols)
        elif self.version == "1m":
            df = _read_double_colon(folder / "ratings.dat", cols)
        else:
            df = read_table(folder / "ratings.csv").set_axis(cols, axis=1)
        data = Interactions.from_frame(
            df,
            "user",
            "item",
            "rating",
            "time",
            threshold=self.threshold,
            kcore=self.kcore,
            source=self.name,
        )
        data.user_features = self._user_features(folder, data.user_ids)
        return data

    def _user_features(self, folder: Path, user_ids: np.ndarray) -> pd.DataFrame | None:
        names = ["user", "age", "gender", "occupation", "zip"]
        if self.version == "100k" and (folder / "u.user").is_file():
            users = read_table(folder / "u.user", sep="|", header=False, names=names)
        elif self.version == "1m" and (folder / "users.dat").is_file():
            names = ["user", "gender", "age", "occupation", "zip"]
            users = _read_double_colon(folder / "users.dat", names)
        else:
            return None
        return users.set_index("user").reindex(user_ids).reset_index(drop=True)


def _read_double_colon(path: Path, names: list[str]) -> pd.DataFrame:
    """MovieLens 1M's `::`-separated latin-1 files, read with the fast C parser."""
    if not path.is_file():
        raise AdvrecError(f"data file not found: {path}. {missing_hint(path)}")
    df = pd.read_csv(path, sep=":", header=None, encoding="latin-1", dtype=str)
    df = df.iloc[:, ::2]  # '::' leaves an empty column between fields
    df.columns = names
    for c in names:
        num = pd.to_numeric(df[c], errors="coerce")
        if num.notna().all():
            df[c] = num
    return df


class Files(Source):
    """Any CSV/TSV/Parquet interaction log with configurable column names."""

    def __init__(
        self,
        path: str,
        columns: dict | None = None,
        sep: str | None = None,
        header: bool = True,
        threshold: float | None = None,
        duplicates: str = "first",
        kcore: int = 0,
    ):
        self.path, self.sep, self.header = Path(path), sep, header
        self.columns = {"user": "user", "item": "item", "rating": None, "time": None}
        self.columns.update(dict(columns or {}))
        self.threshold, self.duplicates, self.kcore = threshold, duplicates, kcore
        self.name = self.path.name

    def load(self) -> Interactions:
        if not self.path.is_file():
            raise AdvrecError(
                f"data file not found: {self.path.resolve()} (data.source.path={self.path}; a "
                "relative path is read from the folder advrec runs in). "
                + (hint if (hint := missing_hint(self.path)) != DATA_HINT else "Check the path")
            )
        df = read_table(self.path, sep=self.sep, header=self.header, dtype=str)
        if not self.header:
            df.columns = [str(c) for c in df.columns]
        c = self.columns
        return Interactions.from_frame(
            df,
            c["user"],
            c["item"],
            c.get("rating"),
            c.get("time"),
            threshold=self.threshold,
            duplicates=self.duplicates,
            kcore=self.kcore,
            source=self.name,
        )


FORMATS = {
    # name: (sep, header, column names); sep None: by extension (see `read_table`)
    "cfgan": (r"\s+", False, ["user", "item", "rating"]),
    "grouplens": ("\t", False, ["user", "item", "rating", "time"]),
    "csv": (",", True, None),
    "table": (None, True, None),  # CSV / TSV / Parquet with a header row, by extension
}
TEST_ONLY = ("keep", "drop", "drop_items", "error")
OVERLAPS = ("error", "drop")


class Predefined(Source):
    """Fixed train and test files, optionally a validation file (the CFGAN authors' splits,
    GroupLens u1.base/u1.test, your own CSVs), in one id space.

    `sep` and `header` override the format's. Ids that appear in the test or validation file
    but never in the training file follow `test_only`: `keep` them (an item only in the test
    file stays in the catalogue, as the CFGAN splits need), `drop` those interactions,
    `drop_items` drop only those with items training never has (new users stay: user cold
    start, where the catalogue is the warm items, as Heater evaluates), or stop with an
    `error` that names them (`data=split_files`).

    A (user, item) pair in more than one file is a leak: a test pair the model trained on
    scores as a hit it never had to predict. `overlap=error` (the default) refuses such files,
    naming them, the count and examples; `overlap=drop` removes the pair from the later
    held-out file (train > validation > test) and says how many it removed. `duplicates`
    then only merges repeats within one file.
    """

    def __init__(
        self,
        train: str,
        test: str,
        val: str | None = None,
        format: str = "cfgan",
        columns: dict | None = None,
        sep: str | None = None,
        header: bool | None = None,
        threshold: float | None = None,
        duplicates: str = "first",
        keep_filtered_ids: bool = False,
        test_only: str = "keep",
        overlap: str = "error",
    ):
        if format not in FORMATS:
            raise AdvrecError(f"unknown predefined format {format!r}; choose {list(FORMATS)}")
        if test_only not in TEST_ONLY:
            raise AdvrecError(f"data.source.test_only={test_only!r}: choose one of {TEST_ONLY}")
        if overlap not in OVERLAPS:
            raise AdvrecError(f"data.source.overlap={overlap!r}: choose one of {OVERLAPS}")
        self.train, self.test, self.format = Path(train), Path(test), format
        self.val = Path(val) if val else None
        self.columns = {"user": "user", "item": "item", "rating": "rating", "time": None}
        if format == "grouplens":
            self.columns["time"] = "time"
        self.columns.update(dict(columns or {}))
        self.sep, self.header = sep, header
        self.threshold, self.duplicates = threshold, duplicates
        self.keep_filtered_ids, self.test_only = keep_filtered_ids, test_only
        self.overlap = overlap
        self.name = f"{self.train.name}+{self.test.name}"

    def load(self) -> Interactions:
        sep, header, names = FORMATS[self.format]
        sep = sep if self.sep is None else self.sep
        header = header if self.header is None else self.header
        files = [(self.train, TRAIN), (self.test, TEST)]
        files += [(self.val, VAL)] if self.val else []
        parts = []
        for path, fold in files:
            df = read_table(path, sep=sep, header=header, names=names, dtype=str)
            if not header and names is None:  # columns 0, 1, ...: mapped as "0", "1", ...
                df.columns = [str(c) for c in df.columns]
            parts.append(df.assign(_fold=fold))
        df = pd.concat(parts, ignore_index=True)
        c = self.columns
        rating = c.get("rating") if c.get("rating") in df.columns else None
        df = self._overlap(df, rating)
        return Interactions.from_frame(
            self._test_only(df, rating),
            c["user"],
            c["item"],
            rating,
            c.get("time"),
            fold_col="_fold",
            threshold=self.threshold,
            duplicates=self.duplicates,
            keep_filtered_ids=self.keep_filtered_ids,
            source=self.name,
        )

    def _file(self, fold: int) -> str:
        return {TRAIN: self.train, VAL: self.val, TEST: self.test}[fold].name

    def _overlap(self, df: pd.DataFrame, rating: str | None) -> pd.DataFrame:
        """`df` after the `overlap` policy for positive pairs (at or above `threshold`) that
        more than one file holds."""
        user, item = self.columns["user"], self.columns["item"]
        if user not in df or item not in df:
            return df  # (a missing column is named by Interactions.from_frame)
        positive = df
        if rating is not None and self.threshold is not None:
            positive = df[pd.to_numeric(df[rating], errors="coerce") >= self.threshold]
        pairs = positive[[user, item, "_fold"]].drop_duplicates()
        first = pairs.groupby([user, item], sort=False)["_fold"].transform("min")
        later = pairs[pairs["_fold"] != first]  # a pair in a later file than its first one
        if later.empty:
            return df
        counts = later.assign(_first=first[later.index]).groupby(["_first", "_fold"]).size()
        found = "; ".join(
            f"{n} pair(s) in both {self._file(a)} and {self._file(b)}"
            for (a, b), n in sorted(counts.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        )
        example = later[[user, item]].head(3).values.tolist()
        if self.overlap == "error":
            raise AdvrecError(
                f"{self.name}: the split files overlap: {found} (e.g. {example}). A held-out "
                "pair that is also trained on scores as a hit the model never had to predict "
                "(a leaky split). Fix the files, or set data.source.overlap=drop to remove "
                "those pairs from the later file (train > validation > test)"
            )
        leak = df.merge(later, on=[user, item, "_fold"], how="left", indicator=True)
        keep = (leak["_merge"] == "left_only").to_numpy()
        keep = keep | ~df.index.isin(positive.index)  # rows below the threshold never count
        log.warning(
            "%s: the split files overlap: %s; those pairs were removed from the later file "
            "(%d rows, data.source.overlap=drop)",
            self.name,
            found,
            int((~keep).sum()),
        )
        return df[keep]

    def _test_only(self, df: pd.DataFrame, rating: str | None) -> pd.DataFrame:
        """`df` after the `test_only` policy for ids the training file never has."""
        user, item = self.columns["user"], self.columns["item"]
        if self.test_only == "keep" or user not in df or item not in df:
            return df  # (a missing column is named by Interactions.from_frame)
        train = df[df["_fold"] == TRAIN]
        if rating is not None and self.threshold is not None:
            train = train[pd.to_numeric(train[rating], errors="coerce") >= self.threshold]
        new_user, new_item = ~df[user].isin(train[user]), ~df[item].isin(train[item])
        if self.test_only == "drop_items":  # new users are the point (user cold start)
            new_user = pd.Series(False, index=df.index)
        unseen = (df["_fold"] != TRAIN) & (new_user | new_item)
        if not unseen.any():
            return df
        if self.test_only in ("drop", "drop_items"):
            log.info(
                "%s: %d test/validation interaction(s) of %s never in %s dropped",
                self.name,
                int(unseen.sum()),
                "items" if self.test_only == "drop_items" else "ids",
                self.train.name,
            )
            return df[~unseen]
        users = df.loc[unseen & new_user, user].unique()
        items = df.loc[unseen & new_item, item].unique()
        held = f"{self.test.name}{f' / {self.val.name}' if self.val else ''}"
        ids = [
            f"{len(found)} {kind} id(s) (e.g. {found[:3].tolist()})"
            for kind, found in (("user", users), ("item", items))
            if len(found)
        ]
        raise AdvrecError(
            f"{held} has {' and '.join(ids)} that {self.train.name} never has "
            f"({int(unseen.sum())} interaction(s)): a model knows nothing about them. Check "
            "that the files share ids and columns, or set data.source.test_only=drop (leave "
            "those interactions out) or keep (score them anyway)"
        )


class Synthetic(Source):
    """Seeded implicit feedback with latent topics and popularity skew, built sparse.

    Each user mixes `n_factors` topics (Dirichlet); each interaction picks a topic, then an
    item of that topic by a Zipf(`pop_exponent`) popularity law. Users' activity is
    log-normal. ML-20M shape (138,493 x 26,744, 20M) takes seconds and never densifies.
    """

    def __init__(
        self,
        n_users: int = 1000,
        n_items: int = 500,
        n_interactions: int = 20000,
        n_factors: int = 16,
        pop_exponent: float = 1.0,
        min_per_user: int = 2,
        with_features: bool = False,
        seed: int = 0,
    ):
        self.n_users, self.n_items, self.n_interactions = n_users, n_items, n_interactions
        self.n_factors, self.pop_exponent, self.min_per_user = n_factors, pop_exponent, min_per_user
        self.with_features, self.seed = with_features, seed
        self.name = f"synthetic-{n_users}x{n_items}"

    def load(self) -> Interactions:
        rng = np.random.default_rng(self.seed)
        nu, ni, k = self.n_users, self.n_items, self.n_factors
        activity = rng.lognormal(0.0, 1.0, nu)
        counts = np.maximum(self.min_per_user, activity / activity.sum() * self.n_interactions)
        counts = np.minimum(np.round(counts), ni // 2).astype(np.int64)
        item_topic = rng.integers(0, k, ni)
        by_topic = np.argsort(item_topic, kind="stable")
        topic_start = np.searchsorted(item_topic[by_topic], np.arange(k + 1))
        weight = (rng.permutation(ni) + 1.0)[by_topic] ** -self.pop_exponent  # Zipf by rank
        cum = np.cumsum(weight)
        mix = rng.dirichlet(np.full(k, 0.3), nu).cumsum(1)

        def sample(rows: np.ndarray) -> np.ndarray:
            cols = np.empty(len(rows), dtype=np.int64)
            for lo in range(0, len(rows), 1 << 21):  # chunks bound the temporary memory
                r = rows[lo : lo + (1 << 21)]
                topic = np.minimum((mix[r] < rng.random(len(r))[:, None]).sum(1), k - 1)
                start, end = topic_start[topic], topic_start[topic + 1]
                empty = end == start
                start, end = np.where(empty, 0, start), np.where(empty, ni, end)
                c0 = np.where(start > 0, cum[start - 1], 0.0)
                target = c0 + rng.random(len(r)) * (cum[end - 1] - c0)
                cols[lo : lo + len(r)] = by_topic[np.minimum(np.searchsorted(cum, target), end - 1)]
            return cols

        m = sp.csr_matrix((nu, ni), dtype=np.float32)
        for _ in range(8):  # top up users whose draws collided with items they already have
            deficit = counts - np.diff(m.indptr)
            if deficit.sum() <= 0.001 * counts.sum():
                break
            rows = np.repeat(np.arange(nu), np.maximum(deficit, 0))
            extra = sp.csr_matrix(
                (np.ones(len(rows), np.float32), (rows, sample(rows))), shape=(nu, ni)
            )
            m = m + extra
            m.data[:] = 1.0
        keep_users = np.flatnonzero(np.diff(m.indptr) > 0)
        keep_items = np.flatnonzero(np.bincount(m.indices, minlength=ni) > 0)
        m = m[keep_users][:, keep_items].tocsr()
        m.sort_indices()
        data = Interactions(m, keep_users.astype(np.int64), keep_items.astype(np.int64))
        if self.with_features:
            data.user_features = pd.DataFrame(
                {
                    "age": rng.integers(18, 70, len(keep_users)),
                    "gender": rng.choice(["F", "M"], len(keep_users)),
                    "occupation": rng.choice(["a", "b", "c", "d"], len(keep_users)),
                }
            )
        return data
