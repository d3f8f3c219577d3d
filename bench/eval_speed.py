"""advrec's RankingMetrics vs torchmetrics' RetrievalNormalizedDCG + RetrievalRecall.

Full ranking of a 6040 x 3706 score matrix (ML-1M shape) at K=20. Each contender runs in
its own process so its peak RSS is its own. Prints one JSON object.

    python bench/eval_speed.py [--users 6040 --items 3706 --k 20 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def make_inputs(n_users: int, n_items: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(n_users, n_items, generator=g) + 1e-3  # > 0: torchmetrics misreads <= 0
    target = torch.rand(n_users, n_items, generator=g) < 0.02
    return scores, target


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_advrec(scores, target, k: int, batch: int = 1024) -> dict:
    from advrec.metrics import RankingMetrics

    m = RankingMetrics((k,))
    for lo in range(0, len(scores), batch):
        m.update(scores[lo : lo + batch], target[lo : lo + batch])
    out = m.compute()
    return {"ndcg": float(out[f"ndcg@{k}"]), "recall": float(out[f"recall@{k}"])}


def run_torchmetrics(scores, target, k: int) -> dict:
    import torch
    from torchmetrics.retrieval import RetrievalNormalizedDCG, RetrievalRecall

    n_users, n_items = scores.shape
    idx = torch.arange(n_users).repeat_interleave(n_items)
    ndcg = RetrievalNormalizedDCG(top_k=k, empty_target_action="skip")
    rec = RetrievalRecall(top_k=k, empty_target_action="skip")
    ndcg.update(scores.flatten(), target.flatten(), indexes=idx)
    rec.update(scores.flatten(), target.flatten(), indexes=idx)
    return {"ndcg": float(ndcg.compute()), "recall": float(rec.compute())}


def child(which: str, n_users: int, n_items: int, k: int, repeats: int) -> None:
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    scores, target = make_inputs(n_users, n_items)
    base = rss_mib()
    fn = run_advrec if which == "advrec" else run_torchmetrics
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        values = fn(scores, target, k)
        times.append(time.perf_counter() - t)
    print(
        json.dumps(
            {
                "values": values,
                "seconds_best": min(times),
                "seconds_all": times,
                "peak_rss_mib": rss_mib(),
                "peak_rss_over_inputs_mib": rss_mib() - base,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=6040)
    ap.add_argument("--items", type=int, default=3706)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=["advrec", "torchmetrics"])
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.users, a.items, a.k, a.repeats)
    res = {}
    for which, reps in (("advrec", a.repeats), ("torchmetrics", 1)):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            which,
            "--users",
            str(a.users),
            "--items",
            str(a.items),
            "--k",
            str(a.k),
            "--repeats",
            str(reps),
        ]
        res[which] = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[-1]
        )
    diff = {
        m: abs(res["advrec"]["values"][m] - res["torchmetrics"]["values"][m])
        for m in ("ndcg", "recall")
    }
    print(
        json.dumps(
            {
                "shape": [a.users, a.items],
                "k": a.k,
                "advrec": res["advrec"],
                "torchmetrics": res["torchmetrics"],
                "max_abs_diff": max(diff.values()),
                "equal_to_1e-6": max(diff.values()) <= 1e-6,
                "speedup": res["torchmetrics"]["seconds_best"] / res["advrec"]["seconds_best"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
