"""Pyro's Trace_ELBO without reading values back to the host.

Per data point the estimate is the one of :class:`pyro.infer.Trace_ELBO`, one draw
z ~ q(z | x) per particle::

    ELBO(x) = sum_sites log p(x, z) - sum_latent log q(z | x)            (nats)

with Pyro's surrogate for the gradient (score-function terms for guide sites without
``rsample``, weighted by the downstream log ratio). Pyro's class reads every site's log
density back to the host (``torch_item``) to build the loss value, a synchronisation per
site per step on a GPU, and one a recorded step (:mod:`pyrovae.train.traced`) cannot
replay. :class:`LeanTraceELBO` keeps the value on the device: the loss is
``surrogate + (value - surrogate).detach()``, the value of the ELBO estimate with the
surrogate's gradients, as Pyro's ``loss + (surrogate - item(surrogate))``
(``tests/pyrovae/train/test_lean_trace.py`` checks both against Pyro's class).

With Pyro's validation on it runs Pyro's own code, so every check Pyro makes still fires;
``fit`` computes its first loss that way before training.
"""

from __future__ import annotations

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import Trace_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import is_validation_enabled


class LeanTraceELBO(Trace_ELBO):
    """:class:`~pyro.infer.Trace_ELBO` whose loss stays on the device."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-ELBO averaged over the particles: the estimate's value with the surrogate's
        gradients, as a tensor on the parameters' device."""
        if is_validation_enabled():
            return super().differentiable_loss(model, guide, *args, **kwargs)
        loss = surrogate = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo, surrogate_elbo = _elbo_and_surrogate(model_trace, guide_trace)
            loss = loss - elbo / self.num_particles
            surrogate = surrogate - surrogate_elbo / self.num_particles
        return surrogate + (loss - surrogate).detach()

    def loss(self, model, guide, *args, **kwargs) -> float:
        if is_validation_enabled():
            return super().loss(model, guide, *args, **kwargs)
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


def _elbo_and_surrogate(model_trace, guide_trace):
    """One particle's (ELBO, surrogate ELBO) from traces whose log densities (model) and
    score parts (guide) are computed, as ``Trace_ELBO._differentiable_loss_particle`` builds
    them, without the host reads."""
    elbo = surrogate = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            elbo = elbo + site["log_prob_sum"]
            surrogate = surrogate + site["log_prob_sum"]
    log_r = None
    for site in guide_trace.nodes.values():
        if site["type"] != "sample":
            continue
        _, score_function_term, entropy_term = site["score_parts"]
        elbo = elbo - site["log_prob_sum"]
        if not is_identically_zero(entropy_term):
            surrogate = surrogate - entropy_term.sum()
        if not is_identically_zero(score_function_term):
            if log_r is None:
                log_r = _compute_log_r(model_trace, guide_trace)
            downstream = log_r.sum_to(site["cond_indep_stack"])
            surrogate = surrogate + (downstream * score_function_term).sum()
    return elbo, surrogate
