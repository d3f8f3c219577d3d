"""The datasets advrec's presets read: where each comes from, its licence, the files a preset
needs and their SHA-256, and where advrec looks for them (`advrec-data list | where | verify`).

Nothing here is downloaded except the MovieLens archives (`data=ml100k|ml1m|ml20m` fetch them
on first use, checked by their official MD5): the other licences forbid redistribution, so a
user places the files by hand under the data folder (`$ADVREC_DATA_DIR`, else `./data`). The
checksums are of the files as their sources publish them (MovieLens: the extracted archive;
the splits: the authors' repositories at the commits named).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from advrec.errors import AdvrecError

HARPER_KONSTAN = "F. M. Harper and J. A. Konstan, The MovieLens Datasets, ACM TiiS 5(4), 2015"
GROUPLENS_TERMS = (
    "research use only; no redistribution without GroupLens' permission; no commercial use; "
    f"cite {HARPER_KONSTAN}"
)
HETREC_TERMS = (
    "non-commercial use only (commercial use: ask Last.fm); cite Last.fm and the HetRec 2011 "
    "workshop (Cantador, Brusilovsky and Kuflik, RecSys 2011)"
)


@dataclass(frozen=True)
class Dataset:
    folder: str  # under the data folder
    title: str
    source: str  # where its files come from (URL, repository at a commit)
    paper: str
    licence: str
    presets: tuple[str, ...]  # `data=` presets that read it
    files: dict[str, str | None] = field(default_factory=dict)  # relative path -> sha256
    download: str | None = None  # a preset fetches the archive itself (MovieLens)


DATASETS: dict[str, Dataset] = {
    d.folder: d
    for d in (
        Dataset(
            "ml-100k",
            "MovieLens 100K (GroupLens Research, 1998)",
            "https://files.grouplens.org/datasets/movielens/ml-100k.zip (MD5 "
            "0e33842e24a9c977be4e0107933c0723)",
            HARPER_KONSTAN,
            GROUPLENS_TERMS,
            ("ml100k", "ml100k_coldstart", "irgan_ml100k"),
            {
                "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
                "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
                "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
                "u1.base": "ce253ec86c448b44fb3ba9a30d12dcfc2e9210cbde71efada3730c22e9ac212a",
                "u1.test": "18c6014a4b2c7324f250a63f8904a7b16b2b19f911129e346141507b0cbac950",
            },
            download="ml100k",
        ),
        Dataset(
            "ml-1m",
            "MovieLens 1M (GroupLens Research, 2003)",
            "https://files.grouplens.org/datasets/movielens/ml-1m.zip (MD5 "
            "c4d9eecfca2ab87c1945afe126590906)",
            HARPER_KONSTAN,
            GROUPLENS_TERMS,
            ("ml1m",),
            {
                "ratings.dat": None,  # no independent checksum on record: the archive's MD5
                "users.dat": "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
                "movies.dat": "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
            },
            download="ml1m",
        ),
        Dataset(
            "ml-20m",
            "MovieLens 20M (GroupLens Research, 2015)",
            "https://files.grouplens.org/datasets/movielens/ml-20m.zip (MD5 "
            "cd245b17a1ae2cc31bb14903e1204af3)",
            HARPER_KONSTAN,
            GROUPLENS_TERMS + "; its own README's terms",
            ("ml20m",),
            {"ratings.csv": None},
            download="ml20m",
        ),
        Dataset(
            "cfgan-splits",
            "The CFGAN authors' train/test splits of ML100K and Ciao",
            "github.com/Bigdasgit/CFGAN at cf04729a52d508e29c292e86a918b19bf952d75d, datasets/ "
            "(the paper's reference implementation; no licence file)",
            "D.-K. Chae et al., CFGAN: A Generic Collaborative Filtering Framework based on "
            "Generative Adversarial Networks, CIKM 2018",
            "ML100K: GroupLens' terms (above); Ciao: the Ciao crawl of Tang et al. (research "
            "use); no licence in the repository",
            ("cfgan_ml100k", "cfgan_ciao"),
            {
                "ML100K/ML100K.train": (
                    "3dcc6c5219de56ad819152860d31c9bfde0103288cb51923242d8b768726183f"
                ),
                "ML100K/ML100K.test": (
                    "4ad38c30a6f584571028c1e18815b9892febe254874872960629728d1cb293a4"
                ),
                "Ciao/Ciao.train": (
                    "cae074efabbdecda62f7d85670f6c1f9e72ef02899077b0951d3846f2550b628"
                ),
                "Ciao/Ciao.test": (
                    "85ae70656de7b9267bc573d986f2f6ea96637933f3c7f75add04bb02fd75837a"
                ),
            },
        ),
        Dataset(
            "hetrec2011-lastfm-2k",
            "Last.fm HetRec 2011: 1,892 users, 17,632 artists, friendships",
            "https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
            "I. Cantador, P. Brusilovsky and T. Kuflik, HetRec 2011 (RecSys 2011 workshop)",
            HETREC_TERMS,
            ("lastfm", "lastfm_coldstart"),
            {
                "user_artists.dat": (
                    "001400dc3c7d2667fca6e4ea6dc6acc31a9dd28ad5cd0f74cea988c019934d3b"
                ),
                "user_friends.dat": (
                    "9a3a8f7fa5f5ec832335e5b58ed69a4cf27c6f6f6afcde62134810eea46445a7"
                ),
            },
        ),
        Dataset(
            "heater-lastfm-coldstart",
            "Heater's Last.fm user cold-start split (train / vali / test, friendship matrix)",
            "github.com/Zziwei/Heater--Cold-Start-Recommendation at 355b9b8, data/LastFM/",
            "Z. Zhu et al., Recommendation for New Users and New Items via Randomized Training "
            "and Mixture-of-Experts Transformation, SIGIR 2020",
            HETREC_TERMS + " (built from HetRec's files)",
            ("lastfm_coldstart_heater",),
            {
                "train.csv": "04b743f97f0a50d5c691417f2aab74f7396ab07d87ca3f21d229dba920d3e1fd",
                "vali.csv": "2e6872bb17eb2c926a14ce14c3cb32f40118ef18ae85b7667fe9b5e66eb0662a",
                "test.csv": "36ceedf3a02ee8f6c029ac5fd5418bebe7848461a024f4b0c1c609948e469dae",
                "user_content.npz": (
                    "e3019efbd3c05948a4278bd7485465253fc5d47d7352bea05d877e7602caa8a3"
                ),
            },
        ),
    )
}


def data_dir() -> Path:
    """Where advrec looks: $ADVREC_DATA_DIR, else ./data (as conf/paths/default.yaml)."""
    return Path(os.environ.get("ADVREC_DATA_DIR") or Path.cwd() / "data")


def find(name: str) -> Dataset:
    """A dataset by folder name or by a preset that reads it (`lastfm`, `cfgan_ciao`, ...)."""
    if name in DATASETS:
        return DATASETS[name]
    for d in DATASETS.values():
        if name in d.presets:
            return d
    known = sorted(DATASETS) + sorted(p for d in DATASETS.values() for p in d.presets)
    raise AdvrecError(f"no dataset or data preset {name!r}; known: {', '.join(known)}")


def placement(d: Dataset, root: Path | None = None) -> str:
    """The one line that says what to place where."""
    root = root or data_dir()
    names = ", ".join(d.files)
    how = f"data={d.download} downloads it there on first use, or put" if d.download else "put"
    return (
        f"{d.title}: {how} the extracted files ({names}) under {root / d.folder} "
        f"(from {d.source}); advrec-data verify {d.folder} checks them"
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(d: Dataset, root: Path | None = None) -> list[tuple[str, str]]:
    """(file, status) per file: ok, missing, no checksum on record, or the mismatch."""
    root = root or data_dir()
    out = []
    for rel, want in d.files.items():
        path = root / d.folder / rel
        if not path.is_file():
            out.append((rel, f"MISSING: {path}"))
        elif want is None:
            out.append(
                (rel, "present (no checksum on record; the archive's MD5 is checked on download)")
            )
        else:
            got = sha256(path)
            status = (
                "ok"
                if got == want
                else f"CHECKSUM MISMATCH: {path} has sha256 {got}, expected {want}"
            )
            out.append((rel, status))
    return out
