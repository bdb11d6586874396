"""The reference world: procedural pictures whose attributes are known exactly, an oracle that reads them back,
and an analytic Gaussian-mixture world with an exact denoiser."""
