"""advrec: GAN recommenders and strong baselines under one honest evaluation harness.

From Python: `advrec.api` (train, recommend, read_report). They are not attributes of this
package: advrec.train and advrec.recommend are the command-line modules."""

from advrec.errors import AdvrecError

__all__ = ["AdvrecError"]
__version__ = "0.1.0"
