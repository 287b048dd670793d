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


def test_figures_are_labelled_and_leave_pyplot_alone(tree, tmp_path):
    """Every figure has a title (or suptitle) and labelled axes, is returned rather than
    shown, and creating and saving them leaves the user's pyplot figures open."""
    import matplotlib.pyplot as plt
    import pandas as pd

    users_figure = plt.figure()
    rng = np.random.default_rng(0)
    khats = {"diagonal": rng.random(20), "flow": rng.random(20) * 0.5}
    ess = {"diagonal": rng.random(20) * 300, "flow": rng.random(20) * 300}
    ranking = pd.DataFrame(
        {"elpd_diff": [0.0, 12.5], "dse": [0.0, 4.0]}, index=["flow", "diagonal"]
    )
    figures = {
        "khat": plots.plot_khat(khats, 0.7),
        "ess": plots.plot_ess(ess, 300),
        "khat_vs_ess": plots.plot_khat_vs_ess(khats, ess, 300, 0.7),
        "elpd": plots.plot_elpd_differences(ranking),
        "curves": plots.plot_elbo_curves({"diagonal": [-3.0, -2.0], "flow": [-2.9, -1.9]}),
        "images": plots.plot_image_rows({"x": torch.rand(3, 4)}, (2, 2), "title"),
    }
    for name, fig in figures.items():
        axes = fig.get_axes()
        titled = fig._suptitle is not None or any(ax.get_title() for ax in axes)
        assert titled, name
        if name != "images":
            assert all(ax.get_xlabel() for ax in axes), name
        path = plots.save(fig, tmp_path / f"{name}.png")
        assert path.read_bytes()[:4] == b"\x89PNG"
    # the ELPD figure draws the paired standard error, and its axis starts at the best (0)
    elpd_axis = figures["elpd"].get_axes()[0]
    assert elpd_axis.get_xlim()[1] >= 0 >= elpd_axis.get_xlim()[0]
    assert len(elpd_axis.containers) == 2  # one error bar per guide
    assert plt.fignum_exists(users_figure.number)
    assert log_ratios(tree).shape[1] == 5
    plt.close(users_figure)
