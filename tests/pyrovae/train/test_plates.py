"""fit finds the plate over a batch's rows whatever its name, does not scale a plate that
subsamples itself twice, and refuses a pair with no such plate. Observed before: a plate
named otherwise trained with unscaled losses (objective 13x too small) and the CEVAE idiom
was scaled twice (15625 instead of 125)."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrovae.evaluate import estimate_elbo
from pyrovae.train import find_data_plate, fit


class Pair:
    def __init__(self, plate, name):
        self.plate = plate  # (x) -> a plate context over the rows of x
        self.dec = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 64))
        self.enc = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 6))
        self.name = name

    def model(self, x):
        pyro.module(f"{self.name}_dec", self.dec)
        with self.plate(x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module(f"{self.name}_enc", self.enc)
        with self.plate(x):
            loc, raw = self.enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


def rows_plate(x):
    return pyro.plate("rows", x.shape[0])


def subsample_plate(n_train):
    def plate(x):  # the CEVAE idiom: full size N, the batch as the subsample
        return pyro.plate("data", n_train, subsample=torch.arange(x.shape[0], device=x.device))

    return plate


@pytest.mark.parametrize("kind", ["renamed", "self-subsampling"])
def test_the_reported_objective_is_per_data_point_whatever_the_plate(kind, digits, device):
    n_train = digits.train.shape[0]
    plate = rows_plate if kind == "renamed" else subsample_plate(n_train)
    pair = Pair(plate, f"plates_{kind}")
    pair.dec.to(device), pair.enc.to(device)  # fit moves nn.Modules; Pair's methods are not
    history = fit(pair.model, pair.guide, digits, epochs=3, progress=False, device=device)
    # per-point training objective and validation ELBO agree within a few nats
    assert abs(history.train_objective[-1] - history.validation_elbo[-1]) < 5, history
    assert -64 < history.validation_elbo[-1] < -10


def test_find_data_plate_reports_the_scaling():
    x = torch.bernoulli(torch.full((7, 64), 0.5))
    name, self_scaled = find_data_plate(*_fns(Pair(rows_plate, "find_a")), x)
    assert (name, self_scaled) == ("rows", False)
    name, self_scaled = find_data_plate(*_fns(Pair(subsample_plate(1000), "find_b")), x)
    assert (name, self_scaled) == ("data", True)


def _fns(pair):
    return pair.model, pair.guide


def test_a_pair_without_a_plate_over_the_rows_is_refused(digits):
    from contextlib import nullcontext

    pair = Pair(lambda x: nullcontext(), "plates_none")

    def model(x):  # sites without a plate: event dims only
        pyro.module("plates_none_dec", pair.dec)
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 3), 1.0).to_event(2))
        pyro.sample("x", dist.Bernoulli(logits=pair.dec(z)).to_event(2), obs=x)

    def guide(x):
        pyro.module("plates_none_enc", pair.enc)
        loc, raw = pair.enc(x).chunk(2, -1)
        pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(2))

    with pytest.raises(ValueError, match="cannot tell which plate runs over the"):
        fit(model, guide, digits, epochs=1, progress=False)


def test_held_out_elbo_divides_out_a_self_scaling_plate_in_every_chunk(digits):
    """estimate_elbo reads the observed site's scale from the objective's own run: with a
    plate of full size N over chunks of 7 rows (and a last chunk of 1), the per-point ELBO
    equals the one of the same networks under an unscaled plate, draw for draw."""
    x = digits.test[:15]
    scaled = Pair(subsample_plate(1000), "held_out")
    unscaled = Pair(rows_plate, "held_out")
    unscaled.dec, unscaled.enc = scaled.dec, scaled.enc
    values = []
    for pair in (scaled, unscaled):
        pyro.set_rng_seed(5)
        values.append(estimate_elbo(pair.model, pair.guide, x, batch_size=7))
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    assert -64 < values[1] < 0


def test_held_out_elbo_needs_an_observed_site():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="no observed site"):
        estimate_elbo(model, model, torch.zeros(3))
