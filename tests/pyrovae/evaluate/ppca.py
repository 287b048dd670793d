"""Probabilistic PCA written in plain Pyro: a VAE whose log p(x) and posterior are exact.

z ~ N(0, I_k), x | z ~ N(W z + b, sigma^2 I_D)  =>  p(x) = N(b, W W^T + sigma^2 I) and
q*(z | x) = N(M^-1 W^T (x - b), sigma^2 M^-1) with M = W^T W + sigma^2 I.
"""

import pyro
import pyro.distributions as dist
import torch


class PPCA:
    def __init__(self, data_dim=6, latent_dim=2, sigma=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(data_dim, latent_dim, generator=g)
        self.b = torch.randn(data_dim, generator=g)
        self.sigma = sigma
        self.k = latent_dim
        M = self.W.T @ self.W + sigma**2 * torch.eye(latent_dim)
        self.M_inv = torch.linalg.inv(M)
        self.post_cov = sigma**2 * self.M_inv

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.k), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def posterior_loc(self, x):
        return (x - self.b) @ self.W @ self.M_inv.T

    def exact_guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(self.posterior_loc(x), self.post_cov))

    def diagonal_guide(self, x, inflate=1.6):
        """Right mean, wrong (diagonal, too wide) covariance: a strictly worse guide."""
        std = self.post_cov.diagonal().sqrt() * inflate
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.posterior_loc(x), std).to_event(1))

    def sample_x(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.k, generator=g)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, self.W.shape[0], generator=g)

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.W.shape[0])
        return dist.MultivariateNormal(self.b, cov).log_prob(x)
