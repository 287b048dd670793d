"""Every prior x guide pair from the registries: the compatible ones train on digits with
each objective, the others are refused before training with the partners listed."""

import pytest

from guides import FAMILIES, build_guide
from models import PRIORS, build_vae
from pyrovae import supports
from pyrovae.cli.spec import RunSpec
from pyrovae.evaluate import estimate_elbo
from pyrovae.train import fit

D = 3


def is_compatible(prior, family):
    return supports.compatible(
        supports.CATALOGUE["prior"][prior], supports.CATALOGUE["guide family"][family]
    )


COMPATIBLE = [(p, f) for p in sorted(PRIORS) for f in sorted(FAMILIES) if is_compatible(p, f)]
INCOMPATIBLE = [(p, f) for p in sorted(PRIORS) for f in sorted(FAMILIES) if not is_compatible(p, f)]


def build_pair(prior, family):
    guide = build_guide(64, D, family, (32,))
    options = {"num_pseudo_inputs": 10} if prior == "vamp" else {}
    model = build_vae(64, D, (32,), prior, posterior=guide.posterior, prior_options=options)
    return model, guide


def test_the_grid_has_both_kinds():
    assert len(COMPATIBLE) >= 15 and len(INCOMPATIBLE) >= 15


# The two ELBOs whose KL paths differ (closed form vs Monte Carlo); IWAE and TraceEnum_ELBO
# have their own tests (tests/pyrovae/train/test_objectives.py, tests/models/test_gmvae.py).
@pytest.mark.parametrize("objective", ["Trace_ELBO", "TraceMeanField_ELBO"])
@pytest.mark.parametrize("prior, family", COMPATIBLE, ids=lambda v: v)
def test_every_compatible_pair_trains_on_digits(prior, family, objective, digits, device):
    model, guide = build_pair(prior, family)
    before = estimate_elbo(model, guide, digits.validation, "Trace_ELBO", num_particles=3)
    config = dict(epochs=4, learning_rate=3e-3, progress=False, device=device)
    fit(model, guide, digits, objective=objective, **config)
    validation = digits.validation.to(device)
    after = estimate_elbo(model, guide, validation, "Trace_ELBO", num_particles=3)
    assert after > before + 5, (prior, family, objective, before, after)


@pytest.mark.parametrize("prior, family", INCOMPATIBLE, ids=lambda v: v)
def test_every_incompatible_pair_is_refused_before_training(prior, family, digits):
    model, guide = build_pair(prior, family)
    with pytest.raises(ValueError, match="lives on") as error:
        fit(model, guide, digits, epochs=1, progress=False)
    own = supports.CATALOGUE["prior"][prior]
    assert f"Guide families on {own}:" in str(error.value)
    with pytest.raises(ValueError, match="cannot be paired"):
        RunSpec(prior=prior, guide=family, latent_dim=D).validate()
