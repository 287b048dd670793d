"""Training objectives: one registry of Pyro ELBOs and the IWAE bound, the handler that
scales sites for minibatches and KL warm-up, and the check that an objective fits a pair.

Objectives are negative lower bounds on log p(x) in nats; each has ``loss`` (a float) and
``differentiable_loss`` (a tensor) over ``(model, guide, x)``:

================  ===========================================================  ==========
name              bound per data point                                          needs
================  ===========================================================  ==========
Trace_ELBO        E_q[log p(x, z) - log q(z|x)]                                 —
TraceMeanField\\_  same, with closed-form KL(q || p) where registered            mean-field,
ELBO                                                                            reparam. q
TraceEnum_ELBO    same, discrete sites marked for enumeration summed out        enumerable
IWAE              E[log (1/K) sum_k p(x, z_k) / q(z_k|x)] (Burda et al. 2015)   reparam. q
================  ===========================================================  ==========

:class:`SiteScale` multiplies every sample site in the data plate by N/B (so a minibatch
loss estimates the full-data one) and every latent site by the warm-up weight beta.
:class:`IWAE` keeps the N/B factor OUTSIDE its log-mean-exp (Pyro's ``RenyiELBO`` puts
plate scaling inside it, issue #2220), so a minibatch IWAE loss estimates N x the mean
per-point bound.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.poutine.messenger import Messenger

from pyrovae.checks import (
    latent_sites,
    masked_log_prob,
    observed_sites,
    sample_sites,
    trace_pair,
)
from pyrovae.errors import PyrovaeError, unknown_name

from .lean_trace import LeanTraceELBO
from .mean_field import LeanMeanFieldELBO

DATA_PLATE = "data"
IWAE_PLATE = "iwae_particles"


class IWAE:
    """The importance-weighted bound L_K (Burda et al. 2015) with K = ``num_particles``.

    Per data point, with z_k ~ q(z | x_n) drawn in an outer plate of size K::

        L_K(x_n) = log (1/K) sum_k exp(log w_nk),
        log w_nk = log p(x_n | z_k) + beta [log p(z_k) - log q(z_k | x_n)]

    beta is each latent site's scale relative to the observed sites' (1 without warm-up).
    The loss is -(N/B) sum_n L_K(x_n): the data-plate scale multiplies the per-point bounds,
    never the weights. Every sample site must lie in the data plate and the guide must be
    reparameterized. L_1 is the ELBO; L_K rises with K towards log p(x).
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: int = 1, **_):
        if num_particles < 1:
            raise PyrovaeError(f"IWAE needs num_particles >= 1, got {num_particles}")
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting

    def _bound(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        particles = pyro.plate(IWAE_PLATE, self.num_particles, dim=-1 - self.max_plate_nesting)
        guide_trace = poutine.trace(particles(guide)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(particles(model), trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        observed = observed_sites(model_trace)
        if not observed:
            raise PyrovaeError("IWAE needs an observed site in the model")
        data_scale = model_trace.nodes[observed[0]]["scale"]
        log_w = 0.0
        for trace, sign, names in (
            (model_trace, 1.0, sample_sites(model_trace)),
            (guide_trace, -1.0, latent_sites(guide_trace)),
        ):
            for name in names:
                site = trace.nodes[name]
                if trace is guide_trace and not site["fn"].has_rsample:
                    raise NotImplementedError(
                        f"IWAE needs a reparameterized guide; site {name!r} has no rsample"
                    )
                log_prob = masked_log_prob(site)
                if log_prob.dim() != 2 or log_prob.shape[0] != self.num_particles:
                    raise PyrovaeError(
                        f"IWAE: site {name!r} has log_prob shape {tuple(log_prob.shape)}; every "
                        "sample site must lie in the data plate (shape (K, B))"
                    )
                log_w = log_w + sign * (site["scale"] / data_scale) * log_prob
        bound = torch.logsumexp(log_w, 0) - math.log(self.num_particles)  # (B,)
        return data_scale * bound.sum()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return -self._bound(model, guide, *args, **kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()


# name -> (factory(num_particles, max_plate_nesting), what the pair must satisfy)
OBJECTIVES: dict[str, tuple[Callable, str]] = {
    "Trace_ELBO": (LeanTraceELBO, "any model/guide pair"),
    "TraceMeanField_ELBO": (
        LeanMeanFieldELBO,
        "a fully reparameterized mean-field guide: no guide site may depend on another "
        "latent site, and guide sites in the model's order; use Trace_ELBO otherwise",
    ),
    "TraceEnum_ELBO": (
        TraceEnum_ELBO,
        "discrete sites marked for enumeration (config_enumerate) and networks that "
        "broadcast over the enumeration dimension",
    ),
    "IWAE": (
        IWAE,
        "a reparameterized guide whose sample sites all lie in the data plate, without "
        "enumerated sites",
    ),
}


def make_objective(name: str, num_particles: int = 1, max_plate_nesting: int = 1):
    """An objective by name; Pyro ELBOs are vectorized over ``num_particles`` particles, for
    IWAE ``num_particles`` is K."""
    if name not in OBJECTIVES:
        raise unknown_name("objective", name, OBJECTIVES)
    if num_particles < 1:
        raise PyrovaeError(f"num_particles must be >= 1, got {num_particles}")
    factory, _ = OBJECTIVES[name]
    if factory is IWAE:
        return IWAE(num_particles, max_plate_nesting)
    return factory(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def check_objective(name: str, objective, model: Callable, guide: Callable, *args) -> None:
    """Compute one loss with Pyro's validation on and its warnings as errors; raise
    ``ValueError`` saying why if the objective does not fit the pair (a mean-field ELBO on
    a guide whose sites depend on each other, enumeration under Trace_ELBO, ...)."""
    with pyro.validation_enabled(True), warnings.catch_warnings():
        warnings.filterwarnings("error", module=r"pyro\.")
        try:
            loss = objective.differentiable_loss(model, guide, *args)
        except (NotImplementedError, ValueError, RuntimeError, UserWarning) as error:
            raise PyrovaeError(
                f"objective {name!r} does not fit this model/guide pair: {error}. "
                f"{name} needs {OBJECTIVES[name][1]}."
            ) from error
    if not torch.isfinite(loss):
        raise PyrovaeError(
            f"objective {name!r} gives a non-finite loss ({loss.item()}) on the first batch; "
            "check the model's and guide's densities at initialisation"
        )


class SiteScale(Messenger):
    """Scale sites in the data plate by ``data_scale`` and latent sites by ``beta``.

    With ``enumerated_beta=False`` (for TraceEnum_ELBO) beta spares the sites marked for
    enumeration and any site sharing an enumeration with an observed one, which Pyro
    requires to share one scale; see :func:`warmup_sites`.
    """

    def __init__(self, data_scale: float = 1.0, beta: float = 1.0, data_plate: str = DATA_PLATE):
        super().__init__()
        self.data_scale = data_scale
        self.beta = beta
        self.data_plate = data_plate
        self.beta_sites: set[str] | None = None  # None: every latent site

    def _process_message(self, msg):
        if msg["type"] != "sample":
            return
        if any(frame.name == self.data_plate for frame in msg["cond_indep_stack"]):
            msg["scale"] = _times(self.data_scale, msg["scale"])
        if not msg["is_observed"] and (self.beta_sites is None or msg["name"] in self.beta_sites):
            msg["scale"] = _times(self.beta, msg["scale"])


def _times(factor: float | torch.Tensor, scale):
    """``factor * scale``, skipping a float factor of 1. A tensor factor (a traced step's
    input, :mod:`pyrovae.train.traced`) always multiplies: its value must not decide what
    the trace records."""
    if not torch.is_tensor(factor) and factor == 1.0:
        return scale
    return factor * scale


def find_data_plate(
    model: Callable, guide: Callable, x: torch.Tensor, requested: str | None = None
) -> tuple[str, bool]:
    """(name of the plate over the rows of ``x``, whether it scales itself).

    The data plate is the plate of size B = ``len(x)`` around the model's observed sites
    (``requested`` names it explicitly). A plate built with ``subsample=`` (the CEVAE idiom
    ``pyro.plate("data", N, subsample=x)``) records ``full_size = N`` and Pyro already
    scales its sites by N/B: ``fit`` must not scale them again.
    """
    with pyro.validation_enabled(False):
        _, model_trace = trace_pair(model, guide, x)
    frames = {}
    for name in observed_sites(model_trace):
        for frame in model_trace.nodes[name]["cond_indep_stack"]:
            frames[frame.name] = frame
    if requested is not None:
        if requested not in frames:
            raise PyrovaeError(
                f"data_plate={requested!r} is not a plate around the model's observed sites; "
                f"those are {sorted(frames) or 'none'}"
            )
        frame = frames[requested]
        return requested, frame.full_size not in (None, frame.size)
    batch = [f for f in frames.values() if f.size == x.shape[0]]
    if len(batch) > 1:
        named = [f for f in batch if f.name == DATA_PLATE]
        batch = named or batch
    if len(batch) != 1:
        found = ", ".join(f"{f.name!r} (size {f.size})" for f in frames.values()) or "none"
        raise PyrovaeError(
            f"cannot tell which plate runs over the {x.shape[0]} rows of a batch (plates around "
            f"the observed sites: {found}); wrap the model's and guide's per-row sites in "
            "pyro.plate(name, len(x)) or pass data_plate=name"
        )
    frame = batch[0]
    return frame.name, frame.full_size not in (None, frame.size)


def warmup_sites(
    model: Callable, guide: Callable, x: torch.Tensor, max_plate_nesting: int = 1
) -> set[str] | None:
    """The latent sites KL warm-up may scale under TraceEnum_ELBO (None: all of them).

    For sites enumerated in the MODEL (not in the guide), Pyro requires every model site
    whose log density carries an enumeration dimension to share one ``poutine.scale``;
    guide-side enumeration accepts any scaling (measured). When that group contains an
    observed site (x | y, z in the semi-supervised M2), beta may not touch the group's
    latent sites: warm-up then scales the other latent sites only. Otherwise (y and z | y
    in a GMVAE enumerated in the model) the whole group is scaled alike.
    """
    first = -1 - max_plate_nesting
    with pyro.validation_enabled(False):
        guide_trace = poutine.trace(poutine.enum(guide, first_available_dim=first)).get_trace(x)
        replayed = poutine.replay(model, trace=guide_trace)
        model_trace = poutine.trace(poutine.enum(replayed, first_available_dim=first)).get_trace(x)
    names = sample_sites(model_trace)
    guide_names = set(sample_sites(guide_trace))
    model_enumerated = [
        n
        for n in names
        if n not in guide_names and model_trace.nodes[n]["infer"].get("enumerate") == "parallel"
    ]
    if not model_enumerated:  # guide-side enumeration accepts any scaling
        return None
    group = set()
    for name in names:
        site = model_trace.nodes[name]
        log_prob = site["fn"].log_prob(site["value"])
        if log_prob.dim() > max_plate_nesting and any(
            size > 1 for size in log_prob.shape[: log_prob.dim() - max_plate_nesting]
        ):
            group.add(name)
    if not group & set(observed_sites(model_trace)):
        return None
    return set(latent_sites(model_trace)) - group
