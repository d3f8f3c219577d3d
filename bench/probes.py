"""Hostile and unlucky-user probes through the entry points; prints one JSON object.

Each probe runs advrec the way a user would (python -m advrec.<entry> <overrides>) in a
scratch folder and is judged by what a user must get: one `advrec: error:` line, exit
status != 0 and no result where the input is bad; nothing executed from a checkpoint.

    python bench/probes.py                       # this checkout
    PYTHONPATH=<other checkout>/src python bench/probes.py   # e.g. an older commit

Outcomes: `ok` (the promise holds) or what happened instead (`traceback`, `exit 0`, ...).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

POP = ["model=pop", "data=synthetic", "logger=csv"]
GAN = [
    "model=cfgan",
    "data=synthetic",
    "logger=csv",
    "model.g_hidden=[32]",
    "model.d_hidden=[16]",
    "trainer.max_epochs=2",
]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def cli(entry: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "disabled"}
    env["ADVREC_CACHE_DIR"] = str(cwd / "cache")
    return subprocess.run(
        [sys.executable, "-m", f"advrec.{entry}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def one_line(proc, *words) -> str:
    """`ok` when the run ended with exactly one advrec error line holding `words`."""
    if proc.returncode == 0:
        return "exit 0"
    if "Traceback" in proc.stderr or "Error executing job" in proc.stderr:
        return "traceback"
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("advrec: error:")]
    if len(lines) != 1:
        return f"exit {proc.returncode} without one advrec error line"
    missing = [w for w in words if w not in lines[0]]
    return "ok" if not missing else f"one line, but without {missing}"


def trained(d: Path, name: str, *args: str) -> Path:
    proc = cli("train", *args, f"hydra.run.dir={d / name}", cwd=d)
    if proc.returncode != 0:
        raise RuntimeError(f"setup run failed: {proc.stderr[-800:]}")
    return d / name / "checkpoints" / "final.ckpt"


def probes(d: Path) -> dict:
    out: dict[str, str] = {}
    pop = trained(d, "pop", *POP)

    def judge(name, entry, *args, words=(), extra=None):
        proc = cli(entry, *args, cwd=d)
        verdict = one_line(proc, *words)
        if extra is not None and not extra():  # a file written, a result left, code run
            verdict = f"{verdict}; damage done" if verdict != "ok" else "refused, damage done"
        out[name] = verdict

    # checkpoints are data, not code
    marker = d / "pwned"
    with open(d / "evil.ckpt", "wb") as f:
        pickle.dump({"advrec_config": {}, "state_dict": _Payload(marker)}, f)
    for entry in ("eval", "recommend"):
        judge(
            f"crafted pickle via {entry}",
            entry,
            f"ckpt_path={d / 'evil.ckpt'}",
            f"hydra.run.dir={d / ('e_' + entry)}",
            extra=lambda: not marker.exists(),
        )
    state = torch.load(pop, weights_only=True)
    victim = d / "victim.txt"
    victim.write_text("precious")
    state["advrec_config"]["data"]["source"] = {"_target_": "builtins.open", "file": str(victim)}
    torch.save(state, d / "target.ckpt")
    judge(
        "stored _target_ builtins.open",
        "eval",
        f"ckpt_path={d / 'target.ckpt'}",
        f"hydra.run.dir={d / 'e_t'}",
        extra=lambda: victim.read_text() == "precious",
    )
    for kind, data in (
        ("truncated", pop.read_bytes()[:500]),
        ("empty", b""),
        ("random", os.urandom(999)),
    ):
        (d / f"{kind}.ckpt").write_bytes(data)
        judge(
            f"{kind} checkpoint",
            "eval",
            f"ckpt_path={d / f'{kind}.ckpt'}",
            f"hydra.run.dir={d / ('e_' + kind)}",
        )

    # never a number from a failed run
    judge(
        "diverging CFGAN (lr 1e30)",
        "train",
        *GAN,
        "model.lr_g=1e30",
        "model.lr_d=1e30",
        f"hydra.run.dir={d / 'nan'}",
        words=["diverged"],
        extra=lambda: not (d / "nan" / "metrics.json").exists(),
    )
    nan = torch.load(pop, weights_only=True)
    nan["state_dict"]["popularity"][:] = float("nan")
    torch.save(nan, d / "nan.ckpt")
    for entry in ("eval", "recommend"):
        judge(
            f"NaN checkpoint via {entry}",
            entry,
            f"ckpt_path={d / 'nan.ckpt'}",
            *([f"output={d / 'nan.csv'}"] if entry == "recommend" else []),
            f"hydra.run.dir={d / ('n_' + entry)}",
            words=["non-finite"],
            extra=lambda: not (d / "nan.csv").exists(),
        )
    judge(
        "setup error leaves no last.ckpt",
        "train",
        "model=ease",
        "model.lam=abc",
        "data=synthetic",
        f"hydra.run.dir={d / 'setup'}",
        extra=lambda: not (d / "setup" / "checkpoints").exists(),
    )

    # resume
    trained(d, "gan", *GAN)
    judge(
        "resume under another seed",
        "train",
        *GAN,
        "seed=7",
        "ckpt_path=last",
        f"hydra.run.dir={d / 'gan'}",
        words=["seed"],
    )
    judge(
        "ckpt_path=last in a new dir",
        "train",
        *GAN,
        "ckpt_path=last",
        f"hydra.run.dir={d / 'fresh'}",
        words=["nothing to resume"],
    )
    judge(
        "reused run dir",
        "train",
        *POP,
        "seed=3",
        f"hydra.run.dir={d / 'pop'}",
        words=["overwrite=true"],
    )

    # data under a checkpoint
    log = d / "log.csv"
    log.write_text(
        "user,item\n" + "".join(f"u{u},i{(u * 7 + k) % 30}\n" for u in range(40) for k in range(8))
    )
    files = trained(d, "files", "model=pop", "data=files", f"data.source.path={log}", "logger=csv")
    log.write_text(log.read_text().rsplit("\n", 2)[0] + "\n")
    judge(
        "data changed under a checkpoint",
        "eval",
        f"ckpt_path={files}",
        f"hydra.run.dir={d / 'e_files'}",
        words=["changed"],
    )

    # recommend outputs
    judge(
        "recommend output=<the checkpoint>",
        "recommend",
        f"ckpt_path={pop}",
        f"output={pop}",
        "overwrite=true",
        f"hydra.run.dir={d / 'r1'}",
    )
    judge(
        "recommend output=<a directory>",
        "recommend",
        f"ckpt_path={pop}",
        f"output={d}",
        f"hydra.run.dir={d / 'r2'}",
    )

    # one line naming the key
    bad = {
        "model.lam=abc": ["model=ease", "model.lam=abc"],
        "model.lam=-1e9": ["model=ease", "model.lam=-1e9"],
        "ks=[]": ["model=pop", "ks=[]"],
        "ks=[0]": ["model=pop", "ks=[0]"],
        "ks=[-5]": ["model=pop", "ks=[-5]"],
        "seed=-1": ["model=pop", "seed=-1"],
        "data.eval_batch_size=0": ["model=pop", "data.eval_batch_size=0"],
        "itemknn topk=-1": ["model=itemknn", "model.topk=-1"],
        "ks=[1,5] (monitor @10)": ["model=pop", "ks=[1,5]"],
        "empty validation split": ["model=pop", "protocol.val_fraction=0.00001"],
    }
    for i, (name, args) in enumerate(bad.items()):
        judge(name, "train", *args, "data=synthetic", "logger=csv", f"hydra.run.dir={d / f'b{i}'}")
    many = "user,item\n" + "".join(f"u{u},i{(u + k) % 9}\n" for u in range(20) for k in range(5))
    files_cases = [  # (name, file, overrides, words the one line must hold)
        ("threshold without a rating column", many, ["data.source.threshold=4"], ["rating"]),
        ("header-only file", "user,item\n", [], ["no data rows"]),
        ("every user has one interaction", "user,item\nu1,i1\nu2,i2\nu3,i1\n", [], ["single"]),
    ]
    for i, (name, text, args, words) in enumerate(files_cases):
        (d / f"f{i}.csv").write_text(text)
        judge(
            name,
            "train",
            "model=pop",
            "data=files",
            f"data.source.path=f{i}.csv",
            *args,
            f"hydra.run.dir={d / f'f{i}'}",
            words=words,
            extra=lambda i=i: not (d / f"f{i}" / "metrics.json").exists(),
        )
    proc = cli(
        "train",
        "model=pop",
        "data=files",
        "data.source.path=nope.csv",
        f"hydra.run.dir={d / 'nope'}",
        cwd=d,
    )
    v = one_line(proc)
    out["missing data=files path (hint)"] = (
        "misleading ADVREC_DATA_DIR hint" if v == "ok" and "ADVREC_DATA_DIR" in proc.stderr else v
    )
    own_files_and_settings(d, out, judge)
    return out


def _split(d: Path, name: str, train: str, test: str, val: str | None = None) -> list[str]:
    """data=split_files overrides for train/test[/val] CSVs (user,item) written under `d`."""
    args = ["data=split_files", *POP[:1], "logger=csv", "protocol=original", "ks=[1,2]"]
    for part, text in (("train", train), ("test", test), ("val", val)):
        if text is not None:
            (d / f"{name}.{part}.csv").write_text("user,item\n" + text, encoding="utf-8")
            args.append(f"data.source.{part}={d / f'{name}.{part}.csv'}")
    return args


def _round_trip(d: Path, name: str, ids: list[str]) -> str:
    """`ok` when every raw user id in the files comes back in recommendations, byte for byte."""
    items = ["i0", "i1", "i2", "i3"]
    train = "".join(f"{u},{items[(k + j) % 4]}\n" for k, u in enumerate(ids) for j in range(2))
    test = "".join(f"{u},{items[(k + 2) % 4]}\n" for k, u in enumerate(ids))
    run = d / name
    proc = cli("train", *_split(d, name, train, test), f"hydra.run.dir={run}", cwd=d)
    if proc.returncode != 0:
        return one_line(proc)
    recs = d / f"{name}.recs.csv"
    cli("recommend", f"ckpt_path={run / 'checkpoints' / 'final.ckpt'}", f"output={recs}",
        f"hydra.run.dir={d / (name + '_r')}", cwd=d)  # fmt: skip
    got = {line.split(",")[0] for line in recs.read_text(encoding="utf-8").splitlines()[1:]}
    return "ok" if got == set(ids) else f"exit 0, ids changed: {sorted(got)}"


def own_files_and_settings(d: Path, out: dict, judge) -> None:
    """What a user's own split files, ids and settings can do (issue 'No silent wrong
    answers'): refused in one line, or done right and said."""
    train = "a,x\na,y\nb,y\nb,z\nc,x\nc,z\n"
    judge("split files: train/test overlap", "train", *_split(d, "o1", train, "a,z\nc,x\n"),
          f"hydra.run.dir={d / 'o1'}", words=["overlap", "train", "test"],
          extra=lambda: not (d / "o1" / "metrics.json").exists())  # fmt: skip
    judge("split files: validation/test overlap", "train",
          *_split(d, "o2", train, "a,z\nb,x\n", "c,y\nb,x\n"), f"hydra.run.dir={d / 'o2'}",
          words=["overlap", "val", "test"])  # fmt: skip
    proc = cli("train", *_split(d, "o3", train, "a,z\nc,x\n"), "++data.source.overlap=drop",
               f"hydra.run.dir={d / 'o3'}", cwd=d)  # fmt: skip
    said = "removed from the later file" in proc.stdout + proc.stderr
    out["split files: overlap=drop says what it dropped"] = (
        ("ok" if said else "exit 0, silent") if proc.returncode == 0
        else f"exit {proc.returncode} (no such option?)"
    )  # fmt: skip
    out["ids: zero-padded 05 and 5"] = _round_trip(d, "id1", ["05", "5", "007"])
    out["ids: 2^63 and 2^64-1"] = _round_trip(d, "id2", ["9223372036854775808",
                                                         "18446744073709551615", "1"])  # fmt: skip
    out["ids: unicode"] = _round_trip(d, "id3", ["ü7", "用户", "NA"])
    judge("CFGAN trainer.max_epochs=0", "train", *GAN, "trainer.max_epochs=0",
          f"hydra.run.dir={d / 'e0'}", words=["max_epochs=0"],
          extra=lambda: not (d / "e0" / "metrics.json").exists())  # fmt: skip
    judge("EASE model.lam=inf", "train", "model=ease", "model.lam=inf", "data=synthetic",
          "logger=csv", f"hydra.run.dir={d / 'inf'}", words=["lam"],
          extra=lambda: not (d / "inf" / "metrics.json").exists())  # fmt: skip
    judge("CFGAN model.batch_size_g=0", "train", *GAN, "model.batch_size_g=0",
          f"hydra.run.dir={d / 'bs0'}", words=["batch_size_g"],
          extra=lambda: not (d / "bs0" / "csv").exists())  # fmt: skip
    (d / "a_file").write_text("not a folder")
    judge("run dir that cannot be created", "train", "model=pop", "data=synthetic",
          f"hydra.run.dir={d / 'a_file' / 'run'}", words=["hydra.run.dir"])  # fmt: skip

    # reports
    runs = d / "report_runs"
    for name, ks, seed in (("a", (5, 20), 1), ("b", (5, 20), 2), ("c", (5, 10), 3)):
        (runs / name).mkdir(parents=True)
        m = {"model": "EASE", "data": "d", "protocol": "validated", "seed": seed}
        m.update({f"test/{x}@{k}": 0.1 for x in ("precision", "recall", "ndcg") for k in ks})
        (runs / name / "metrics.json").write_text(json.dumps(m))
    judge("report group_by=[modle] (a typo)", "report", f"runs={runs}", "group_by=[modle]",
          f"out={d / 'rep1'}", words=["modle"])  # fmt: skip
    proc = cli("report", f"runs={runs}", f"out={d / 'rep2'}", cwd=d)
    md = (d / "rep2" / "report.md").read_text() if (d / "rep2" / "report.md").is_file() else ""
    out["report over runs with different ks"] = (
        "ok" if "(n=2)" in md else "cells hide how many runs they average"
    )
    (d / "notobj" / "x").mkdir(parents=True)
    (d / "notobj" / "x" / "metrics.json").write_text("[1, 2]")
    judge("report over a metrics.json that is a list", "report", f"runs={d / 'notobj'}",
          f"out={d / 'rep3'}")  # fmt: skip

    # searches
    search = ["hparams_search=ease", "data=synthetic", "logger=none"]
    sweep = d / "sweep_torn"
    cli("train", *search, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={sweep}", cwd=d)
    with open(sweep / "optuna.journal", "ab") as f:
        f.write(b'{"op_code": 5, "worker_id": "x", "tri')  # a killed write
    proc = cli("train", *search, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", cwd=d)
    out["search resumed after a torn journal record"] = (
        "ok" if proc.returncode == 0 and (sweep / "1_local" / "metrics.json").is_file()
        else one_line(proc)
    )  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "disabled"}
    both = d / "sweep_both"
    cmd = [sys.executable, "-m", "advrec.train", *search, "hydra.sweeper.n_trials=3",
           f"hydra.sweep.dir={both}"]  # fmt: skip
    procs = [subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    codes = sorted(p.returncode for p in done)
    trials = len(list(both.glob("*_local/metrics.json")))
    refused = [p for p in done if p.returncode != 0]
    out["two searches into one folder"] = (
        "ok" if codes == [0, 2] and trials == 3 and one_line(refused[0], "another search") == "ok"
        else f"exit codes {codes}, {trials} trials for a budget of 3"
    )  # fmt: skip

    # recommend's new-user file
    feats = trained(d, "feats", "model=grouppop", "data=synthetic",
                    "data.source.with_features=true", "logger=csv")  # fmt: skip
    for name, users in (("repeated ids", ["n1", "n1"]), ("ids already known", ["n1", "0"])):
        path = d / f"new_{len(name)}.csv"
        path.write_text("user,age,gender,occupation\n" +
                        "".join(f"{u},30,F,a\n" for u in users))  # fmt: skip
        recs = d / f"new_recs_{len(name)}.csv"
        judge(f"recommend new_users_file: {name}", "recommend", f"ckpt_path={feats}",
              f"new_users_file={path}", f"output={recs}",
              f"hydra.run.dir={d / ('nr' + str(len(name)))}",
              extra=lambda recs=recs: not recs.exists())  # fmt: skip
    proc = cli("train", "model=grouppop", "data=synthetic", "data.source.with_features=true",
               "logger=csv", "model.search={min_users:[5,50]}",
               f"hydra.run.dir={d / 'gp2'}", cwd=d)  # fmt: skip
    out["GroupPop search (model.search) through advrec-train"] = (
        "ok" if proc.returncode == 0 else one_line(proc)
    )


def main() -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = probes(Path(tmp))
    import advrec

    print(
        json.dumps(
            {
                "advrec": str(Path(advrec.__file__).parent),
                "probes": len(results),
                "ok": sum(v == "ok" for v in results.values()),
                "results": results,
                "wall_s": round(time.perf_counter() - start, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
