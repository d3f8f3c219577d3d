import json

import numpy as np
import pytest
import torch
from lightning import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from advrec.models.cfgan import CFGAN
from advrec.utils.callbacks import ResumePoint
from tests.helpers import REPO, quiet_trainer, run_cli, synthetic_dm
from tests.helpers.killers import KillAt


@pytest.fixture(scope="module")
def dm():
    return synthetic_dm(60, 40, 900, seed=3, val_fraction=0.1)


def small(dm, **kw):
    params = dict(
        g_hidden=[16], d_hidden=[8], batch_size_g=8, batch_size_d=16, lr_g=1e-2, lr_d=1e-2, **kw
    )
    return CFGAN(dm.n_users, dm.n_items, **params)


def trainer(**kw):
    return quiet_trainer(**{"limit_val_batches": 0, **kw})


@pytest.mark.parametrize("bulk", [True, False])
def test_shared_negatives_are_the_released_samples(dm, bulk):
    """negatives=shared: with S_zr = S_pm one sample (the released code's clock reseed); with
    S_zr < S_pm the smaller is a subset of the larger. independent: ~49 % overlap."""
    m = dm.fit_rows_matrix("items")
    ids = torch.arange(m.shape[0])
    x = torch.from_numpy(m.toarray())

    def samples(**kw):
        model = small(dm, scheme="ZP", mask_cache_entries=10**9 if bulk else 0, **kw)
        model.prepare_fit(dm.fit_data(model.plan()))
        zr = model.zr_mask(ids, x).bool()
        pm = (model.fake_mask(ids, x) - x).bool()
        assert bool(model.negatives._cache) == bulk  # the whole epoch drawn at once
        return zr, pm

    zr, pm = samples(negatives="shared", s_zr=70, s_pm=70)
    assert torch.equal(zr, pm) and zr.any()
    zr, pm = samples(negatives="shared", s_zr=40, s_pm=70)
    assert not (zr & ~pm).any() and (pm & ~zr).any()
    zr, pm = samples(negatives="independent", s_zr=70, s_pm=70)
    assert float((zr & pm).sum() / (x == 0).sum()) == pytest.approx(0.49, abs=0.05)
    with pytest.raises(Exception, match="negatives"):
        small(dm, negatives="clock")


class StepSpy(Callback):
    """Records, per batch, which parameters and gradients the step changed."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = {
            n: (p.detach().clone(), None if p.grad is None else p.grad.clone())
            for n, p in pl_module.named_parameters()
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        changed = {"param": set(), "grad": set()}
        for n, p in pl_module.named_parameters():
            p0, g0 = self.before[n]
            if not torch.equal(p0, p.detach()):
                changed["param"].add(n.split(".")[0])
            same_grad = (g0 is None and p.grad is None) or (
                g0 is not None and p.grad is not None and torch.equal(g0, p.grad)
            )
            if not same_grad:
                changed["grad"].add(n.split(".")[0])
        self.records.append((batch["phase"], changed))

    def __init__(self):
        self.records = []


def test_each_step_moves_only_its_own_network(dm):
    model, spy = small(dm), StepSpy()
    trainer(max_epochs=1, callbacks=[spy]).fit(model, datamodule=dm)
    phases = {p for p, _ in spy.records}
    assert phases == {"D", "G"}
    for phase, changed in spy.records:
        own = "discriminator" if phase == "D" else "generator"
        assert changed["param"] == {own} and changed["grad"] == {own}, (phase, changed)


def test_non_adversarial_ablation_never_touches_d(dm):
    model, spy = small(dm, adversarial=False), StepSpy()
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    trainer(max_epochs=2, callbacks=[spy]).fit(model, datamodule=dm)
    assert {p for p, _ in spy.records} == {"G"}  # no D batches at all
    assert all(torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters(), strict=True))
    assert all(c["param"] == {"generator"} for _, c in spy.records)


def test_item_based_scores_are_the_transposed_item_rows(dm):
    model = small(dm)
    model.eval()
    hist = dm.history("test")
    model.prepare_scoring(hist)
    items = torch.from_numpy(hist.T.tocsr().toarray()).float()
    expected = model.generate(items).T
    users = torch.tensor([0, 5, 9])
    batch = {"users": users, "history": torch.zeros(3, dm.n_items)}
    assert torch.allclose(model.score_batch(batch), expected[users])


def test_resumed_run_ends_with_the_same_metrics(dm, tmp_path):
    def run(max_epochs, ckpt=None, dirpath=None):
        torch.manual_seed(0)
        model = small(dm)
        cb = [ModelCheckpoint(dirpath=dirpath, save_last=True)] if dirpath else []
        t = trainer(max_epochs=max_epochs, callbacks=cb, enable_checkpointing=bool(cb))
        t.fit(model, datamodule=dm, ckpt_path=ckpt)
        return t.test(model, datamodule=dm, verbose=False)[0]

    whole = run(4)
    run(2, dirpath=tmp_path)
    resumed = run(4, ckpt=str(tmp_path / "last.ckpt"))
    assert resumed == whole


@pytest.mark.parametrize("rows", ["items", "users"])
@pytest.mark.parametrize("scheme", ["ZR", "PM", "ZP"])
def test_fast_dev_run_through_hydra(rows, scheme, tmp_path):
    run_cli(
        "train",
        "model=cfgan",
        "data=synthetic",
        f"model.rows={rows}",
        f"model.scheme={scheme}",
        "trainer.fast_dev_run=true",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["model"] == "CFGAN" and np.isfinite(m["test/ndcg@10"])


def test_bf16_mixed_and_gradient_clipping_on_cpu(dm, monkeypatch):
    model = small(dm, grad_clip=0.5)
    calls = []
    original = model.clip_gradients

    def spy(optimizer, gradient_clip_val=None, **kw):
        calls.append(gradient_clip_val)
        return original(optimizer, gradient_clip_val=gradient_clip_val, **kw)

    monkeypatch.setattr(model, "clip_gradients", spy)
    t = trainer(max_epochs=1, precision="bf16-mixed")
    t.fit(model, datamodule=dm)
    n_steps = len(dm.train_dataloader(model.plan()))
    assert calls == [0.5] * n_steps  # once per optimizer step, after any unscaling
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_sigterm_mid_epoch_then_resume_ends_like_an_uninterrupted_run(dm, tmp_path):
    def run(callbacks=(), ckpt=None):
        torch.manual_seed(0)
        model = small(dm)
        t = trainer(max_epochs=3, callbacks=list(callbacks))
        t.fit(model, datamodule=dm, ckpt_path=ckpt)
        return t.test(model, datamodule=dm, verbose=False)[0]

    whole = run()
    on_exc = ResumePoint(dirpath=tmp_path, filename="last")
    with pytest.raises(SystemExit):  # Lightning stops after the batch that saw SIGTERM
        run([KillAt(epoch=1, at=3), on_exc])
    assert (tmp_path / "last.ckpt").is_file()
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"batches_done": 4}]
    resumed = run(ckpt=str(tmp_path / "last.ckpt"))
    assert resumed == whole


@pytest.mark.slow
def test_killed_cli_run_resumes_with_ckpt_path_last(tmp_path):
    args = [
        "model=cfgan",
        "data=synthetic",
        "model.g_hidden=[32]",
        "model.d_hidden=[16]",
        "trainer.max_epochs=3",
        "protocol=original",
        "logger=csv",
    ]
    env = {"PYTHONPATH": str(REPO)}
    run_cli("train", *args, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    killed = run_cli(
        "train",
        *args,
        f"hydra.run.dir={tmp_path / 'cut'}",
        "+callbacks.kill._target_=tests.helpers.killers.KillAt",
        "+callbacks.kill.epoch=1",
        "+callbacks.kill.at=5",
        "allow_targets=[tests.helpers.killers.]",  # a class outside advrec, allowed explicitly
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert killed.returncode == 143 and "ckpt_path=last" in killed.stderr
    assert not (tmp_path / "cut" / "metrics.json").exists()
    assert (tmp_path / "cut" / "checkpoints" / "last.ckpt").is_file()
    run_cli(
        "train",
        *args,
        f"hydra.run.dir={tmp_path / 'cut'}",
        "ckpt_path=last",
        "accept_changes=[callbacks.kill]",  # the killer is gone; nothing else changed
        cwd=tmp_path,
    )
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for key, value in whole.items():
        if key.startswith("test/"):
            assert resumed[key] == value, key


class HalveScaleEveryOtherStep(Callback):
    """Stands in for a GradScaler that skips every other step (what 16-mixed does on inf)."""

    def on_train_start(self, trainer, pl_module):
        trainer.precision_plugin.scaler = type("Scaler", (), {"_scale": torch.tensor(1024.0)})()
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.calls += 1
        if self.calls % 2 == 0:
            scaler = trainer.precision_plugin.scaler
            scaler._scale = scaler._scale / 2


def test_skipped_amp_steps_are_counted_and_logged(dm):
    model, spy = small(dm), HalveScaleEveryOtherStep()
    t = trainer(max_epochs=1, callbacks=[spy])
    t.fit(model, datamodule=dm)
    assert float(t.callback_metrics["train/skipped_steps"]) == spy.calls // 2


def test_16_mixed_with_a_real_grad_scaler_on_cpu(dm):
    """float16 autocast and torch's GradScaler run on CPU (Lightning alone turns 16-mixed into
    bf16-mixed there, so the plugin is given): from a scale of 2^40 the first steps overflow,
    are skipped and halve the scale; the epoch's count is logged; gradients are clipped after
    the scaler unscaled them (clipped scaled ones would come out 2^16 times too small)."""
    import math

    from lightning.pytorch.plugins.precision import MixedPrecision

    clip, norms, scales = 0.01, [], []

    class Watch(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            scales.append(scaler.get_scale())

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            pl_module.on_before_optimizer_step(optimizer)  # the model clips first (idempotent)
            grads = [p.grad for g in optimizer.param_groups for p in g["params"]]
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads if g is not None]))
            norms.append(float(norm))

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    model = small(dm, grad_clip=clip)
    t = trainer(
        max_epochs=2, callbacks=[Watch()], plugins=[MixedPrecision("16-mixed", "cpu", scaler)]
    )
    t.fit(model, datamodule=dm)
    final = scaler.get_scale()
    assert t.precision_plugin.precision == "16-mixed" and final < 2.0**40
    assert sum(not math.isfinite(n) for n in norms) == math.log2(2.0**40 / final)  # skipped
    assert float(t.callback_metrics["train/skipped_steps"]) == math.log2(scales[-1] / final)
    finite = [n for n in norms if math.isfinite(n)]
    assert finite and max(finite) == pytest.approx(clip, rel=1e-3)
