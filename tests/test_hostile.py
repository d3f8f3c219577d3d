"""Checkpoints and configs are untrusted input: they are read as data, never run as code."""

import json
import pickle

import pytest
import torch

from tests.helpers import data_args, one_line_refusal, run_cli


class _Payload:
    """Unpickling this writes a file: what a crafted checkpoint could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _load_with_eval_and_recommend(ckpt, tmp_path):
    """The two entry points that read a checkpoint, each run the way a user runs it."""
    for entry in ("eval", "recommend"):
        yield run_cli(
            entry,
            f"ckpt_path={ckpt}",
            f"hydra.run.dir={tmp_path / entry}",
            cwd=tmp_path,
            check=False,
        )


def test_a_crafted_pickle_checkpoint_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    with open(ckpt, "wb") as f:
        pickle.dump({"advrec_config": {}, "state_dict": _Payload(marker)}, f)
    for proc in _load_with_eval_and_recommend(ckpt, tmp_path):
        one_line_refusal(proc, "other than tensors and plain data")
        assert not marker.exists()


def test_a_stored_target_outside_advrec_is_refused(tiny, tmp_path):  # noqa: F811
    root, _ = tiny
    run_cli("train", *data_args(root), "model=pop", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    ckpt = json.loads((tmp_path / "metrics.json").read_text())["checkpoint"]
    state = torch.load(ckpt, weights_only=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    state["advrec_config"]["data"]["source"] = {
        "_target_": "builtins.open",
        "file": str(victim),
        "mode": "w",
    }
    evil = tmp_path / "evil.ckpt"
    torch.save(state, evil)
    for proc in _load_with_eval_and_recommend(evil, tmp_path):
        one_line_refusal(proc, "data.source._target_='builtins.open'", "allow_targets")
    assert victim.read_text() == "precious"


def test_a_foreign_target_in_the_training_config_needs_an_explicit_allowance(tmp_path):
    proc = run_cli(
        "train",
        "model=pop",
        "data=synthetic",
        "logger=csv",
        "data.source._target_=shutil.copyfile",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        check=False,
    )
    one_line_refusal(proc, "shutil.copyfile")


def test_recommend_never_overwrites_by_accident(tiny, tmp_path):  # noqa: F811
    root, _ = tiny
    run_cli("train", *data_args(root), "model=pop", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    ckpt = json.loads((tmp_path / "metrics.json").read_text())["checkpoint"]
    before = open(ckpt, "rb").read()

    def rec(*args):
        return run_cli(
            "recommend",
            f"ckpt_path={ckpt}",
            "k=3",
            *args,
            f"hydra.run.dir={tmp_path / 'r'}",
            cwd=tmp_path,
            check=False,
        )

    one_line_refusal(rec(f"output={ckpt}"), "checkpoint being read")
    one_line_refusal(rec(f"output={ckpt}", "overwrite=true"), "checkpoint being read")
    assert open(ckpt, "rb").read() == before
    one_line_refusal(rec(f"output={tmp_path}"), "is a directory")
    out = tmp_path / "recs.csv"
    out.write_text("mine")
    one_line_refusal(rec(f"output={out}"), "exists", "overwrite=true")
    assert out.read_text() == "mine"
    assert rec(f"output={out}", "overwrite=true").returncode == 0
    assert out.read_text().startswith("user_id,item_id,rank,score")


def test_eval_and_recommend_refuse_a_diverged_checkpoint(tiny, tmp_path):  # noqa: F811
    root, _ = tiny
    run_cli("train", *data_args(root), "model=pop", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    ckpt = json.loads((tmp_path / "metrics.json").read_text())["checkpoint"]
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"]["popularity"][:] = float("nan")
    torch.save(state, tmp_path / "nan.ckpt")
    for proc in _load_with_eval_and_recommend(tmp_path / "nan.ckpt", tmp_path):
        one_line_refusal(proc, "non-finite weights")
    assert not (tmp_path / "recs.csv").exists()
    assert not (tmp_path / "eval" / "metrics.json").exists()


@pytest.mark.parametrize(
    "overrides,words",
    [
        (["model=ease", "model.lam=abc"], ["model.lam='abc'", "> 0"]),
        (["model=ease", "model.lam=-1e9"], ["model.lam=", "> 0"]),
        (["model=ease", "model.search={lam:[1,-2]}"], ["model.lam=-2"]),
        (["model=itemknn", "model.topk=-1"], ["model.topk=-1", ">= 1"]),
        (["model=pop", "ks=[]"], ["ks=[]", ">= 1"]),
        (["model=pop", "ks=[0]"], ["ks=[0]"]),
        (["model=pop", "ks=[-5]"], ["ks=[-5]"]),
        (["model=pop", "seed=-1"], ["seed=-1", "[0, 2^32)"]),
        (["model=pop", "data.eval_batch_size=0"], ["data.eval_batch_size=0", ">= 1"]),
        (["model=cfgan", "model.g_hidden=[400,0]"], ["model.g_hidden=[400, 0]", ">= 1"]),
        (["hparams_search=diffrec", "hydra.mode=RUN", "hp.dims=0"], ["model.hidden=[0]"]),
        (["hparams_search=diffrec", "hydra.mode=RUN", "hp.dims=abc"], ["'abc'", "200-600"]),
        (["model=cfgan", "callbacks.resume_point.at_end=maybe"], ["at_end='maybe'", "true"]),
        (["model=cfgan", "callbacks.resume_point.every_batches=0"], ["every_batches=0"]),
        (["model=cfgan", "+callbacks.resume_point.bogus=1"], ["callbacks.resume_point", "bogus"]),
    ],
)
def test_a_value_out_of_range_is_one_line_naming_the_key(tmp_path, overrides, words):
    proc = run_cli(
        "train",
        *overrides,
        "data=synthetic",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        check=False,
    )
    one_line_refusal(proc, *words)
    assert not (tmp_path / "metrics.json").exists()
