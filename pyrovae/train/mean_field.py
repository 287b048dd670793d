"""Pyro's mean-field ELBO, scoring only the sites its estimate reads.

Per data point the estimate is the one of :class:`pyro.infer.TraceMeanField_ELBO`::

    ELBO(x) = sum_obs log p(x | z) - sum_latent KL(q(z | x) || p(z))      (nats)

with the closed-form KL where one is registered and the one-draw estimate
``log p(z) - log q(z | x)`` elsewhere. Pyro scores every sample site of both traces before
it looks at any (``compute_log_prob`` on the model trace, ``compute_score_parts`` on the
guide's), so for each latent site with a closed-form KL it computes ``log p(z)`` and
``log q(z | x)`` and throws them away. :class:`LeanMeanFieldELBO` computes a site's log
density only where the estimate uses it. The value and gradients are the same tensors
Pyro's class returns (``tests/pyrovae/train/test_mean_field.py``); the step time it saves
is part of what ``benchmarks/svi_step.py`` measures.

With Pyro's validation on it runs Pyro's own code path, so every check Pyro makes
(mean-field requirement, reparameterization, site shapes) still fires; ``fit`` computes
its first loss that way before training.
"""

from __future__ import annotations

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine import replay, trace
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence


def _scaled_log_prob_sum(site) -> torch.Tensor:
    """sum over the site's batch of scale * mask * log density at its value (nats)."""
    log_prob = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_prob, site["scale"], site["mask"]).sum()


class LeanMeanFieldELBO(TraceMeanField_ELBO):
    """:class:`~pyro.infer.TraceMeanField_ELBO` without the log densities it discards."""

    def _get_trace(self, model, guide, args, kwargs):
        if is_validation_enabled():
            return super()._get_trace(model, guide, args, kwargs)
        guide_trace = trace(guide, graph_type="flat").get_trace(*args, **kwargs)
        model_trace = trace(replay(model, trace=guide_trace), graph_type="flat").get_trace(
            *args, **kwargs
        )
        return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-ELBO averaged over the particles, as a tensor that autograd differentiates.

        Pyro's version reads the loss back to the host twice and hooks a NaN check onto its
        gradient; this one leaves the value on the device (``SVIStep`` checks it)."""
        if is_validation_enabled():
            return super().differentiable_loss(model, guide, *args, **kwargs)
        elbo = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo = elbo + self._elbo_particle(model_trace, guide_trace)
        return -elbo / self.num_particles

    def loss(self, model, guide, *args, **kwargs) -> float:
        if is_validation_enabled():
            return super().loss(model, guide, *args, **kwargs)
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        # (loss as a float, surrogate loss), the pair Pyro's loss_and_grads expects
        if is_validation_enabled():
            return super()._differentiable_loss_particle(model_trace, guide_trace)
        surrogate = -self._elbo_particle(model_trace, guide_trace)
        return float(surrogate), surrogate

    @staticmethod
    def _elbo_particle(model_trace, guide_trace):
        """One particle's ELBO: observed log densities minus each latent site's KL."""
        elbo = 0.0
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            if model_site["is_observed"]:
                elbo = elbo + _scaled_log_prob_sum(model_site)
                continue
            guide_site = guide_trace.nodes[name]
            try:
                kl = kl_divergence(guide_site["fn"], model_site["fn"])
            except NotImplementedError:  # no closed form: log p(z) - log q(z|x) at the draw
                elbo = elbo + _scaled_log_prob_sum(model_site) - _scaled_log_prob_sum(guide_site)
                continue
            kl = scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])
            if torch.is_tensor(kl):
                elbo = elbo - kl.sum()
            else:  # a scalar KL for a site with a batch shape
                elbo = elbo - kl * torch.Size(guide_site["fn"].batch_shape).numel()
        for name, guide_site in guide_trace.nodes.items():  # auxiliary guide sites
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                elbo = elbo - _scaled_log_prob_sum(guide_site)
        return elbo
