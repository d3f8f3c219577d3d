"""advrec-report: the metrics.json of a set of runs -> a results table (markdown + CSV) and
plots (metric@K curves per model, GAN training curves), optionally logged to W&B.

    advrec-report runs=multirun/benchmark_ml100k            # a multirun folder
    advrec-report 'runs=[outputs/2026-*/*,multirun/x]' out=report group_by=[label,data]
    advrec-report 'runs=[docs/benchmark_ml100k/runs.csv,multirun/new_rows]' out=...

A `runs.csv` of an earlier report counts as its runs (so new rows join a committed benchmark
without rerunning it); their GAN training curves need the run folders, which it does not hold.

Runs are grouped by `group_by` (dotted keys of metrics.json, e.g. `hparams.condition`;
default label, data and protocol); each cell is the mean +- sample std over the group's runs
(seeds), and the best mean of every column is in bold. A group that still mixes datasets or
protocols is reported with a loud warning in the console and in report.md: its mean is not
a measurement of one thing.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from advrec.config import CONF_DIR
from advrec.errors import AdvrecError
from advrec.metrics.names import PER_USER
from advrec.utils.console import console, user_errors
from advrec.utils.io import write_csv, write_text

log = logging.getLogger(__name__)
GROUP_BY = ("label", "data", "protocol")
MUST_AGREE = ("data", "protocol")  # runs averaged together must share these
RUN_COLUMNS = ("data", "protocol", "epochs", "selected_epoch", "refit")
GAN_CURVES = (("train/d_loss", "D loss"), ("train/g_loss", "G loss"))
D_CURVES = (("train/D_real", "D(real)"), ("train/D_fake", "D(fake)"))
GAN_MODELS = ("CFGAN", "IRGAN", "GANMF", "EASEGAN", "GAR")  # runs older than "adversarial"
GAN_LABEL = r"GAN|\bGAR\b"  # the same, for rows of an earlier runs.csv
AT_K_GROUPS = 6  # the metric@K figure shows the best groups only (16 lines are unreadable)


def find_runs(patterns: Sequence[str]) -> list[Path]:
    """metrics.json files under folders (recursively) or matched by globs, sorted."""
    found: set[Path] = set()
    for pattern in patterns:
        matches = [Path(p) for p in glob.glob(str(pattern), recursive=True)] or [Path(pattern)]
        for m in matches:
            if m.is_file() and m.name == "metrics.json":
                found.add(m.resolve())
            elif m.is_dir():
                found.update(p.resolve() for p in m.rglob("metrics.json"))
    if not found:
        raise AdvrecError(
            f"no metrics.json under {list(patterns)}; point runs= at run or multirun folders"
        )
    return sorted(found)


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def load_runs(paths: Sequence[Path], group_by: Sequence[str]) -> pd.DataFrame:
    """One row per run: the group keys, every test/val metric, seed, wall time, folder."""
    rows, debug = [], []
    for path in paths:
        m = _read_metrics(path)
        if m.get("debug"):  # a debug preset's run (debug=fdr, ...) is never a result
            debug.append(_relative(path.parent))
            continue
        m.setdefault("label", m.get("model"))
        row = {key: str(_get(m, key)) for key in group_by}
        row.update({k: v for k, v in m.items() if isinstance(v, (int, float)) and "/" in k})
        row.update({c: m.get(c) for c in RUN_COLUMNS if c not in row})
        row.update(
            adversarial=m.get("adversarial", m.get("model") in GAN_MODELS),
            seed=m.get("seed"),
            test_split=_get(m, "dataset.test_fingerprint"),  # pairs runs for the tests
            wall_time_s=m.get("wall_time_s"),
            optimistic=m.get("optimistic", False),
            run=_relative(path.parent),
        )
        rows.append(row)
    if debug:
        log.warning("left out %d debug run(s) (debug=...): %s", len(debug), ", ".join(debug[:3]))
    if not rows and debug:
        raise AdvrecError(f"only debug runs (debug=...) under {debug[:3]}; they are no results")
    return pd.DataFrame(rows)


def earlier_runs(path: Path, group_by: Sequence[str]) -> pd.DataFrame:
    """The rows of an earlier report's runs.csv."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise AdvrecError(f"{path} is not a readable runs.csv of advrec-report ({e})") from None
    missing = [c for c in (*group_by, "run") if c not in frame.columns]
    if missing:
        raise AdvrecError(
            f"{path} has no column(s) {missing}: give a runs.csv written by advrec-report "
            "with the same group_by"
        )
    if "adversarial" not in frame:  # written before runs recorded it: GANs by their label
        frame["adversarial"] = (
            frame["label"].astype(str).str.contains(GAN_LABEL) if ("label" in frame) else False
        )
    return frame.astype({g: str for g in group_by})


def collect(patterns: Sequence[str], group_by: Sequence[str]) -> pd.DataFrame:
    """Every run under `patterns` (folders, globs, metrics.json files, earlier runs.csv
    files); a run found twice is kept once, from its metrics.json."""
    csvs = [Path(p) for p in patterns if str(p).endswith(".csv")]
    others = [p for p in patterns if not str(p).endswith(".csv")]
    frames = [earlier_runs(p, group_by) for p in csvs]
    if others or not frames:
        frames.append(load_runs(find_runs(others), group_by))
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.drop_duplicates("run", keep="last").reset_index(drop=True)
    for key in group_by:  # a typo would put every run into one group and average them all
        if (frame[key].astype(str) == "None").all():
            raise AdvrecError(
                f"group_by key {key!r} is in none of the {len(frame)} runs' metrics.json, so "
                "every run would fall into one group; check the spelling (keys are dotted "
                "paths of metrics.json, e.g. label, model, data, protocol, seed, "
                "hparams.<name>)"
            )
    return frame


def _read_metrics(path: Path) -> dict:
    """A run's metrics.json; a pre-training's (<run>/pretrain/metrics.json) takes its run's
    data, protocol, seed, debug mark and label (+ " pre-training"), so it becomes a row of its
    own (and a debug run's pre-training is no result either)."""
    m = _load_json(path)
    parent = path.parent.parent / "metrics.json"
    if path.parent.name == "pretrain" and parent.is_file():
        run = _load_json(parent)
        label = run.get("label") or run.get("model")
        inherited = ("data", "protocol", "optimistic", "seed", "debug")
        m = {**{k: run.get(k) for k in inherited}, **m}
        m["label"] = f"{label} pre-training ({m.get('model')})"
    return m


def _load_json(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdvrecError(
            f"{path} is not a readable metrics.json ({e}); remove it or rerun"
        ) from None
    if not isinstance(found, dict):
        raise AdvrecError(
            f"{path} holds a JSON {type(found).__name__}, not the object advrec-train writes; "
            "remove it or rerun that run"
        )
    return found


def mixed_groups(runs: pd.DataFrame, group_by: Sequence[str]) -> list[str]:
    """One line per group whose runs differ in data or protocol (not comparable)."""
    out = []
    for key, g in runs.groupby(list(group_by), sort=False):
        for col in MUST_AGREE:
            values = sorted(map(str, g[col].unique())) if col in g else []
            if len(values) > 1:
                out.append(f"group {_label(key)!r} mixes {col} {values}")
    return out


def _relative(path: Path) -> str:
    """The path from the working folder when it lies below it (reports travel better)."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def summary_table(
    runs: pd.DataFrame, group_by: Sequence[str], columns: Sequence[str]
) -> pd.DataFrame:
    """Mean, sample std and run count per group for `columns` (e.g. test/ndcg@20)."""
    missing = [c for c in columns if c not in runs.columns]
    if missing:
        raise AdvrecError(
            f"metric(s) {missing} are in none of the runs; available: "
            f"{sorted(c for c in runs.columns if c.startswith('test/'))}"
        )
    grouped = runs.groupby(list(group_by), sort=False)
    out = grouped[list(columns)].agg(["mean", "std"])
    out.columns = [f"{c}_{stat}" for c, stat in out.columns]
    out.insert(0, "n_runs", grouped.size())
    for c in columns:  # runs without the column (other ks) are not behind its mean
        out[f"{c}_n"] = grouped[c].count()
    out["wall_time_s_mean"] = grouped["wall_time_s"].mean()
    out["optimistic"] = grouped["optimistic"].any()
    for c in columns:
        out[f"{c}_best"] = out[f"{c}_mean"] == out[f"{c}_mean"].max()
    return out.reset_index()


def to_markdown(table: pd.DataFrame, group_by: Sequence[str], columns: Sequence[str]) -> str:
    """A GitHub table: mean ± std (n = runs), the best mean per column in bold; a cell that
    fewer of its group's runs have says how many (n=...)."""
    vs = ["vs baseline"] if "vs" in table else []
    head = [*group_by, "runs", *columns, *vs, "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [str(r[g]) for g in group_by] + [str(int(r["n_runs"]))]
        for c in columns:
            mean, std, n = r[f"{c}_mean"], r[f"{c}_std"], int(r[f"{c}_n"])
            if n == 0:
                cells.append("– (n=0)")
                continue
            cell = f"{mean:.4f}" + (f" ± {std:.4f}" if np.isfinite(std) else "")
            cell = f"**{cell}**" if r[f"{c}_best"] else cell
            cells.append(cell + (f" (n={n})" if n < r["n_runs"] else ""))
        cells += [str(r["vs"])] if vs else []
        cells.append(f"{r['wall_time_s_mean']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    if table["optimistic"].any():
        lines.append("\nRows from an optimistic protocol (test-selected) are not comparable.")
    return "\n".join(lines) + "\n"


def vs_cells(
    table: pd.DataFrame, comp: pd.DataFrame, baselines: dict, group_by: Sequence[str], column: str
) -> list[str]:
    """Each table row's "vs baseline" cell on `column`: the mean difference from its
    dataset's baseline and a marker (see `legend`)."""
    base_rows = {tuple(map(str, k)) for k in baselines.values()}
    cells = []
    for _, r in table.iterrows():
        key = tuple(str(r[g]) for g in group_by)
        if key in base_rows:
            cells.append("baseline")
            continue
        hit = comp
        for g in group_by:
            hit = hit[hit[g].astype(str) == str(r[g])] if not hit.empty else hit
        hit = hit[hit["metric"] == column] if not hit.empty else hit
        if hit.empty:
            cells.append("–")
            continue
        c = hit.iloc[0]
        if c["status"] != "paired":
            cells.append(f"n/a: {c['status']}")
            continue
        p = c["holm_p"]
        mark = "‡" if p < 0.01 else "†" if p < 0.05 else "ns"
        cells.append(f"{c['mean_diff']:+.4f} {mark}")
    return cells


def legend(column: str, baseline: str | None) -> str:
    base = f"{baseline!r}" if baseline else "the best mean of its dataset"
    return (
        f"vs baseline: difference in mean {column} from {base} (this row minus it), over the "
        "users of runs paired by seed and test split; † / ‡ significant at .05 / .01 by a "
        "two-sided Wilcoxon signed-rank test after Holm-Bonferroni over every comparison in "
        "comparison.csv; ns: not significant. comparison.csv adds the paired t-test, effect "
        "size d_z, a bootstrap interval and the seed-level t-interval, for every metric."
    )


def to_latex(table: pd.DataFrame, group_by: Sequence[str], columns: Sequence[str]) -> str:
    """The table for a paper (pandas Styler): mean ± std, the best mean in bold."""
    cells, bold = {}, {}
    for g in group_by:
        cells[g], bold[g] = table[g].astype(str), False
    cells["runs"], bold["runs"] = table["n_runs"].astype(int).astype(str), False
    for c in columns:
        mean, std = table[f"{c}_mean"], table[f"{c}_std"]
        cells[c] = [
            f"{m:.4f}" + (f" ± {s:.4f}" if np.isfinite(s) else "")
            for m, s in zip(mean, std, strict=True)
        ]
        bold[c] = table[f"{c}_best"].to_numpy()
    if "vs" in table:
        cells["vs baseline"], bold["vs baseline"] = table["vs"], False
    frame = pd.DataFrame(cells)
    mask = pd.DataFrame({c: np.broadcast_to(bold[c], len(frame)) for c in frame.columns})
    styler = frame.style.hide(axis="index").format(escape="latex")
    styler = styler.apply(lambda _: mask.map(lambda b: "textbf:--rwrap;" if b else ""), axis=None)
    latex = styler.to_latex(hrules=True, column_format="l" * len(frame.columns))
    return latex.replace("±", r"$\pm$")


def _label(key: tuple | str) -> str:
    return " / ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MARKERS = "osD^vP*X<>hp"
LINES = ("-", "--", "-.", ":")


def group_styles(keys: Sequence) -> dict:
    """A distinct (colour, marker, line style) per group: 20 colours, then markers and line
    styles tell the rest apart (a line hidden under another still shows its markers)."""
    plt = _pyplot()
    colours = plt.get_cmap("tab20").colors
    return {
        key: {
            "color": colours[(2 * i) % 20 + (2 * i // 20) % 2],
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINES[i % len(LINES)],
        }
        for i, key in enumerate(keys)
    }


def legend_labels(runs: pd.DataFrame, group_by: Sequence[str]) -> tuple[dict, str]:
    """Each group's label without the keys all groups share (those go to the title), with its
    number of runs."""
    shared = [g for g in group_by if runs[g].nunique() == 1]
    varying = [g for g in group_by if g not in shared] or list(group_by[:1])
    labels = {}
    for key, g in runs.groupby(list(group_by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        parts = dict(zip(group_by, key, strict=True))
        labels[key] = f"{_label(tuple(parts[v] for v in varying))} (n={len(g)})"
    common = ", ".join(str(runs[g].iloc[0]) for g in shared if g not in varying)
    return labels, common


def plot_at_k(runs: pd.DataFrame, group_by: Sequence[str], metrics: Sequence[str], out: Path):
    """One panel per metric: test metric@K against K, a line per group (mean ± std over its
    runs), each group with its own colour, marker and line style."""
    plt = _pyplot()

    labels, common = legend_labels(runs, group_by)
    styles = group_styles(list(labels))
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        cols = sorted(
            (c for c in runs.columns if c.startswith(f"test/{metric}@")),
            key=lambda c: int(c.split("@")[1]),
        )
        ks = [int(c.split("@")[1]) for c in cols]
        for key, g in runs.groupby(list(group_by), sort=False):
            key = key if isinstance(key, tuple) else (key,)
            mean, std = g[cols].mean().to_numpy(), g[cols].std().fillna(0).to_numpy()
            ax.errorbar(
                ks,
                mean,
                yerr=std,
                capsize=4,
                elinewidth=1.5,
                markersize=6,
                label=labels[key],
                **styles[key],
            )
        ax.set_xlabel("K (length of the recommendation list)")
        ax.set_ylabel(f"{metric.upper() if metric == 'ndcg' else metric.title()}@K (test)")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    ncol = 3
    rows = math.ceil(len(names) / ncol)
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    where = f" on {common}" if common else ""
    fig.suptitle(f"Test metrics at K{where} (mean ± std over each model's n runs)")
    fig.tight_layout(rect=(0, 0.055 * rows + 0.02, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_ranking(runs: pd.DataFrame, group_by: Sequence[str], column: str, out: Path) -> None:
    """A ranked dot plot of `column` (one panel per dataset): each group's mean over its runs
    with a 95 % t-interval over seeds, GANs and baselines in two marker styles."""
    plt = _pyplot()
    from scipy import stats

    datasets = list(dict.fromkeys(runs["data"].astype(str))) if "data" in runs else [None]
    rows = []
    for data in datasets:
        part = runs if data is None else runs[runs["data"].astype(str) == data]
        for key, g in part.groupby(list(group_by), sort=False):
            x = g[column].dropna().to_numpy(dtype=float)
            if not len(x):
                continue
            half = (
                stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
                if len(x) > 1
                else 0.0
            )
            gan = g["adversarial"].astype(str) == "True"
            shown = zip(key, group_by, strict=True)  # grouping by a list: tuple keys
            name = _label(tuple(v for v, k in shown if k != "data"))
            rows.append((data, name, x.mean(), half, bool(gan.any()), len(x)))
    heights = [sum(r[0] == d for r in rows) for d in datasets]
    fig, axes = plt.subplots(
        len(datasets),
        1,
        figsize=(8, 1.2 + 0.36 * sum(heights) + 0.6 * len(datasets)),
        squeeze=False,
        gridspec_kw={"height_ratios": [max(h, 1) for h in heights]},
    )
    for ax, data in zip(axes[:, 0], datasets, strict=True):
        mine = sorted((r for r in rows if r[0] == data), key=lambda r: r[2])
        for y, (_, _name, mean, half, gan, _n) in enumerate(mine):
            style = dict(fmt="D", color="C3") if gan else dict(fmt="o", color="C0")
            ax.errorbar(mean, y, xerr=half, capsize=3, markersize=6, **style)
        ax.set_yticks(range(len(mine)))
        ax.set_yticklabels([f"{r[1]} (n={r[5]})" for r in mine], fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(str(data) if data is not None else "", fontsize=10)
        ax.set_xlabel(f"{column} (mean, 95 % t-interval over seeds)")
    from matplotlib.lines import Line2D

    marks = [
        Line2D([], [], marker="D", color="C3", linestyle="", label="GAN"),
        Line2D([], [], marker="o", color="C0", linestyle="", label="baseline"),
    ]
    axes[0, 0].legend(handles=marks, loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def training_curves(run_dir: Path) -> pd.DataFrame | None:
    """Per-epoch training and validation values from a run's CSV log (None without one)."""
    path = run_dir / "csv" / "metrics.csv"  # the selection fit (csv/refit/ is the refit's)
    if not path.is_file():
        return None
    log_df = pd.read_csv(path)
    if "epoch" not in log_df or "train/d_loss" not in log_df:
        return None
    keep = [c for c in log_df.columns if c.startswith(("train/", "val/ndcg"))]
    curves = log_df.groupby("epoch")[keep].first()
    trained = curves["train/d_loss"].dropna().index
    curves = curves.loc[curves.index <= trained.max()]  # not the re-validation after the fit
    curves.index = curves.index + 1  # epochs counted from 1, as metrics.json and the console
    return curves


def gan_curves(runs: pd.DataFrame, group_by: Sequence[str]) -> tuple[dict, dict]:
    """Per group of GAN runs: the per-epoch mean of their logged curves, and how many runs
    are behind each epoch's mean (runs stopped early drop out)."""
    curves, counts = {}, {}
    for key, g in runs.groupby(list(group_by), sort=False):
        frames = [c for c in (training_curves(Path(r)) for r in g["run"]) if c is not None]
        if frames:
            stacked = pd.concat(frames).groupby(level=0)
            curves[_label(key)] = stacked.mean()
            counts[_label(key)] = stacked["train/d_loss"].count()
    return curves, counts


def plot_gan_training(runs: pd.DataFrame, group_by: Sequence[str], out: Path) -> bool:
    """Losses, D(real) / D(fake) and validation NDCG (@10, else the smallest K logged) per
    epoch for the GAN runs, each panel titled with the number of runs averaged (and a count
    line where it changes)."""
    plt = _pyplot()

    curves, counts = gan_curves(runs, group_by)
    if not curves:
        return False
    from matplotlib.ticker import MaxNLocator

    # one row per model: their losses live on different scales
    fig, axes = plt.subplots(len(curves), 3, figsize=(16, 3.8 * len(curves)), squeeze=False)
    titles = ("training losses", "discriminator outputs", "validation")
    ylabels = ("loss (epoch mean)", "mean D output (probability)", "NDCG (validation)")
    for row, (name, c) in zip(axes, curves.items(), strict=True):
        for (col, what), style in zip(GAN_CURVES, ("-", "--"), strict=True):
            if col in c:
                row[0].plot(c.index, c[col], style, color="C0", label=what)
        for (col, what), style in zip(D_CURVES, ("-", "--"), strict=True):
            if col in c:
                row[1].plot(c.index, c[col], style, color="C1", label=what)
        logged = sorted((k for k in c if k.startswith("val/ndcg@")), key=lambda k: int(k[9:]))
        if logged:  # runs with ks=[20,50,100] log no @10
            key = "val/ndcg@10" if "val/ndcg@10" in logged else logged[0]
            val = c[key].dropna()
            row[2].plot(val.index, val, "o-", color="C2", markersize=3, label=key[4:].upper())
        n = counts[name]
        if n.nunique() > 1:  # runs stopped early: say how many are averaged where
            twin = row[2].twinx()
            twin.step(n.index, n, where="mid", color="0.55", linewidth=1)
            twin.set_ylabel("runs averaged", color="0.45")
            twin.set_ylim(0, n.max() + 0.5)
            twin.yaxis.set_major_locator(MaxNLocator(integer=True))
        runs_note = f"{n.max()} runs" if n.nunique() == 1 else f"{n.min()}-{n.max()} runs"
        for ax, title, ylabel in zip(row, titles, ylabels, strict=True):
            # wrapped: a long group name ran into the next panel's title
            ax.set_title(textwrap.fill(f"{name}: {title} (mean of {runs_note})", 60), fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            else:  # e.g. a model that logs no D outputs: no empty panel
                ax.remove()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def make_report(
    runs: Sequence[str],
    out: str | Path,
    group_by: Sequence[str] = GROUP_BY,
    metrics: Sequence[str] = ("precision", "recall", "ndcg"),
    k: int = 20,
    curves: Sequence[str] = ("ndcg", "recall"),
    wandb: bool = False,
    baseline: str | None = None,
    compare_on: str = "ndcg",
) -> pd.DataFrame:
    """Write report.md, report.csv, report.tex, comparison.csv, runs.csv and the PNG plots
    into `out`."""
    from advrec import stats  # scipy: only when a report is written

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = collect(runs, group_by)
    columns = [f"test/{m}@{k}" for m in metrics]
    table = summary_table(frame, group_by, columns)
    primary = f"test/{compare_on}@{k}"
    if compare_on not in PER_USER:
        raise AdvrecError(
            f"compare_on={compare_on!r}: the paired tests need a per-user metric, one of "
            f"{list(PER_USER)} (coverage is one number per run)"
        )
    if primary not in frame:
        have = sorted(c for c in frame.columns if c.startswith(f"test/{compare_on}@"))
        raise AdvrecError(f"{primary} is in none of the runs; they have {have}: set k=...")
    # the tests pair per-user values, so only per-user metrics are compared (not coverage)
    order = [primary, *(c for c in columns if c != primary and c[5:].split("@")[0] in PER_USER)]
    comp, baselines = stats.compare_table(frame, group_by, order, baseline)
    table["vs"] = vs_cells(table, comp, baselines, group_by, primary)
    markdown = to_markdown(table, group_by, columns)
    markdown += "\n" + legend(primary, baseline) + "\n"
    mixed = mixed_groups(frame, group_by)
    if mixed:
        warning = (
            "WARNING: these rows average runs of different datasets or protocols and are not "
            "comparable; add data / protocol to group_by: " + "; ".join(mixed)
        )
        log.warning(warning)
        console.print(f"[bold red]{warning}[/]")
        markdown += f"\n**{warning}**\n"
    write_text(out / "report.md", markdown)
    write_csv(out / "report.csv", table)
    write_csv(out / "comparison.csv", comp)
    write_text(out / "report.tex", to_latex(table, group_by, columns))
    write_csv(out / "runs.csv", frame)
    plots = [out / "ranking.png", out / "metrics_at_k.png"]
    plot_ranking(frame, group_by, primary, plots[0])
    # metric@K stays readable for a handful of lines: the best AT_K_GROUPS groups
    top = table.nlargest(AT_K_GROUPS, f"{primary}_mean") if primary in columns else table
    keep = frame.set_index(list(group_by)).index.isin(top.set_index(list(group_by)).index)
    plot_at_k(frame[keep], group_by, curves, plots[1])
    if plot_gan_training(frame, group_by, out / "gan_training.png"):
        plots.append(out / "gan_training.png")
    if wandb:
        _log_wandb(table, plots, out)
    print(markdown)
    console.print(
        f"{len(frame)} runs -> {out}/report.md, report.csv, report.tex, comparison.csv, "
        f"{len(plots)} plot(s)"
    )
    return table


def _log_wandb(table: pd.DataFrame, plots: list[Path], out: Path) -> None:
    import wandb

    run = wandb.init(
        project="advrec",
        job_type="report",
        name=f"report-{out.resolve().name}",
        dir=str(out),
        config={"out": str(out)},
        tags=["report"],
    )
    run.log({"report": wandb.Table(dataframe=table.astype({c: str for c in table.columns}))})
    run.log({p.stem: wandb.Image(str(p)) for p in plots})
    run.finish()


class ReportCallback(Callback):
    """Hydra callback: after a multirun, report on its sweep folder (into <sweep>/report)."""

    def __init__(self, **options) -> None:
        self.options = options

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        make_report([str(sweep)], sweep / "report", **self.options)


@user_errors
def report(cfg: DictConfig) -> pd.DataFrame:
    runs = cfg.runs if OmegaConf.is_list(cfg.runs) else [cfg.runs]
    return make_report(
        [str(r) for r in runs],
        cfg.out,
        group_by=list(cfg.group_by),
        metrics=list(cfg.metrics),
        k=int(cfg.k),
        curves=list(cfg.curves),
        wandb=bool(cfg.wandb),
        baseline=cfg.get("baseline"),
        compare_on=cfg.get("compare_on", "ndcg"),
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report")
def main(cfg: DictConfig) -> None:
    report(cfg)


if __name__ == "__main__":
    main()
