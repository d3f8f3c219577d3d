import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from advrec.data.download import Archive, fetch, safe_extract
from advrec.data.sources import Files, MovieLens, Predefined, Synthetic
from advrec.data.splits import make_split
from advrec.errors import AdvrecError

U_DATA = "1\t10\t5\t100\n1\t20\t3\t200\n2\t10\t4\t150\n3\t30\t1\t50\n"
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n"


def write_ml100k(root: Path) -> Path:
    folder = root / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "u.data").write_text(U_DATA)
    (folder / "u.user").write_text(U_USER)
    return folder


def test_movielens_100k_reader_with_features(tmp_path):
    write_ml100k(tmp_path)
    data = MovieLens("100k", data_dir=tmp_path, download=False).load()
    assert data.n_users == 3 and data.n_items == 3 and data.nnz == 4
    assert data.user_features["occupation"].tolist() == ["technician", "other", "writer"]
    assert data.timestamps.tolist() == [100, 200, 150, 50]


def test_movielens_threshold(tmp_path):
    write_ml100k(tmp_path)
    data = MovieLens("100k", data_dir=tmp_path, download=False, threshold=4).load()
    assert data.nnz == 2


def test_movielens_1m_double_colon_latin1(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n2::661::3::978302109\n")
    (folder / "users.dat").write_bytes(
        "1::F::1::10::48067\n2::M::56::16::Z\xe9\n".encode("latin-1")
    )
    data = MovieLens("1m", data_dir=tmp_path, download=False).load()
    assert list(data.user_ids) == [1, 2] and list(data.item_ids) == [661, 1193]
    assert data.user_features["gender"].tolist() == ["F", "M"]
    assert data.user_features["zip"].tolist()[1] == "Z\xe9"


def test_missing_data_file_names_path_and_fix(tmp_path):
    with pytest.raises(AdvrecError) as e:
        MovieLens("100k", data_dir=tmp_path, download=False).load()
    assert str(tmp_path / "ml-100k" / "u.data") in str(e.value)
    assert "ADVREC_DATA_DIR" in str(e.value)


def test_files_source_with_string_ids_and_column_mapping(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("customer,sku,stars\nann,A-1,5\nben,B-2,2\nann,B-2,4\n")
    src = Files(path, columns={"user": "customer", "item": "sku", "rating": "stars"}, threshold=3)
    data = src.load()
    assert list(data.user_ids) == ["ann"] and list(data.item_ids) == ["A-1", "B-2"]


def test_files_source_missing_column(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text("u\ti\nann\tA\n")
    with pytest.raises(
        AdvrecError, match=r"column\(s\) \['user', 'item'\] not found.*\['u', 'i'\]"
    ):
        Files(path).load()


def test_files_source_parquet(tmp_path):
    import pandas as pd

    path = tmp_path / "log.parquet"
    pd.DataFrame({"user": [1, 2], "item": ["a", "b"]}).to_parquet(path)
    assert Files(path).load().nnz == 2


def test_predefined_cfgan_format_shares_one_id_space(tmp_path):
    (tmp_path / "x.train").write_text("0 0 3.0\r\n1 1 5.0\r\n")
    (tmp_path / "x.test").write_text("0 2 4.0\r\n")
    data = Predefined(tmp_path / "x.train", tmp_path / "x.test").load()
    assert data.n_items == 3
    assert data.folds.tolist() == [0, 2, 0]


def _own_split(root: Path, test_rows: str) -> dict:
    (root / "tr.csv").write_text("customer,sku,stars\na,x,5\na,y,2\nb,y,4\nc,z,5\nc,x,1\n")
    (root / "va.csv").write_text("customer,sku,stars\nb,x,5\n")
    (root / "te.csv").write_text("customer,sku,stars\n" + test_rows)
    return dict(
        train=root / "tr.csv",
        test=root / "te.csv",
        val=root / "va.csv",
        format="table",
        columns={"user": "customer", "item": "sku", "rating": "stars"},
    )


def test_own_train_validation_and_test_files_keep_their_roles(tmp_path):
    data = Predefined(**_own_split(tmp_path, "a,z,4\nc,y,3\n"), test_only="error").load()
    assert data.nnz == 8 and data.user_ids.tolist() == ["a", "b", "c"]
    assert sorted(data.folds.tolist()) == [0] * 5 + [1] + [2] * 2
    split = make_split(data, "predefined", val_fraction=0.1, seed=0)  # the file, not a carve
    assert split.describe()["n_val"] == 1 and split.describe()["n_train"] == 5
    no_val = make_split(data, "predefined", val_fraction=0.0, seed=0)  # no validation: trains
    assert no_val.describe()["n_val"] == 0 and no_val.describe()["n_train"] == 6


@pytest.mark.parametrize("rows", ["a,z,4\nd,x,5\n", "a,z,4\nc,w,5\n"])
def test_ids_only_in_the_test_file_are_named_or_dropped_as_asked(tmp_path, rows):
    with pytest.raises(
        AdvrecError, match=r"te\.csv / va\.csv has 1 (user|item) id.*test_only=drop"
    ):
        Predefined(**_own_split(tmp_path, rows), test_only="error").load()
    dropped = Predefined(**_own_split(tmp_path, rows), test_only="drop").load()
    assert (dropped.folds == 2).sum() == 1  # a,z stays; the stranger's row is gone
    kept = Predefined(**_own_split(tmp_path, rows), test_only="keep").load()
    assert (kept.folds == 2).sum() == 2


def test_a_rating_threshold_applies_before_ids_are_judged_unseen(tmp_path):
    # x's only training rating >= 4 comes from a; with threshold 5, y is never a positive
    kw = _own_split(tmp_path, "b,y,5\n")
    with pytest.raises(AdvrecError, match="item id"):
        Predefined(**kw, threshold=5, test_only="error").load()
    with pytest.raises(AdvrecError, match="in both tr.csv and te.csv"):  # b,y: 4 and 5
        Predefined(**kw, threshold=4, test_only="error").load()
    dropped = Predefined(**kw, threshold=4, test_only="error", overlap="drop").load()
    assert (dropped.folds == 2).sum() == 0


def test_synthetic_is_seeded_sparse_and_skewed():
    a = Synthetic(n_users=2000, n_items=800, n_interactions=40000, seed=1).load()
    b = Synthetic(n_users=2000, n_items=800, n_interactions=40000, seed=1).load()
    assert a.fingerprint() == b.fingerprint()
    assert 30000 < a.nnz < 50000
    pop = np.sort(np.bincount(a.matrix.indices))[::-1]
    assert pop[: len(pop) // 10].sum() > 0.3 * pop.sum()  # popularity skew


@pytest.mark.slow
def test_synthetic_ml20m_shape():
    data = Synthetic(138_493, 26_744, 20_000_000, seed=0).load()
    assert abs(data.nnz - 20_000_000) < 200_000 and data.n_items > 26_000


# -- download: local fixtures only, never the internet --------------------------------------
def make_zip(path: Path, members: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return hashlib.md5(path.read_bytes()).hexdigest()


def local_downloader(src: Path):
    def download(url, output_file, pooch, check_only=False):
        shutil.copyfile(src, output_file)

    return download


def test_download_verifies_md5_and_extracts(tmp_path):
    z = tmp_path / "ml-100k.zip"
    md5 = make_zip(z, {"ml-100k/u.data": U_DATA, "ml-100k/u.user": U_USER})
    data_dir = tmp_path / "data"
    archive = Archive("https://example.invalid/ml-100k.zip", md5, "ml-100k")
    folder = fetch(archive, data_dir, downloader=local_downloader(z))
    assert (folder / "u.data").read_text() == U_DATA
    assert not list(data_dir.glob(".extract-*"))


def test_a_fresh_download_never_deletes_the_folder_that_was_there(tmp_path):
    z = tmp_path / "ml-1m.zip"
    md5 = make_zip(z, {"ml-1m/ratings.dat": "1::1::5::0\n"})
    data_dir = tmp_path / "data"
    (data_dir / "ml-1m").mkdir(parents=True)
    (data_dir / "ml-1m" / "my_notes.txt").write_text("mine")
    folder = fetch(
        Archive("https://x.invalid/ml-1m.zip", md5, "ml-1m"),
        data_dir,
        downloader=local_downloader(z),
    )
    assert (folder / "ratings.dat").is_file()
    kept = list(data_dir.glob("ml-1m.before-*"))
    assert len(kept) == 1 and (kept[0] / "my_notes.txt").read_text() == "mine"


def test_movielens_source_downloads_when_missing(tmp_path, monkeypatch):
    z = tmp_path / "ml-100k.zip"
    md5 = make_zip(z, {"ml-100k/u.data": U_DATA})
    from advrec.data import download

    monkeypatch.setitem(
        download.MOVIELENS, "100k", Archive("https://x.invalid/a.zip", md5, "ml-100k")
    )
    src = MovieLens("100k", data_dir=tmp_path / "d", download=True, downloader=local_downloader(z))
    assert src.load().nnz == 4


def test_md5_mismatch_is_refused_and_leaves_nothing(tmp_path):
    z = tmp_path / "ml-100k.zip"
    make_zip(z, {"ml-100k/u.data": U_DATA})
    data_dir = tmp_path / "data"
    archive = Archive("https://example.invalid/ml-100k.zip", "0" * 32, "ml-100k")
    with pytest.raises(AdvrecError, match="checksum mismatch"):
        fetch(archive, data_dir, downloader=local_downloader(z))
    assert not (data_dir / "ml-100k").exists()
    assert list((data_dir / ".downloads").iterdir()) == []


@pytest.mark.parametrize("evil", ["../escape.txt", "ml-100k/../../escape.txt", "/abs.txt"])
def test_zip_member_escaping_target_is_refused(tmp_path, evil):
    z = tmp_path / "evil.zip"
    make_zip(z, {"ml-100k/u.data": U_DATA, evil: "pwned"})
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(AdvrecError, match="outside"):
        safe_extract(z, data_dir, "ml-100k")
    assert not (tmp_path / "escape.txt").exists()
    assert list(data_dir.iterdir()) == []
