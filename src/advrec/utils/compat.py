"""Every use of another library's private API, in one place (tests/test_compat.py runs each
against the installed versions, so a release that changes one fails loudly there, not in
the middle of a run). Each says why no public API does.
"""

from __future__ import annotations


# -- Lightning ---------------------------------------------------------------------------------
def count_optimizer_step(trainer) -> None:
    """Count one optimizer step of a manual-optimisation fit that updated weights without an
    optimizer (iALS's exact solves): Lightning's `global_step` is that counter, and with it 0
    no checkpoint (the chosen epoch) is ever saved. No public setter exists."""
    steps = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    steps.increment_ready()
    steps.increment_completed()


def batches_processed(trainer) -> int:
    """Training batches of the current epoch the fit loop has processed (a checkpoint written
    in on_train_batch_end counts its batch, as Lightning's restore does)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def total_batches(trainer) -> int:
    """Training batches of the whole fit so far (the fit loop's running index + 1)."""
    return trainer.fit_loop.total_batch_idx + 1


def wandb_init_kwargs(logger) -> dict:
    """The keyword arguments a WandbLogger will pass to wandb.init (Lightning keeps them
    private; advrec drops the anonymous=None that wandb >= 0.19 warns about)."""
    return getattr(logger, "_wandb_init", {})


# -- torch ---------------------------------------------------------------------------------------
def grad_scale(scaler):
    """The GradScaler's scale tensor, or None before its first step (`get_scale()` is public
    but syncs with the device; advrec compares scales without a sync to count skipped steps)."""
    return scaler._scale


# -- Optuna --------------------------------------------------------------------------------------
def trial_id(study, number: int) -> int:
    """The storage's id of trial `number` of `study`: Optuna has no public way to act on a
    trial by its number from another process (a pruned run reports to the sweeper's trial)."""
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def trial_handle(study, number: int):
    """A live `optuna.Trial` for trial `number` (report / should_prune / set_user_attr)."""
    import optuna

    return optuna.trial.Trial(study, trial_id(study, number))
