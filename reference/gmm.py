"""The analytic world: a Gaussian mixture in latent space whose denoiser is known in closed form.

Under the noising x = x0 + sigma * eps, component k with weight w_k, mean m_k and isotropic std s_k gives
x ~ N(m_k, (s_k^2 + sigma^2) I), and E[x0 | x, k] = m_k + s_k^2 / (s_k^2 + sigma^2) (x - m_k). The exact denoiser is the
posterior-weighted sum of those means, so samplers, noise injection and guidance can be checked against exact answers
in any dimensionality.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianMixture:
    weights: torch.Tensor  # [K], summing to 1
    means: torch.Tensor  # [K, *shape]
    stds: torch.Tensor  # [K]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` exact samples [count, *shape] and the component each came from."""
        components = torch.multinomial(self.weights, count, replacement=True, generator=generator)
        noise = torch.randn((count, *self.shape), generator=generator)
        stds = self.stds[components].reshape(count, *([1] * len(self.shape)))
        return self.means[components] + stds * noise, components

    def log_density(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log p_sigma(x) of the noised mixture, per sample; sigma is [batch] or a scalar."""
        return torch.logsumexp(self._component_log_likelihoods(x, sigma), dim=1)

    def component_posterior(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """p(k | x) at noise level sigma: [batch, K]."""
        return torch.softmax(self._component_log_likelihoods(x, sigma), dim=1)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The exact posterior mean E[x0 | x] at noise level sigma."""
        flat = x.flatten(1).double()
        variance = self._noisy_variance(sigma, x.shape[0])  # [batch, K]
        posterior = self.component_posterior(x, sigma)
        shrink = self.stds.double() ** 2 / variance  # [batch, K]
        means = self.means.flatten(1).double()  # [K, D]
        per_component = means[None] + shrink[..., None] * (flat[:, None] - means[None])
        return (posterior[..., None] * per_component).sum(dim=1).reshape(x.shape).to(x.dtype)

    def _noisy_variance(self, sigma: torch.Tensor, batch: int) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1).expand(batch, 1)
        return self.stds.double()[None] ** 2 + sigma ** 2

    def _component_log_likelihoods(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).double()
        variance = self._noisy_variance(sigma, x.shape[0])
        squared = ((flat[:, None] - self.means.flatten(1).double()[None]) ** 2).sum(-1)
        dims = flat.shape[1]
        return (self.weights.double().log()[None] - 0.5 * dims * torch.log(2 * torch.pi * variance)
                - 0.5 * squared / variance)


def standard_mixture(shape: tuple[int, ...] = (4, 8, 8), seed: int = 0) -> GaussianMixture:
    """Three well-separated components with unequal weights (0.5, 0.3, 0.2) in a latent of ``shape``."""
    generator = torch.Generator().manual_seed(seed)
    dims = int(torch.tensor(shape).prod())
    directions = torch.linalg.qr(torch.randn(dims, 3, generator=generator, dtype=torch.float64))[0].T.float()
    means = 6.0 * directions.reshape(3, *shape)  # orthonormal directions: the means lie 6·√2 apart
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), means, torch.tensor([0.5, 0.4, 0.3]))


def mode_frequency_error(mixture: GaussianMixture, samples: torch.Tensor) -> float:
    """Largest gap between how often the samples fall in each component (by exact posterior at sigma 0) and its
    weight."""
    components = mixture.component_posterior(samples, torch.tensor(0.0)).argmax(dim=1)
    frequencies = torch.bincount(components, minlength=len(mixture.weights)).double() / len(samples)
    return float((frequencies - mixture.weights.double()).abs().max())
