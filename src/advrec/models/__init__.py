"""Recommenders: one file per model, all evaluated by `Recommender` in base.py."""
