"""Recommenders, one file per model: `base.Recommender` evaluates them all, `base.ClosedForm`
fits in one pass, `gan.GANRecommender` runs alternating D/G training; `nets` and `samplers`
hold the pieces the models share."""
