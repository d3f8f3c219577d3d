"""The exceptions of mistakes a user can fix (bad file, bad column, bad override) and of
search trials that end without a result."""


class AdvrecError(Exception):
    """A user-facing error: the message names the problem and how to fix it.

    Entry points print the message alone (no traceback) and exit with status 2.
    """


class BadTrial(AdvrecError):
    """Settings a search can draw that leave the run without a result (each value valid on
    its own). A run ends with the message; an Optuna search records the trial as pruned
    (`TrialState.PRUNED`, the reason in its `pruned_because` attribute) and goes on."""


class Diverged(BadTrial):
    """Training produced a non-finite loss or weight: the run has no result."""


class Incompatible(BadTrial):
    """Hyper-parameters that are valid one by one but not together (e.g. a noise schedule
    whose lower bound is not below its upper)."""


class TrialPruned(BadTrial):
    """The search's pruner stopped this trial at a validation check (its curve was worse than
    the others' at that point): no result, its checkpoints removed."""
