"""`GANRecommender`: the layer every adversarial recommender extends.

A GAN recommender has a `generator` and a `discriminator`, hyper-parameters `lr_g` and `lr_d`
(and optionally `optimizer`: adam or sgd, `grad_clip`), and an epoch of named phases: batches
of phase "D" update the discriminator, batches of phase "G" the generator. A subclass writes
its method and nothing else:

    phases()        -> (Phase("D", batch size, passes), Phase("G", batch size, passes))
    d_loss(batch)   -> (loss, stats) for one D update (None: nothing to learn from)
    g_loss(batch)   -> (loss, stats) for one G update
    score(...)      -> what Recommender scores with (usually the generator's output)

This layer owns the machinery: two optimizers, manual optimisation with each loss built
while the other network is frozen, gradient clipping after the AMP scaler has unscaled,
counting the steps the scaler skipped, and epoch means of the losses and `stats` kept on the
device and logged once per epoch as `train/<name>` (no host sync per step).
"""

from __future__ import annotations

import torch

from advrec.data.batches import Phase
from advrec.models.base import Recommender
from advrec.models.nets import make_optimizer
from advrec.utils.compat import grad_scale

PHASES = ("G", "D")  # the optimizers' order: G first, as configure_optimizers returns them


class GANRecommender(Recommender):
    """Alternating D and G updates with manual optimisation; see the module docstring."""

    def __init__(self, n_users: int, n_items: int, ks=(5, 10, 20)):
        super().__init__(n_users, n_items, ks)
        self.automatic_optimization = False
        self._sums: dict[str, list] = {}  # name -> [device-side weighted sum, weight]
        self._skipped: torch.Tensor | None = None  # optimizer steps the AMP scaler skipped

    # -- what a subclass writes --------------------------------------------------------------
    def phases(self) -> tuple[Phase, ...]:
        raise NotImplementedError

    def d_loss(self, batch: dict) -> tuple[torch.Tensor, dict] | None:
        raise NotImplementedError

    def g_loss(self, batch: dict) -> tuple[torch.Tensor, dict] | None:
        raise NotImplementedError

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Extra values logged at each epoch's end (e.g. a collapse measure)."""
        return {}

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        h = self.hparams
        name = h.get("optimizer", "adam")
        return [
            make_optimizer(name, self.generator.parameters(), h.lr_g),
            make_optimizer(name, self.discriminator.parameters(), h.lr_d),
        ]

    def training_step(self, batch: dict, batch_idx: int) -> None:
        phase = batch["phase"]
        opt = dict(zip(PHASES, self.optimizers(), strict=True))[phase]
        loss_of = self.d_loss if phase == "D" else self.g_loss
        # toggle_optimizer freezes the other network while the loss builds its graph, so G's
        # loss never reaches D and vice versa
        self.toggle_optimizer(opt)
        try:
            out = loss_of(batch)
            if out is not None:
                loss, stats = out
                self._step(opt, loss)
                self.track(len(batch["ids"]), {f"{phase.lower()}_loss": loss, **stats})
        finally:
            self.untoggle_optimizer(opt)

    def _step(self, opt, loss: torch.Tensor) -> None:
        """One update; steps the GradScaler skips (inf/NaN under 16-mixed) are counted
        without a host sync (the scale drops exactly when it skipped)."""
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        scale = None if scaler is None else grad_scale(scaler)
        before = None if scale is None else scale.clone()
        opt.step()
        if before is not None:
            skipped = (grad_scale(scaler) < before).sum()
            self._skipped = skipped if self._skipped is None else self._skipped + skipped

    def on_before_optimizer_step(self, optimizer) -> None:
        # called after the AMP scaler unscaled the gradients, so the threshold is in real units
        clip = self.hparams.get("grad_clip")
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip)

    # -- epoch statistics ----------------------------------------------------------------------
    def track(self, weight: int, values: dict[str, torch.Tensor]) -> None:
        """Add `values` (with `weight`, e.g. the batch's rows) to this epoch's device-side
        means."""
        for k, v in values.items():
            acc = self._sums.setdefault(k, [0.0, 0])
            acc[0] = acc[0] + v.detach().float() * weight
            acc[1] += weight

    def running_losses(self) -> dict[str, torch.Tensor]:
        """This epoch's means so far (the divergence guard names a non-finite one)."""
        return {k: total / max(n, 1) for k, (total, n) in self._sums.items()}

    def on_train_epoch_end(self) -> None:
        for k, v in self.running_losses().items():
            self.log(f"train/{k}", v, sync_dist=True, prog_bar=k == "g_loss")
        self._sums = {}
        if self._skipped is not None:
            self.log("train/skipped_steps", self._skipped.float(), reduce_fx="sum", sync_dist=True)
            self._skipped = None
        for k, v in self.diagnostics().items():
            self.log(f"train/{k}", v, sync_dist=True)
