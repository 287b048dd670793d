"""Latent supports: which priors and guide families can be paired.

A prior p(z) and a guide q(z|x) for the same site must live on the same space, or the
ELBO ``E_q[log p(z) - log q(z|x)]`` is meaningless (a vMF draw scored under N(0, I) gives
a finite, wrong number). Priors and guide families declare their support; ``models`` and
``guides`` record it here when they register a name, so the engine can list compatible
partners without importing them. A prior whose support is :data:`SAME_AS_GUIDE` (the
VampPrior: a mixture of the guide's own posteriors) pairs with every family.
"""

from __future__ import annotations

from pyro.distributions import constraints

SAME_AS_GUIDE = "same as the guide"
SUPPORTS = {
    "real_vector": constraints.real_vector,
    "sphere": constraints.sphere,
    "simplex": constraints.simplex,
}
# kind ("prior" or "guide family") -> name -> support name (or SAME_AS_GUIDE)
CATALOGUE: dict[str, dict[str, str]] = {"prior": {}, "guide family": {}}


def support_name(constraint) -> str:
    """``"real_vector"``, ``"sphere"``, ``"simplex"``, or the constraint's repr."""
    if isinstance(constraint, str):
        return constraint
    constraint = flatten_independent(constraint)
    for name, known in SUPPORTS.items():
        if constraint is known or repr(constraint) == repr(known):
            return name
    return repr(constraint)


def flatten_independent(constraint):
    """Nested ``independent`` wrappers as one: ``Delta(loc).to_event(1)`` has support
    independent(independent(real, 0), 1), which is ``real_vector``."""
    dims = 0
    while isinstance(constraint, constraints.independent):
        dims += constraint.reinterpreted_batch_ndims
        constraint = constraint.base_constraint
    return constraints.independent(constraint, dims) if dims else constraint


def record(kind: str, name: str, support) -> None:
    """Record that the prior / guide family ``name`` lives on ``support``."""
    CATALOGUE[kind][name] = SAME_AS_GUIDE if support == SAME_AS_GUIDE else support_name(support)


def compatible(prior_support: str, family_support: str) -> bool:
    return prior_support in (SAME_AS_GUIDE, family_support)


def partners(kind: str, support: str) -> list[str]:
    """Registered names of ``kind`` that pair with something on ``support``."""
    return sorted(name for name, own in CATALOGUE[kind].items() if own in (support, SAME_AS_GUIDE))


def mismatch_message(site: str, prior_support: str, guide_support: str) -> str:
    """The error for a site whose prior and guide supports differ, with the partners."""
    message = (
        f"latent site {site!r}: the model's prior lives on {prior_support} but the guide's "
        f"q({site}|x) lives on {guide_support}, so the ELBO would score points the prior "
        "cannot produce."
    )
    families = partners("guide family", prior_support)
    priors = partners("prior", guide_support)
    if families:
        message += f" Guide families on {prior_support}: {', '.join(families)}."
    if priors:
        message += f" Priors for a guide on {guide_support}: {', '.join(priors)}."
    return message
