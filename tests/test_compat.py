"""advrec.utils.compat against the installed Lightning, torch, W&B and Optuna: each private
name advrec uses still exists and means what advrec reads it as (a release that changes one
fails here, by name, not in the middle of a run)."""

import torch
from lightning import LightningModule, Trainer
from torch.utils.data import DataLoader

from advrec.utils import compat


class _Manual(LightningModule):
    """Manual optimisation that updates nothing through an optimizer (like iALS)."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(
            (compat.batches_processed(self.trainer), compat.total_batches(self.trainer))
        )
        compat.count_optimizer_step(self.trainer)

    def train_dataloader(self):
        return DataLoader(torch.zeros(3, 1), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_progress_counters():
    model = _Manual()
    trainer = Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model)
    assert trainer.global_step == 6  # one counted step per batch: global_step follows it
    # inside a step: batches of this epoch done before it, and of the whole fit so far + 1
    assert model.seen == [(0, 1), (1, 2), (2, 3), (0, 4), (1, 5), (2, 6)]


def test_grad_scaler_scale_tensor():
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    assert compat.grad_scale(scaler) is None  # before its first use
    w = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler.scale((w * float("inf")).sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert isinstance(compat.grad_scale(scaler), torch.Tensor)
    assert float(compat.grad_scale(scaler)) == 4.0  # an overflowing step halved it


def test_wandb_logger_init_kwargs(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="p", save_dir=str(tmp_path), offline=True)
    init = compat.wandb_init_kwargs(logger)
    assert init["project"] == "p" and "anonymous" in init


def test_optuna_trial_by_number():
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study()
    asked = study.ask()
    handle = compat.trial_handle(study, asked.number)
    assert isinstance(handle, optuna.trial.Trial) and handle.number == asked.number
    handle.report(0.5, 1)
    handle.set_user_attr("k", 1)
    study.tell(asked.number, state=TrialState.FAIL)  # by number: public
    t = study.trials[0]
    assert t.intermediate_values == {1: 0.5} and t.user_attrs == {"k": 1}
    assert t.state == TrialState.FAIL
