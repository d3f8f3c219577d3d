"""Every use of Optuna's private API in one place (tests/test_sweeps.py checks each one, so
a release that changes them fails loudly there, not in the middle of a search).

Optuna has no public way to act on a trial by its number from another process: a pruned
trial's training run reports to the trial the sweeper asked for, and a resumed search marks
the trials a dead sweep left running."""

from __future__ import annotations


def trial_id(study, number: int) -> int:
    """The storage's id of trial `number` of `study` (private: `_storage`, `_study_id`)."""
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def trial_handle(study, number: int):
    """A live `optuna.Trial` for trial `number` (report / should_prune / set_user_attr)."""
    import optuna

    return optuna.trial.Trial(study, trial_id(study, number))
