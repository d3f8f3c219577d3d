"""advrec: GAN recommenders and strong baselines under one honest evaluation harness."""

from advrec.errors import AdvrecError

__all__ = ["AdvrecError"]
__version__ = "0.1.0"
