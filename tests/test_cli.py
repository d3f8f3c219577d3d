"""End-to-end runs through the real Hydra entry points, on tiny hand-made files."""

import json
from pathlib import Path

import pandas as pd
import pytest

from advrec.metrics import METRICS
from tests.helpers import data_args, run_cli, run_recommend, wandb_run_record
from tests.helpers.reference import assert_same_metrics


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    root, _ = tiny
    run = tmp_path_factory.mktemp("run")
    proc = run_cli(
        "train",
        *data_args(root),
        "model=ease",
        "model.search={lam:[1,10,100]}",
        f"hydra.run.dir={run}",
        cwd=run,
    )
    return run, json.loads((run / "metrics.json").read_text()), proc


def test_train_writes_metrics_json(trained, tiny):
    run, m, proc = trained
    n_test_users = tiny[1]["user"].nunique()
    for stage in ("val", "test"):
        for name in METRICS:
            for k in (5, 10, 20):
                assert 0.0 <= m[f"{stage}/{name}@{k}"] <= 1.0
    assert m["protocol"] == "validated" and m["optimistic"] is False
    assert m["seed"] == 42 and m["wall_time_s"] > 0
    assert m["dataset"]["n_users"] == 50 and m["dataset"]["n_test"] > 0
    assert [row["lam"] for row in m["selection"]] == [1, 10, 100]
    assert m["hparams"]["lam"] in (1, 10, 100)
    # users without a test item (u49 at least) are left out of the means, and counted
    assert m["test/n_users_without_targets"] == 50 - n_test_users >= 1
    assert m["test/n_users"] == n_test_users
    assert Path(m["checkpoint"]).is_file()
    assert "test @20" in proc.stdout and "ndcg" in proc.stdout  # the final table
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "csv" / "metrics.csv").is_file()


def test_eval_reproduces_the_test_metrics(trained, tmp_path):
    run, m, _ = trained
    run_cli("eval", f"ckpt_path={m['checkpoint']}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    again = json.loads((tmp_path / "metrics.json").read_text())
    for key, val in m.items():
        if key.startswith("test/"):
            assert again[key] == pytest.approx(val, abs=1e-7), key


def test_recommend_scored_independently_matches_train(trained, tiny, tmp_path):
    run, m, _ = trained
    root, test_df = tiny
    out = tmp_path / "recs.csv"
    run_recommend(m["checkpoint"], out, tmp_path)
    recs = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    assert list(recs.columns) == ["user_id", "item_id", "rank", "score"]
    train = pd.read_csv(root / "t.train", sep=" ", header=None, names=["u", "i", "r"])
    seen = set(zip(train.u, train.i, strict=True))
    assert not any((u, i) in seen for u, i in zip(recs.user_id, recs.item_id, strict=True))
    assert_same_metrics(m, recs, {u: set(g.item) for u, g in test_df.groupby("user")})


def test_recommend_for_listed_users(trained, tmp_path):
    _, m, _ = trained
    out = tmp_path / "some.csv"
    run_cli(
        "recommend",
        f"ckpt_path={m['checkpoint']}",
        "k=3",
        f"output={out}",
        "users=[u3,u7]",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
    )
    recs = pd.read_csv(out)
    assert sorted(set(recs.user_id)) == ["u3", "u7"] and len(recs) == 6


def test_original_protocol_is_flagged_optimistic(tiny, tmp_path):
    root, _ = tiny
    run_cli(
        "train",
        *data_args(root),
        "model=pop",
        "protocol=original",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["optimistic"] is True and not any(k.startswith("val/") for k in m)


@pytest.mark.parametrize("model", ["itemknn", "pop"])
def test_other_models_run_on_synthetic(model, tmp_path):
    run_cli(
        "train",
        "data=synthetic",
        f"model={model}",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["test/ndcg@10"] > 0


def test_wandb_runs_say_what_they_are(tiny, tmp_path):
    """An offline run lands in <run>/wandb with the sync command printed; a validated and an
    optimistic run of the same model differ in name, group, tags and config."""
    root, _ = tiny
    seen = {}
    for protocol in ("validated", "original"):
        out = tmp_path / protocol
        proc = run_cli(
            "train",
            *data_args(root),
            "model=pop",
            f"protocol={protocol}",
            "logger=default",
            "seed=3",
            f"hydra.run.dir={out}",
            cwd=tmp_path,
            env={"WANDB_MODE": "offline"},
        )
        (run,) = (out / "wandb").glob("offline-run-*")
        assert f"wandb sync {run}" in proc.stdout.replace("\n", "")
        assert "wandb:" not in proc.stderr  # W&B's banner and warnings stay out of the way
        seen[protocol] = wandb_run_record(out)
    ok, bad = seen["validated"], seen["original"]
    assert ok["name"] == "TopPop-tiny-validated-s3" and bad["name"] == "TopPop-tiny-original-s3"
    assert ok["project"] == "advrec" and ok["job_type"] == "train"
    assert ok["group"] == "tiny-validated" and bad["group"] == "tiny-original"
    assert "optimistic" in bad["tags"] and "optimistic" not in ok["tags"]
    assert {"protocol:validated", "data:tiny"} <= set(ok["tags"])
    for rec, protocol in ((ok, "validated"), (bad, "original")):
        cfg = rec["config"]
        assert cfg["protocol"]["name"] == protocol and cfg["seed"] == 3
        assert cfg["data"]["name"] == "tiny" and cfg["choices"]["model"] == "pop"
        assert cfg["trainer"]["max_epochs"] == 1 and "_target_" in cfg["model"]
    assert bad["config"]["protocol"]["optimistic"] and not ok["config"]["protocol"]["optimistic"]


# -- user errors: one clear message, exit 2 (Hydra's own: exit 1), no traceback, no output --
def assert_clean_failure(proc, *needles, code=2):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "group,name,choices", [("model", "easy", "ease"), ("data", "ml99k", "ml100k")]
)
def test_unknown_choice_lists_the_options(group, name, choices, tmp_path):
    proc = run_cli("train", f"{group}={name}", cwd=tmp_path, check=False)
    assert_clean_failure(proc, f"Could not find '{group}/{name}'", choices, code=1)


def test_missing_data_file(tmp_path):
    proc = run_cli(
        "train",
        "data=cfgan_ml100k",
        f"paths.data_dir={tmp_path / 'none'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "data file not found", str(tmp_path / "none"), "ADVREC_DATA_DIR")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_bad_column_in_own_file(tmp_path):
    (tmp_path / "log.csv").write_text("customer,sku\na,x\nb,y\n")
    proc = run_cli(
        "train",
        "data=files",
        f"data.source.path={tmp_path / 'log.csv'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "not found", "['customer', 'sku']", "data.source.columns")


def _own_files(tiny: Path, test: pd.DataFrame, out: Path) -> list[str]:
    """tests.helpers.write_tiny's split as CSVs under `out` with a customer's column names:
    every fifth training row goes to a validation file; validation and test keep the ids the
    training file has."""
    cols = ["customer", "sku", "stars"]
    train = pd.read_csv(tiny / "t.train", sep=" ", header=None, names=cols)
    is_val = train.index % 5 == 4
    train, val = train[~is_val], train[is_val]
    test = test.set_axis(cols, axis=1)
    for name, df in (("train", train), ("val", val), ("test", test)):
        known = df["customer"].isin(train["customer"]) & df["sku"].isin(train["sku"])
        df[known].to_csv(out / f"{name}.csv", index=False)
    return [
        "data=split_files",
        f"data.source.train={out / 'train.csv'}",
        f"data.source.test={out / 'test.csv'}",
        f"data.source.val={out / 'val.csv'}",
        "data.source.columns.user=customer",
        "data.source.columns.item=sku",
        "logger=csv",
    ]


def test_own_train_validation_and_test_files_in_one_line(tiny, tmp_path):
    """The README's own-split command, end to end: the validation file chooses, the test file
    is scored, and advrec-eval finds the files again from the checkpoint."""
    root, test = tiny
    args = [*_own_files(root, test, tmp_path), "model=ease", "model.search={lam:[1,10,100]}"]
    run_cli("train", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    sizes = {f: len(pd.read_csv(tmp_path / f"{f}.csv")) for f in ("train", "val", "test")}
    assert [m["dataset"][f"n_{f}"] for f in ("train", "val", "test")] == list(sizes.values())
    assert min(sizes.values()) > 0
    assert len(m["selection"]) == 3 and m["refit"] == "train+validation"
    ev = tmp_path / "eval"
    run_cli("eval", f"ckpt_path={m['checkpoint']}", f"hydra.run.dir={ev}", cwd=tmp_path)
    again = json.loads((ev / "metrics.json").read_text())
    assert again["test/ndcg@10"] == m["test/ndcg@10"]

    # a test user the training file never has: one line naming it, then dropped on request
    with open(tmp_path / "test.csv", "a") as f:
        f.write("stranger,i1,5\n")
    proc = run_cli("train", *args, f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path, check=False)
    assert_clean_failure(proc, "1 user id(s) (e.g. ['stranger'])", "data.source.test_only=drop")
    drop = [*args, "data.source.test_only=drop", f"hydra.run.dir={tmp_path / 'drop'}"]
    run_cli("train", *drop, cwd=tmp_path)
    dropped = json.loads((tmp_path / "drop" / "metrics.json").read_text())
    assert dropped["dataset"]["n_test"] == sizes["test"]


def test_missing_mandatory_value(tmp_path):
    proc = run_cli(
        "train", "data=files", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=False
    )
    assert_clean_failure(proc, "data.source.path=...")


def test_unknown_model_option(tmp_path):
    proc = run_cli(
        "train",
        "data=synthetic",
        "+model.lamda=3",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "bad model option", "lamda")


def test_recommend_unknown_user_writes_nothing(trained, tmp_path):
    _, m, _ = trained
    out = tmp_path / "recs.csv"
    proc = run_cli(
        "recommend",
        f"ckpt_path={m['checkpoint']}",
        f"output={out}",
        "users=[nobody]",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "not in the training data", "nobody")
    assert not out.exists()


def test_eval_missing_checkpoint(tmp_path):
    proc = run_cli(
        "eval",
        f"ckpt_path={tmp_path / 'x.ckpt'}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "checkpoint not found")


def test_the_docs_python_api_example_runs(tmp_path):
    """The docs' `advrec.train` / `advrec.recommend` example (docs/python-api.md), as printed."""
    import subprocess
    import sys

    from tests.helpers import REPO

    text = (REPO / "docs" / "python-api.md").read_text()
    code = text.split("<!-- api-example -->\n```python\n", 1)[1].split("```", 1)[0]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: 1 user id(s) not in the training data" in proc.stdout
    assert "user_id" in proc.stdout and (tmp_path / "runs/api_ease/metrics.json").is_file()
