"""A tiny multirun through the basic sweeper, then advrec-report on it."""

import json

import pandas as pd
import pytest

from advrec.errors import AdvrecError
from advrec.report import find_runs, load_runs, summary_table, to_markdown
from tests.helpers import REPO, run_cli

TINY = [
    "data=synthetic",
    "data.source.n_users=120",
    "data.source.n_items=60",
    "data.source.n_interactions=1500",
]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("multirun")
    run_cli(
        "train",
        "-m",
        *TINY,
        "model=pop,ease,cfgan",
        "seed=1,2",
        "trainer.max_epochs=3",
        "trainer.check_val_every_n_epoch=1",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
        cwd=sweep,
    )
    return sweep


def test_basic_sweeper_runs_every_combination(multirun):
    found = find_runs([str(multirun)])
    assert len(found) == 6
    runs = [json.loads(p.read_text()) for p in found]
    assert sorted((r["label"], r["seed"]) for r in runs) == sorted(
        (m, s) for m in ("TopPop", "EASE", "CFGAN") for s in (1, 2)
    )


@pytest.fixture(scope="module")
def report(multirun, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    run_cli("report", f"runs={multirun}", f"out={out}", cwd=out)
    return out


def test_report_table_equals_the_runs_metrics(multirun, report):
    table = pd.read_csv(report / "report.csv")
    runs = [json.loads(p.read_text()) for p in multirun.rglob("metrics.json")]
    for label in ("TopPop", "EASE", "CFGAN"):
        mine = [r for r in runs if r["label"] == label]
        row = table[table["label"] == label].iloc[0]
        assert row["n_runs"] == 2
        for metric in ("precision", "recall", "ndcg"):
            values = pd.Series([r[f"test/{metric}@20"] for r in mine])
            assert row[f"test/{metric}@20_mean"] == pytest.approx(values.mean(), abs=1e-9)
            assert row[f"test/{metric}@20_std"] == pytest.approx(values.std(), abs=1e-9)
    best = table.loc[table["test/ndcg@20_mean"].idxmax(), "label"]
    assert table.set_index("label").loc[best, "test/ndcg@20_best"]
    markdown = (report / "report.md").read_text()
    assert markdown.count("**") == 2 * 3  # one bold cell per metric column
    assert f"| {best} | synthetic | validated | 2 | " in markdown


def test_report_plots_are_written_pngs(report):
    for name in ("ranking.png", "metrics_at_k.png", "gan_training.png"):
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_group_by_any_metrics_key_and_std_of_one_run(tmp_path):
    for i, (cond, ndcg) in enumerate([("a", 0.3), ("a", 0.5), ("b", 0.2)]):
        run = tmp_path / f"r{i}"
        run.mkdir()
        metrics = {"model": "CFGAN", "hparams": {"condition": cond}, "test/ndcg@20": ndcg}
        (run / "metrics.json").write_text(json.dumps({**metrics, "wall_time_s": 1.0}))
    frame = load_runs(find_runs([str(tmp_path / "r*")]), ["label", "hparams.condition"])
    table = summary_table(frame, ["label", "hparams.condition"], ["test/ndcg@20"])
    assert table["test/ndcg@20_mean"].tolist() == pytest.approx([0.4, 0.2])
    md = to_markdown(table, ["label", "hparams.condition"], ["test/ndcg@20"])
    assert "| CFGAN | a | 2 | **0.4000 ± 0.1414** |" in md
    assert "| CFGAN | b | 1 | 0.2000 |" in md  # one run: no std


def test_report_errors_are_clear(tmp_path):
    proc = run_cli("report", f"runs={tmp_path}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "no metrics.json under" in proc.stderr
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.json").write_text(
        json.dumps({"model": "X", "data": "d", "protocol": "p", "test/ndcg@20": 0.1})
    )
    proc = run_cli("report", f"runs={tmp_path}", "k=50", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "['test/precision@50'" in proc.stderr


def test_report_logs_table_and_plots_to_wandb_offline(multirun, tmp_path, monkeypatch):
    from advrec.report import make_report

    monkeypatch.setenv("WANDB_MODE", "offline")
    make_report([str(multirun)], tmp_path, wandb=True)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = {p.name.split("_")[0] for p in runs[0].rglob("*.png")}
    assert {"metrics", "gan"} <= media  # metrics_at_k and gan_training were logged


@pytest.mark.parametrize(
    "data", ["cfgan_ml100k", "cfgan_ciao", "lastfm", "lastfm_coldstart", "lastfm_coldstart_heater"]
)
def test_benchmark_lists_every_tuned_model(data):
    from hydra import compose, initialize_config_dir

    from advrec.config import CONF_DIR

    bench = {"cfgan_ml100k": "benchmark_ml100k", "cfgan_ciao": "benchmark_ciao"}.get(
        data, f"benchmark_{data}"
    )
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", [f"experiment={bench}"], return_hydra_config=True)
        tuned = cfg.hydra.sweeper.params.tuned.split(",")
        suffix = data.removesuffix("_heater")  # both Last.fm cold-start splits share rows
        files = (REPO / "conf" / "tuned").glob(f"*_{suffix}.yaml")
        assert sorted(tuned) == sorted(p.stem for p in files)
        labels = set()
        for name in tuned:
            one = compose("train", [f"experiment={bench}", f"tuned={name}"])
            assert one.data.name == data and one.protocol.name == "validated"
            assert one.protocol.refit == "all"
            if data == "cfgan_ml100k":  # tuned values are fixed, not re-searched
                assert one.model.get("search") is None
            labels.add(one.label)
        assert len(labels) == len(tuned)  # one report row per model


def test_benchmark_runs_every_seed_then_reports(tmp_path):
    sweep = tmp_path / "bench"
    run_cli(
        "train",
        "experiment=benchmark_ml100k",  # a multirun by itself (hydra.mode=MULTIRUN)
        *TINY,
        "tuned=toppop_cfgan_ml100k,ease_cfgan_ml100k",  # the command line narrows the sweep
        "seed=1,2",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    table = pd.read_csv(sweep / "report" / "report.csv").set_index("label")
    assert table.loc["TopPop", "n_runs"] == 2 and table.loc["EASE^R", "n_runs"] == 2
    assert (sweep / "report" / "metrics_at_k.png").stat().st_size > 10_000


def test_runs_of_other_data_or_protocols_are_never_pooled(tmp_path):
    """The same label on two datasets once gave a fake '± .0009'."""
    from advrec.report import make_report

    for i, (data, protocol, ndcg) in enumerate(
        [("a", "validated", 0.3), ("b", "validated", 0.5), ("a", "original", 0.4)]
    ):
        run = tmp_path / "runs" / f"r{i}"
        run.mkdir(parents=True)
        m = {
            "model": "TopPop",
            "data": data,
            "protocol": protocol,
            "test/ndcg@20": ndcg,
            "test/precision@20": 0.1,
            "test/recall@20": 0.1,
            "epochs": 1,
            "selected_epoch": None,
            "refit": "train+validation",
            "wall_time_s": 1.0,
        }
        (run / "metrics.json").write_text(json.dumps(m))
    table = make_report([str(tmp_path / "runs")], tmp_path / "out")  # default grouping
    assert len(table) == 3 and (table["n_runs"] == 1).all()
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert {"data", "protocol", "epochs", "selected_epoch", "refit"} <= set(runs.columns)
    assert "WARNING" not in (tmp_path / "out" / "report.md").read_text()
    make_report([str(tmp_path / "runs")], tmp_path / "pooled", group_by=["label"])
    md = (tmp_path / "pooled" / "report.md").read_text()
    assert "WARNING" in md and "mixes data ['a', 'b']" in md and "mixes protocol" in md


def test_a_pretraining_is_a_row_of_its_own_and_a_corrupt_file_one_line(tmp_path):
    from advrec.report import make_report

    run = tmp_path / "runs" / "r0"
    (run / "pretrain").mkdir(parents=True)
    base = {"test/precision@20": 0.1, "test/recall@20": 0.1, "wall_time_s": 1.0}
    main = {
        "model": "IRGAN",
        "label": "IRGAN",
        "data": "d",
        "protocol": "validated",
        "seed": 1,
        "test/ndcg@20": 0.3,
        **base,
    }
    (run / "metrics.json").write_text(json.dumps(main))
    (run / "pretrain" / "metrics.json").write_text(
        json.dumps({"model": "BPR", "test/ndcg@20": 0.4, **base})
    )
    table = make_report([str(tmp_path / "runs")], tmp_path / "out").set_index("label")
    assert table.loc["IRGAN pre-training (BPR)", "data"] == "d"
    assert table.loc["IRGAN pre-training (BPR)", "test/ndcg@20_mean"] == 0.4
    (run / "metrics.json").write_text(json.dumps({**main, "debug": "fdr"}))  # nor its pre-training
    with pytest.raises(AdvrecError, match="only debug runs"):
        make_report([str(tmp_path / "runs")], tmp_path / "debug")
    (run / "metrics.json").write_text("{truncated")
    proc = run_cli(
        "report", f"runs={tmp_path / 'runs'}", f"out={tmp_path / 'o2'}", cwd=tmp_path, check=False
    )
    assert proc.returncode == 2 and "is not a readable metrics.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_new_runs_join_an_earlier_reports_runs_csv(report, tmp_path):
    """A committed benchmark grows by new rows without rerunning it: runs= takes the earlier
    runs.csv beside new run folders; its rows count as they were, a run in both once."""
    run = tmp_path / "new" / "r0"
    run.mkdir(parents=True)
    new = {"model": "SLIM", "data": "synthetic", "protocol": "validated", "wall_time_s": 2.0}
    new.update({f"test/{m}@20": 0.5 for m in ("precision", "recall", "ndcg")})
    (run / "metrics.json").write_text(json.dumps(new))
    earlier = report / "runs.csv"
    out = tmp_path / "out"
    run_cli("report", f"runs=[{earlier},{tmp_path / 'new'}]", f"out={out}", cwd=tmp_path)
    table = pd.read_csv(out / "report.csv").set_index("label")
    before = pd.read_csv(report / "report.csv").set_index("label")
    assert sorted(table.index) == sorted([*before.index, "SLIM"])
    for label in before.index:
        assert table.loc[label, "n_runs"] == before.loc[label, "n_runs"]
        got, was = table.loc[label, "test/ndcg@20_mean"], before.loc[label, "test/ndcg@20_mean"]
        assert got == pytest.approx(was, abs=1e-12)
    assert table.loc["SLIM", "test/ndcg@20_best"]
    twice = tmp_path / "twice"
    run_cli("report", f"runs=[{out / 'runs.csv'},{tmp_path / 'new'}]", f"out={twice}", cwd=tmp_path)
    assert len(pd.read_csv(twice / "runs.csv")) == len(pd.read_csv(out / "runs.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    proc = run_cli("report", f"runs=[{bad}]", f"out={tmp_path / 'b'}", cwd=tmp_path, check=False)
    assert (
        proc.returncode == 2
        and "has no column(s) ['label', 'data', 'protocol', 'run']" in proc.stderr
    )


def test_every_group_gets_its_own_style_and_the_shared_keys_go_to_the_title():
    from advrec.report import group_styles, legend_labels

    styles = group_styles(list(range(12)))
    assert len({tuple(sorted(s.items())) for s in styles.values()}) == 12
    assert len({s["color"] for s in styles.values()}) == 12  # tab20: 20 colours before repeats
    runs = pd.DataFrame(
        {"label": ["A", "A", "B"], "data": ["d"] * 3, "protocol": ["validated"] * 3}
    )
    labels, common = legend_labels(runs, ["label", "data", "protocol"])
    assert labels == {("A", "d", "validated"): "A (n=2)", ("B", "d", "validated"): "B (n=1)"}
    assert common == "d, validated"


def test_averaged_gan_curves_count_the_runs_behind_each_epoch(tmp_path):
    from advrec.report import gan_curves

    for name, epochs in (("a", 4), ("b", 2)):  # b stopped early
        (tmp_path / name / "csv").mkdir(parents=True)
        pd.DataFrame(
            {
                "epoch": range(epochs),
                "train/d_loss": [1.0 + e for e in range(epochs)],
                "train/D_real": 0.6,
                "train/D_fake": 0.4,
            }
        ).to_csv(tmp_path / name / "csv" / "metrics.csv", index=False)
    runs = pd.DataFrame(
        {"label": ["IRGAN", "IRGAN"], "run": [str(tmp_path / "a"), str(tmp_path / "b")]}
    )
    curves, counts = gan_curves(runs, ["label"])
    assert counts["IRGAN"].tolist() == [2, 2, 1, 1] and counts["IRGAN"].index[0] == 1
    assert curves["IRGAN"]["train/d_loss"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert curves["IRGAN"]["train/D_real"].tolist() == [0.6] * 4


def test_the_validation_panel_plots_the_ndcg_a_run_logged(tmp_path, monkeypatch):
    """Runs with ks=[20,50,100] log no val/ndcg@10: the panel shows @20 instead of
    'not logged by this model'."""
    import advrec.report as report

    (tmp_path / "a" / "csv").mkdir(parents=True)
    pd.DataFrame(
        {"epoch": [0, 1], "train/d_loss": [1.0, 0.9], "val/ndcg@20": [0.2, 0.3],
         "val/ndcg@50": [0.1, 0.2]}
    ).to_csv(tmp_path / "a" / "csv" / "metrics.csv", index=False)  # fmt: skip
    runs = pd.DataFrame({"label": ["G"], "run": [str(tmp_path / "a")]})
    plotted = []
    plt = report._pyplot()
    original = plt.Axes.plot

    def spy(self, *args, **kwargs):
        plotted.append(kwargs.get("label"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(plt.Axes, "plot", spy)
    assert report.plot_gan_training(runs, ["label"], tmp_path / "g.png")
    assert "NDCG@20" in plotted


@pytest.mark.parametrize(
    "bad, said",
    [
        ("compare_on=coverage", "need a per-user metric"),
        ("compare_on=nope", "need a per-user metric"),
        ("baseline=NoSuchModel", "no group has that label"),
    ],
)
def test_a_bad_comparison_setting_is_one_line(multirun, tmp_path, bad, said):
    """Through advrec-report: a metric the paired tests cannot use, or a baseline no group
    has, is refused in one line (compare_on=nope was a KeyError traceback; coverage gave an
    'n/a: per-user results missing' column that blamed the runs)."""
    proc = run_cli("report", f"runs={multirun}", f"out={tmp_path / 'rep'}", bad,
                   cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("advrec: error")]
    assert said in line
    assert not (tmp_path / "rep" / "report.md").exists()
