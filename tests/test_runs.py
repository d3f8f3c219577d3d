"""A run never lies about failure: divergence, crashes, kills, resumes, reused run dirs, moved
or changed data, full disks and damaged caches, each driven through the entry points."""

import json
import os
import shlex
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from advrec.utils.io import read_checkpoint
from tests.helpers import REPO, one_line_refusal, run_cli

CFGAN = [
    "model=cfgan",
    "data=synthetic",
    "model.g_hidden=[32]",
    "model.d_hidden=[16]",
    "trainer.check_val_every_n_epoch=1",
    "logger=csv",
]
KILLERS = ["allow_targets=[tests.helpers.killers.]"]  # test callbacks, allowed explicitly
ENV = {"PYTHONPATH": str(REPO)}


def train(tmp_path, *args, run="run", check=False):
    return run_cli(
        "train", *args, f"hydra.run.dir={tmp_path / run}", cwd=tmp_path, env=ENV, check=check
    )


def _finite(path) -> bool:
    state = read_checkpoint(path)["state_dict"]
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# -- never a number from a diverged or failed run ------------------------------------------
def test_a_diverging_run_stops_with_one_line_and_no_result(tmp_path):
    proc = train(tmp_path, *CFGAN, "model.lr_g=1e30", "model.lr_d=1e30", "trainer.max_epochs=2")
    one_line_refusal(proc, "diverged in epoch 1", "non-finite weights", "no metrics.json")
    out = tmp_path / "run"
    assert not (out / "metrics.json").exists()
    assert not list(out.glob("checkpoints/*.ckpt"))  # nothing of the NaN state was saved


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    proc = train(
        tmp_path,
        *CFGAN,
        *KILLERS,
        "trainer.max_epochs=3",
        "+callbacks.poison._target_=tests.helpers.killers.PoisonAt",
        "+callbacks.poison.epoch=1",
    )
    good = tmp_path / "run" / "checkpoints" / "best-epoch000.ckpt"
    one_line_refusal(proc, "diverged in epoch 2", f"the last good checkpoint is {good}")
    assert read_checkpoint(good)["epoch"] == 0 and _finite(good)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_failure_before_training_leaves_no_checkpoint(tmp_path):
    raise_at = "+callbacks.fail._target_=tests.helpers.killers.RaiseAt"
    proc = train(tmp_path, *CFGAN, *KILLERS, raise_at)
    assert proc.returncode == 1 and "failed before training" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_crash_mid_training_leaves_a_marked_resume_point(tmp_path):
    proc = train(
        tmp_path,
        *CFGAN,
        *KILLERS,
        "+callbacks.fail._target_=tests.helpers.killers.RaiseAt",
        "+callbacks.fail.at=3",
    )
    assert proc.returncode == 1 and "failed mid-training" in proc.stderr
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["advrec_status"] == "interrupted (RuntimeError)"
    ev = run_cli("eval", f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'ev'}", cwd=tmp_path)
    assert "mid-run checkpoint (interrupted (RuntimeError)" in ev.stdout + ev.stderr
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["checkpoint_status"] != (
        "final"
    )


# -- resume --------------------------------------------------------------------------------
def test_resume_refuses_a_changed_config_and_keeps_the_earlier_logs(tmp_path):
    train(tmp_path, *CFGAN, "trainer.max_epochs=2", check=True)
    log = tmp_path / "run" / "csv" / "metrics.csv"
    before = log.read_text()
    proc = train(tmp_path, *CFGAN, "trainer.max_epochs=3", "ckpt_path=last", "seed=7")
    one_line_refusal(proc, "seed: 42 -> 7", "accept_changes=[seed]")
    assert log.read_text() == before  # a refused resume touches nothing
    train(tmp_path, *CFGAN, "trainer.max_epochs=3", "ckpt_path=last", check=True)
    assert (log.parent / "metrics.before-resume-1.csv").read_text() == before
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 3


@pytest.mark.parametrize("protocol", ["validated", "original"])
def test_a_run_keeps_one_last_checkpoint_and_resumes_from_the_newest(tmp_path, protocol):
    # a resume point every 3 batches and at the end, validation every epoch: before, Lightning's
    # save_last wrote last.ckpt too, and found the resume point's file there: last-v1.ckpt
    args = [*CFGAN, f"protocol={protocol}", "callbacks.resume_point.every_batches=3"]
    train(tmp_path, *args, "trainer.max_epochs=3", check=True)
    ckpts = tmp_path / "run" / "checkpoints"
    assert [p.name for p in ckpts.glob("last*")] == ["last.ckpt"]
    last = read_checkpoint(ckpts / "last.ckpt")
    assert last["advrec_status"] == "end of training" and last["epoch"] == 3  # epochs done
    steps = last["global_step"]
    train(tmp_path, *args, "trainer.max_epochs=4", "ckpt_path=last", check=True)
    assert [p.name for p in ckpts.glob("last*")] == ["last.ckpt"]
    resumed = read_checkpoint(ckpts / "last.ckpt")
    assert resumed["epoch"] == 4 and resumed["global_step"] == steps * 4 // 3


def test_ckpt_path_last_with_nothing_to_resume_says_so(tmp_path):
    proc = train(tmp_path, *CFGAN, "ckpt_path=last", run="fresh")
    one_line_refusal(proc, "nothing to resume", "hydra.run.dir")
    assert not (tmp_path / "fresh" / "metrics.json").exists()


@pytest.mark.slow
def test_a_sigkilled_run_resumes_from_its_periodic_resume_point(tmp_path):
    args = [*CFGAN, "trainer.max_epochs=3", "callbacks.resume_point.every_batches=7"]
    train(tmp_path, *args, run="whole", check=True)
    killed = train(
        tmp_path,
        *args,
        *KILLERS,
        "+callbacks.kill._target_=tests.helpers.killers.KillAt",
        "+callbacks.kill.epoch=1",
        "+callbacks.kill.at=9",
        "+callbacks.kill.sig=SIGKILL",
        run="cut",
    )
    assert killed.returncode == -9  # no handler ran: only the periodic save is there
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["advrec_status"] == "running"
    train(
        tmp_path, *args, "ckpt_path=last", "accept_changes=[callbacks.kill]", run="cut", check=True
    )
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for key, value in whole.items():
        if key.startswith("test/"):
            assert resumed[key] == value, key


def test_ctrl_c_says_how_to_resume_and_the_printed_command_does(tmp_path):
    args = [*CFGAN, "trainer.max_epochs=2", *KILLERS]
    kill = ["+callbacks.kill._target_=tests.helpers.killers.KillAt", "+callbacks.kill.epoch=1"]
    cut = train(tmp_path, *args, *kill, "+callbacks.kill.sig=SIGINT", run="cut")
    assert cut.returncode == 130 and "Traceback" not in cut.stderr, cut.stderr[-2000:]
    (line,) = [ln for ln in cut.stderr.splitlines() if ln.startswith("advrec: stopped by Ctrl-C")]
    resume = shlex.split(line.split("Resume: ", 1)[1])
    assert resume[0] == "advrec-train" and resume[-2:] == [
        f"hydra.run.dir={tmp_path / 'cut'}",
        "ckpt_path=last",
    ]
    assert read_checkpoint(tmp_path / "cut" / "checkpoints" / "last.ckpt")["advrec_status"] == (
        "interrupted (KeyboardInterrupt)"
    )
    # the printed command, with the killer switched off (a change the resume must accept)
    off = ["callbacks.kill.epoch=99", "accept_changes=[callbacks.kill]"]
    run_cli("train", *resume[1:], *off, cwd=tmp_path, env=ENV)
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["epochs"] == 2


# -- run dirs ------------------------------------------------------------------------------
def test_a_reused_run_dir_is_refused_unless_overwrite(tmp_path):
    args = ["model=pop", "data=synthetic", "logger=csv"]
    train(tmp_path, *args, check=True)
    first = (tmp_path / "run" / "metrics.json").read_text()
    one_line_refusal(train(tmp_path, *args, "seed=3"), "already holds a run", "overwrite=true")
    assert (tmp_path / "run" / "metrics.json").read_text() == first
    train(tmp_path, *args, "seed=3", "overwrite=true", check=True)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["seed"] == 3
    for ckpt in (tmp_path / "run" / "checkpoints").iterdir():  # none left of the first run
        assert read_checkpoint(ckpt)["advrec_config"]["seed"] == 3, ckpt


# -- checkpoints are tied to their data ------------------------------------------------------
@pytest.fixture()
def logged(tmp_path):
    rng = np.random.default_rng(0)
    pairs = {(f"u{u}", f"i{i}") for u, i in rng.integers(0, [40, 30], size=(500, 2))}
    path = tmp_path / "data" / "log.csv"
    path.parent.mkdir()
    pd.DataFrame(sorted(pairs), columns=["user", "item"]).to_csv(path, index=False)
    return path


def test_a_checkpoint_refuses_changed_data_and_follows_moved_data(tmp_path, logged):
    # a relative path, as typed: the checkpoint stores where it really is
    train(tmp_path, "model=pop", "data=files", "data.source.path=data/log.csv", check=True)
    ckpt = tmp_path / "run" / "checkpoints" / "final.ckpt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def ev(*args, run="ev"):
        return run_cli(
            "eval",
            f"ckpt_path={ckpt}",
            *args,
            f"hydra.run.dir={elsewhere / run}",
            cwd=elsewhere,
            check=False,
        )

    assert ev().returncode == 0  # from another folder
    original = logged.read_text()
    logged.write_text(original.rsplit("\n", 2)[0] + "\n")  # one interaction fewer
    one_line_refusal(ev(run="ev2"), "the data changed under", "+data.source.path=")
    moved = tmp_path / "moved.csv"
    moved.write_text(original)
    logged.unlink()
    one_line_refusal(ev(run="ev3"), "data file not found", "+data.source.path=")
    assert ev(f"+data.source.path={moved}", run="ev4").returncode == 0
    first = json.loads((elsewhere / "ev" / "metrics.json").read_text())
    again = json.loads((elsewhere / "ev4" / "metrics.json").read_text())
    assert {k: v for k, v in first.items() if "/" in k} == {
        k: v for k, v in again.items() if "/" in k
    }


def test_recommend_serves_known_users_without_the_data_file(tmp_path, logged):
    train(tmp_path, "model=pop", "data=files", f"data.source.path={logged}", check=True)
    ckpt = tmp_path / "run" / "checkpoints" / "final.ckpt"

    def rec(out):
        run_cli(
            "recommend",
            f"ckpt_path={ckpt}",
            "k=5",
            f"output={out}",
            f"hydra.run.dir={tmp_path / out}_run",
            cwd=tmp_path,
        )
        return (tmp_path / out).read_text()

    with_data = rec("a.csv")
    logged.unlink()
    assert rec("b.csv") == with_data
    assert with_data.splitlines()[1].startswith("u")  # raw ids, not positions


# -- disks and caches ----------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_leaves_no_truncated_artefact(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(small)])
    if mounted.returncode != 0:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        proc = run_cli(
            "train",
            "model=ease",
            "data=synthetic",
            "logger=csv",
            f"hydra.run.dir={small / 'run'}",
            cwd=tmp_path,
            check=False,
        )
        one_line_refusal(proc, "could not write the checkpoint", "free space")
        assert not [p for p in small.rglob("*") if p.suffix in (".ckpt", ".tmp")]
        assert not (small / "run" / "metrics.json").exists()
    finally:
        subprocess.run(["umount", str(small)])


def test_a_damaged_split_cache_is_reported_and_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    env = {"ADVREC_CACHE_DIR": str(cache)}
    args = ["model=pop", "data=synthetic", "logger=csv"]
    run_cli("train", *args, f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path, env=env)
    (entry,) = cache.glob("splits/*.npz")
    assert entry.stat().st_mode & 0o777 == 0o666 & ~_umask()  # shared caches stay readable
    good = entry.read_bytes()
    entry.write_bytes(good[: len(good) // 2])
    proc = run_cli("train", *args, f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path, env=env)
    assert f"split cache {entry} is damaged" in proc.stderr + proc.stdout
    assert entry.read_bytes() == good
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in "ab")
    assert a["test/ndcg@10"] == b["test/ndcg@10"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_atomic_checkpoint_write_that_fails_keeps_the_old_file(tmp_path, monkeypatch):
    from advrec.errors import AdvrecError
    from advrec.run.build import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"a": torch.ones(2)}, path)

    def full(obj, f):
        f.write(b"half")
        raise RuntimeError("unexpected pos 6656 vs 6550")  # torch's report of a full disk

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(AdvrecError, match="could not write the checkpoint"):
        io.save_checkpoint({"a": torch.zeros(2)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert torch.equal(read_checkpoint(path)["a"], torch.ones(2))


# -- one clear line for settings validation cannot honour -----------------------------------
@pytest.mark.parametrize(
    "rows,overrides,words",
    [
        ("user,item,rating\nu1,i1,5\nu2,i2,3\n", ["data.source.threshold=4"], ["threshold=4"]),
        ("user,item\n", [], ["no data rows"]),
        ("user,item\nu1,i1\nu2,i2\nu3,i1\n", [], ["single interaction", "random_holdout"]),
    ],
)
def test_a_file_that_cannot_be_used_as_configured_is_one_line(tmp_path, rows, overrides, words):
    (tmp_path / "log.csv").write_text(rows)
    proc = train(tmp_path, "model=pop", "data=files", "data.source.path=log.csv", *overrides)
    one_line_refusal(proc, *words)
    assert "raise split.test_fraction" not in proc.stderr
    assert "lower the threshold" not in proc.stderr


def test_a_missing_file_is_not_blamed_on_advrec_data_dir(tmp_path):
    proc = train(tmp_path, "model=pop", "data=files", "data.source.path=nope.csv")
    one_line_refusal(proc, "data file not found", "data.source.path=nope.csv")
    assert "ADVREC_DATA_DIR" not in proc.stderr


@pytest.mark.parametrize(
    "overrides,words",
    [
        (["ks=[1,5]"], ["protocol.monitor=val/ndcg@10", "ks=[1, 5, 10]"]),
        (["protocol.monitor=val/ndcg"], ["protocol.monitor='val/ndcg'"]),
        (["protocol.val_fraction=0.00001"], ["left no validation", "protocol=original"]),
    ],
)
def test_a_monitor_validation_cannot_produce_is_one_line(tmp_path, overrides, words):
    proc = train(tmp_path, "model=pop", "data=synthetic", "logger=csv", *overrides)
    one_line_refusal(proc, *words)
