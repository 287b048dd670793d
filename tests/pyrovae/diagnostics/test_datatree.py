import numpy as np
import pytest
import torch

from pyrovae.diagnostics import log_ratios, open_datatree, plots, save_datatree, to_datatree
from pyrovae.evaluate import log_weights
from tests.pyrovae.evaluate.ppca import PPCA


@pytest.fixture(scope="module")
def tree():
    ppca = PPCA()
    return to_datatree(ppca.model, ppca.diagonal_guide, ppca.sample_x(5), 300, name="diag")


def test_datatree_groups_dims_and_values(tree):
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= set(tree.children)
    z = tree["posterior"]["z"]
    assert z.dims == ("chain", "draw", "obs", "z_dim") and z.shape == (1, 300, 5, 2)
    assert tree["sample_stats"]["log_ratio"].shape == (1, 300, 5)
    assert tree["observed_data"]["x"].shape == (5, 6)
    assert tree.attrs["guide"] == "diag"
    lr = log_ratios(tree)
    assert lr.shape == (300, 5)
    # log ratio = log p(x, z) - log q(z | x)
    stats = tree["sample_stats"]
    np.testing.assert_allclose(lr, (stats["log_joint"] - stats["log_q"]).values.reshape(300, 5))


def test_datatree_ratios_match_log_weights():
    ppca = PPCA()
    x = ppca.sample_x(3)
    tree = to_datatree(ppca.model, ppca.exact_guide, x, 10)
    np.testing.assert_allclose(
        log_ratios(tree), log_weights(ppca.model, ppca.exact_guide, x, 10).numpy(), rtol=1e-4
    )


def test_netcdf_round_trip(tree, tmp_path):
    path = save_datatree(tree, tmp_path / "tree.nc")
    back = open_datatree(path)
    np.testing.assert_allclose(back["posterior"]["z"].values, tree["posterior"]["z"].values)
    import arviz_base

    assert arviz_base.convert_to_datatree(back)["posterior"]["z"].shape == (1, 300, 5, 2)
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        open_datatree(bad)


def test_plots_write_pngs(tree, tmp_path):
    lr = log_ratios(tree)
    paths = [
        plots.plot_khat({"a": np.random.rand(5)}, tmp_path / "k.png", 0.7),
        plots.plot_ess({"a": np.full(5, 100.0)}, tmp_path / "e.png", 300),
        plots.plot_latent_marginals({"a": tree, "b": tree}, tmp_path / "m.png", points=[0, 1]),
        plots.plot_elbo_curves({"a": [-3.0, -2.0]}, tmp_path / "c.png"),
        plots.plot_image_rows({"x": torch.rand(3, 4)}, (2, 2), tmp_path / "i.png"),
    ]
    assert lr.shape[1] == 5
    for path in paths:
        assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"
