"""Data layer: sources -> Interactions -> Split -> DataModule batches."""

from advrec.data.interactions import Interactions
from advrec.data.splits import Split

__all__ = ["Interactions", "Split"]
