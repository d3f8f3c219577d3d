"""What a user sees: a quiet start, a line per validation check in a log file, the validation
metric in a terminal's progress bar, the results table last, and help that needs no torch."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys

import pandas as pd

from tests.helpers import data_args, run_cli

LINE = re.compile(
    r"^\[BPR\] epoch (\d+)/3  val/ndcg@10 (0\.\d{4})  best (0\.\d{4}) \(epoch (\d+)\)  "
    r"loss (\d\.\d+)  elapsed \d+:\d\d(  left <= \d+:\d\d)?$"
)
BPR = ["model=bpr", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=1"]


def test_entry_points_import_without_torch():
    """`advrec-train --help` and `--cfg job` answer before torch or Lightning load (they
    took 5.6 s here when the entry modules imported them; bench/cli_startup.py times it)."""
    code = (
        "import sys, advrec.train, advrec.eval, advrec.recommend, advrec.report; "
        "print(sorted(m for m in ('torch', 'lightning', 'wandb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out


def test_a_run_in_a_log_file_says_what_happens_and_ends_with_the_table(tiny, tmp_path):
    root, _ = tiny
    proc = run_cli("train", *data_args(root), *BPR, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    out = proc.stdout.splitlines()
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert out[0].startswith("advrec-train: BPR on tiny (model=bpr, protocol=validated, seed 42")
    # one line per validation check: epoch, the metric, the best so far and when
    lines = [LINE.match(line) for line in out if line.startswith("[BPR] epoch") and "val/" in line]
    assert [int(x.group(1)) for x in lines] == [1, 2, 3], out
    scores = [float(x.group(2)) for x in lines]
    assert [float(x.group(3)) for x in lines] == [max(scores[: i + 1]) for i in range(3)]
    assert int(lines[-1].group(4)) == m["selected_epoch"]
    logged = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["train/loss"])
    for x, (_, row) in zip(lines, logged.iterrows(), strict=True):  # each epoch's own loss
        assert abs(float(x.group(5)) - row["train/loss"]) < 5e-4 * max(1, row["train/loss"])
    assert abs(max(scores) - m["val/ndcg@10"]) < 1e-4  # the chosen epoch's score
    # the refit reports its epochs; no progress bar and no config tree in a file
    assert any(line.startswith(f"[BPR] epoch {m['selected_epoch']}/") for line in out[-20:])
    assert "Epoch " not in proc.stdout and "_target_" not in proc.stdout
    for noise in ("GPU available", "TPU available", "Tip:", "fit` stopped", "v_num"):
        assert noise not in proc.stdout + proc.stderr, noise
    # the results table is last, its title names the chosen epoch
    assert out[-1].startswith("└") and f"epoch {m['selected_epoch']} chosen" in proc.stdout


def test_print_config_shows_the_resolved_config(tiny, tmp_path):
    root, _ = tiny
    args = [*data_args(root), "model=pop", "print_config=true", f"hydra.run.dir={tmp_path}"]
    proc = run_cli("train", *args, cwd=tmp_path)
    assert "_target_: advrec.models.pop.TopPop" in proc.stdout


def test_in_a_terminal_the_bar_shows_the_validation_metric(tiny, tmp_path):
    """Run under a pseudo-terminal, as a user's shell runs it."""
    root, _ = tiny
    args = [*data_args(root), *BPR, f"hydra.run.dir={tmp_path}"]
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "80", "LINES": "40", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "advrec.train", *args],
        cwd=tmp_path,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 300)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    seen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert "Epoch 3/3" in seen and "Epoch 0/" not in seen  # counted from 1
    assert re.search(r"val/ndcg@10: 0\.\d{4} best: 0\.\d{4}", seen), seen[-3000:]
    assert "v_num" not in seen and "[BPR] epoch" not in seen  # the bar, not the log lines
