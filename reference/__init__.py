"""The reference world: procedural pictures whose attributes are known exactly, an oracle that reads them back, an
analytic Gaussian-mixture world with an exact denoiser, the LM's grammar, and the small model family trained on them
(``models.load()``; retrain with ``python -m latent_space_control.reference train --out DIR``)."""
