"""What a user's own files, ids and settings can do to a result: each is refused in one line
that names the problem and the fix, or handled and said, never a silent wrong number."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.errors import AdvrecError
from advrec.models.ease import EASE
from advrec.sweep import SweepLock, heal_journal, open_storage
from tests.helpers import as_from_a_terminal, one_line_refusal, run_cli

POP = ["model=pop", "logger=csv", "protocol=original", "ks=[1,2]"]
GAN = [
    "model=cfgan",
    "data=synthetic",
    "logger=csv",
    "model.g_hidden=[16]",
    "model.d_hidden=[8]",
    "trainer.max_epochs=1",
]


def _split_files(root: Path, train: str, test: str, val: str | None = None) -> list[str]:
    (root / "train.csv").write_text("user,item\n" + train, encoding="utf-8")
    (root / "test.csv").write_text("user,item\n" + test, encoding="utf-8")
    args = [
        "data=split_files",
        f"data.source.train={root / 'train.csv'}",
        f"data.source.test={root / 'test.csv'}",
    ]
    if val is not None:
        (root / "val.csv").write_text("user,item\n" + val, encoding="utf-8")
        args.append(f"data.source.val={root / 'val.csv'}")
    return args


TRAIN = "a,x\na,y\nb,y\nb,z\nc,x\nc,z\n"


# -- overlapping split files ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("test", "val", "words"),
    [
        ("a,z\nb,x\nc,x\n", None, "1 pair(s) in both train.csv and test.csv (e.g. [['c', 'x']])"),
        ("a,z\nb,x\n", "c,y\nb,x\n", "1 pair(s) in both val.csv and test.csv (e.g. [['b', 'x']])"),
    ],
)
def test_overlapping_split_files_are_refused_by_default(tmp_path, test, val, words):
    args = _split_files(tmp_path, TRAIN, test, val)
    proc = run_cli(
        "train", *args, *POP, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=False
    )
    one_line_refusal(proc, words, "leaky split", "data.source.overlap=drop")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_overlap_drop_removes_the_pairs_from_the_later_file_and_says_so(tmp_path):
    args = _split_files(tmp_path, TRAIN, "a,z\nb,x\nc,x\n", "c,y\nb,x\n")
    run = tmp_path / "run"
    proc = run_cli(
        "train", *args, *POP, "data.source.overlap=drop", f"hydra.run.dir={run}", cwd=tmp_path
    )
    out = proc.stdout + proc.stderr
    assert "1 pair(s) in both train.csv and test.csv; 1 pair(s) in both val.csv and test.csv" in (
        out
    )
    assert "removed from the later file (2 rows, data.source.overlap=drop)" in out
    m = json.loads((run / "metrics.json").read_text())
    assert m["dataset"]["n_test"] == 1  # a,z stays; b,x (in val) and c,x (in train) left


@pytest.mark.parametrize("key", ["data.source.overlap", "data.source.test_only"])
def test_a_misspelt_split_policy_is_one_line(tmp_path, key):
    args = _split_files(tmp_path, TRAIN, "a,z\n")
    proc = run_cli("train", *args, *POP, f"{key}=bogus", f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path, check=False)  # fmt: skip
    one_line_refusal(proc, f"{key}='bogus': choose one of")
    assert "full_key" not in proc.stderr  # Hydra's wrapper lines are gone


# -- raw ids survive byte for byte ---------------------------------------------------------
IDS = ["05", "5", "007", "9223372036854775808", "18446744073709551615", "ü7", "用户", "NA"]


def test_raw_ids_round_trip_from_file_to_recommendations_byte_for_byte(tmp_path):
    items = ["0", "00", "-0", "1e3", "18446744073709551615"]
    train = "".join(f"{u},{items[(k + j) % 5]}\n" for k, u in enumerate(IDS) for j in range(3))
    test = "".join(f"{u},{items[(k + 3) % 5]}\n" for k, u in enumerate(IDS))
    args = _split_files(tmp_path, train, test)
    run = tmp_path / "run"
    run_cli("train", *args, *POP, f"hydra.run.dir={run}", cwd=tmp_path)
    out = tmp_path / "recs.csv"
    run_cli(
        "recommend",
        f"ckpt_path={run / 'checkpoints' / 'final.ckpt'}",
        f"output={out}",
        "k=2",
        f"hydra.run.dir={tmp_path / 'rec'}",
        cwd=tmp_path,
    )
    rows = [line.split(",") for line in out.read_text(encoding="utf-8").splitlines()[1:]]
    assert {r[0] for r in rows} == set(IDS)  # 05 and 5 are two users, none turned negative
    assert {r[1] for r in rows} <= set(items) and len({r[1] for r in rows}) > 1


def test_canonical_integer_ids_stay_integers():
    import pandas as pd

    from advrec.data.interactions import raw_ids

    assert raw_ids(pd.Series(["3", "-12", "0"])).dtype == np.int64
    for text in (["3", "03"], ["1", "9223372036854775808"], ["1", "-0"], ["1", "+1"]):
        assert raw_ids(pd.Series(text)).tolist() == text
    huge = pd.Series(np.array([1, 2**64 - 1], dtype=np.uint64))
    assert raw_ids(huge).tolist() == ["1", "18446744073709551615"]


# -- numbers from models that never trained or cannot be right -----------------------------
@pytest.mark.parametrize("key", ["trainer.max_epochs", "+trainer.max_steps"])
def test_a_trained_model_that_would_take_no_step_is_refused(tmp_path, key):
    proc = run_cli(
        "train", *GAN, f"{key}=0", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False
    )
    one_line_refusal(proc, f"{key.lstrip('+')}=0", "untrained")
    assert not (tmp_path / "metrics.json").exists()
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("model.lam=inf", "model.lam=inf: it must be a finite number"),
        ("model.search={lam:[10,nan]}", "model.lam=nan: it must be a finite number"),
    ],
)
def test_non_finite_settings_are_refused_before_any_fit(tmp_path, override, words):
    proc = run_cli(
        "train",
        "model=ease",
        "data=synthetic",
        "logger=csv",
        override,
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        check=False,
    )
    one_line_refusal(proc, words)
    assert not (tmp_path / "metrics.json").exists()


def test_a_closed_form_fit_with_non_finite_state_is_refused():
    class Broken(EASE):
        def fit_matrix(self, matrix):
            super().fit_matrix(matrix)
            self.B[0, 1] = float("nan")

    matrix = sp.random(20, 10, density=0.3, format="csr", dtype=np.float32, random_state=0)
    with pytest.raises(AdvrecError, match=r"Broken fitted non-finite values \(B\)"):
        Broken(20, 10, lam=1.0).fit_checked(matrix)


@pytest.mark.parametrize("key", ["model.batch_size_g", "model.batch_size_d"])
def test_a_gan_batch_size_below_one_is_one_line_and_leaves_nothing(tmp_path, key):
    run = tmp_path / "run"
    proc = run_cli("train", *GAN, f"{key}=0", f"hydra.run.dir={run}", cwd=tmp_path, check=False)
    one_line_refusal(proc, f"{key}=0", "a whole number >= 1")
    assert not (run / "csv").exists() and not (run / "metrics.json").exists()


# -- output folders that cannot be written -------------------------------------------------
def test_an_unwritable_run_folder_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        multirun = ["-m"] if key == "hydra.sweep.dir" else []
        proc = run_cli(
            "train",
            *multirun,
            "model=pop",
            "data=synthetic",
            f"{key}={blocker / 'run'}",
            cwd=tmp_path,
            check=False,
        )
        one_line_refusal(proc, f"cannot write the output folder {blocker / 'run'}", key)


def test_a_read_only_file_system_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(ro)], check=False)
    if mount.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        proc = run_cli(
            "train", "model=pop", "data=synthetic", f"hydra.run.dir={ro / 'run'}", cwd=tmp_path,
            check=False,
        )  # fmt: skip
        one_line_refusal(proc, "Read-only file system", "hydra.run.dir=<folder>")
    finally:
        subprocess.run(["umount", str(ro)], check=False)


# -- reports that would average unlike things ----------------------------------------------
def _run(root: Path, name: str, ks=(5, 20), **fields) -> None:
    run = root / name
    run.mkdir(parents=True)
    metrics = {"model": "EASE", "data": "d", "protocol": "validated", "seed": 1, **fields}
    metrics.update({f"test/{m}@{k}": 0.1 * k for m in ("precision", "recall", "ndcg") for k in ks})
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_a_group_by_key_that_no_run_has_is_refused(tmp_path):
    _run(tmp_path / "runs", "a")
    _run(tmp_path / "runs", "b", model="TopPop")
    proc = run_cli(
        "report", f"runs={tmp_path / 'runs'}", "group_by=[modle]", f"out={tmp_path / 'o'}",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    one_line_refusal(proc, "group_by key 'modle' is in none of the 2 runs")
    assert not (tmp_path / "o" / "report.md").exists()


def test_a_cell_says_how_many_runs_are_behind_it(tmp_path):
    _run(tmp_path / "runs", "a", ks=(5, 20))
    _run(tmp_path / "runs", "b", ks=(5, 20), seed=2)
    _run(tmp_path / "runs", "c", ks=(5, 10), seed=3)  # no @20 columns
    run_cli("report", f"runs={tmp_path / 'runs'}", f"out={tmp_path / 'o'}", cwd=tmp_path)
    row = (tmp_path / "o" / "report.md").read_text().splitlines()[2]
    assert "| 3 |" in row and row.count("(n=2)") == 3, row


def test_a_metrics_json_that_is_not_an_object_is_one_line(tmp_path):
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "metrics.json").write_text("[1, 2]")
    proc = run_cli("report", f"runs={tmp_path / 'runs'}", cwd=tmp_path, check=False)
    one_line_refusal(proc, "holds a JSON list, not the object advrec-train writes")


# -- searches that would corrupt their own study -------------------------------------------
def test_a_journal_with_a_torn_last_record_is_healed_and_resumes(tmp_path):
    import optuna

    path = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(path))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "par')  # killed
    study = optuna.load_study(study_name="s", storage=open_storage(path))
    assert len(study.trials) == 3 and path.read_bytes() == whole
    assert (tmp_path / "optuna.journal.torn").read_bytes().startswith(b'{"op_code": 5')
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # appends cleanly
    assert len(optuna.load_study(study_name="s", storage=open_storage(path)).trials) == 4
    assert heal_journal(path) == 0


def test_a_second_search_into_a_busy_folder_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    lock = SweepLock(sweep)
    lock.acquire()  # a search that is running there
    try:
        proc = run_cli(
            "train",
            "hparams_search=ease",
            "data=synthetic",
            "logger=none",
            "hydra.sweeper.n_trials=1",
            f"hydra.sweep.dir={sweep}",
            cwd=tmp_path,
            check=False,
        )
        one_line_refusal(proc, "another search (pid", f"is running in {sweep}", "hydra.sweep.dir")
        assert not (sweep / "optuna.journal").exists()
    finally:
        lock.release()
    again = SweepLock(sweep)  # free again once its holder let go
    again.acquire()
    again.release()


# -- the test suite, however it is started -------------------------------------------------
def test_entry_points_started_by_the_tests_get_a_default_ctrl_c(tmp_path):
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `nohup pytest &`
    try:
        plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        fixed = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            preexec_fn=as_from_a_terminal,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert plain.stdout.strip() == "False"  # what the Ctrl-C tests met before
    assert fixed.stdout.strip() == "True"
