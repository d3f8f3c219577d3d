"""advrec-data: the registry of the datasets the presets read, and its checks."""

import re
import shutil

import pytest
import yaml

from advrec.data import registry
from advrec.data.registry import DATASETS, Dataset, find, sha256
from advrec.data_tool import run
from tests.helpers import DATA_DIR, REPO, needs_data, run_cli

PRESETS = sorted((REPO / "conf" / "data").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_file_a_preset_reads_is_registered(path):
    """A preset that reads ${paths.data_dir}/<folder>/<file> names a registered file, and a
    MovieLens preset (which downloads) names its folder: nothing to place goes unlisted."""
    needed, todo = [], [path]
    while todo:  # the preset and the presets it extends (defaults: [ml100k, _self_])
        text = todo.pop().read_text()
        needed += re.findall(r"\$\{paths\.data_dir\}/([^/\s]+)/(\S+)", text)
        cfg = yaml.safe_load(text)
        if cfg.get("source", {}).get("_target_", "").endswith("MovieLens"):
            needed.append((f"ml-{cfg['source']['version']}", None))
        todo += [path.parent / f"{b}.yaml" for b in cfg.get("defaults", []) if b != "_self_"]
    for folder, rel in needed:
        assert folder in DATASETS, (path.stem, folder)
        d = DATASETS[folder]
        assert path.stem in d.presets, (path.stem, folder)
        assert rel is None or rel in d.files, (path.stem, rel)
    if not needed:
        assert all(path.stem not in d.presets for d in DATASETS.values())


def test_verify_names_the_missing_and_the_corrupted_file(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "a.csv").write_text("1,2\n")
    toy = Dataset(
        "toy", "Toy", "https://example.org/toy.zip", "paper", "licence", ("toy_preset",),
        {"a.csv": sha256(folder / "a.csv"), "b.csv": "0" * 64},
    )  # fmt: skip
    monkeypatch.setitem(DATASETS, "toy", toy)
    assert find("toy_preset") is toy
    assert run(["verify", "toy", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["toy/a.csv: ok", f"toy/b.csv: MISSING: {folder / 'b.csv'}"]
    (folder / "b.csv").write_text("x")
    assert run(["verify", "toy", "--data-dir", str(tmp_path)]) == 1
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if "b.csv" in ln]
    assert "CHECKSUM MISMATCH" in line and "0" * 64 in line and str(folder / "b.csv") in line
    (folder / "b.csv").unlink()
    monkeypatch.setitem(toy.files, "b.csv", sha256(folder / "a.csv"))
    shutil.copy(folder / "a.csv", folder / "b.csv")
    assert run(["verify", "toy_preset", "--data-dir", str(tmp_path)]) == 0
    assert run(["list", "--data-dir", str(tmp_path)]) == 0
    assert "toy                        present" in capsys.readouterr().out


def test_an_unknown_name_is_one_line(tmp_path):
    proc = run_cli("data_tool", "where", "lastfmm", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("advrec-data: error: no dataset or data preset 'lastfmm'")


def test_a_missing_registered_file_says_what_to_place_where(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("train", "data=cfgan_ciao", "model=pop", f"hydra.run.dir={tmp_path / 'r'}",
                   cwd=tmp_path, env={"ADVREC_DATA_DIR": str(empty)}, check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("advrec: error")]
    assert f"under {empty / 'cfgan-splits'}" in line and "Bigdasgit/CFGAN" in line
    assert "advrec-data verify cfgan-splits" in line


@needs_data("cfgan-splits", "Ciao", "Ciao.train")
def test_verify_passes_on_the_shared_datasets_and_catches_a_corrupted_copy(tmp_path):
    proc = run_cli("data_tool", "verify", "cfgan_ciao", "lastfm", cwd=tmp_path,
                   env={"ADVREC_DATA_DIR": str(DATA_DIR)}, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.count(": ok") == 6
    shutil.copytree(DATA_DIR / "cfgan-splits", tmp_path / "cfgan-splits")
    with open(tmp_path / "cfgan-splits" / "Ciao" / "Ciao.test", "a") as f:
        f.write("1\t2\t5\n")
    proc = run_cli("data_tool", "verify", "cfgan-splits", "--data-dir", str(tmp_path),
                   cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 1
    (bad,) = [ln for ln in proc.stdout.splitlines() if "MISMATCH" in ln]
    assert bad.startswith("cfgan-splits/Ciao/Ciao.test: CHECKSUM MISMATCH")
    assert registry.DATASETS["cfgan-splits"].files["Ciao/Ciao.test"] in bad
