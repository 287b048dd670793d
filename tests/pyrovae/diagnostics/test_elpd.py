import numpy as np
import pytest

from pyrovae.diagnostics import compare_guides
from pyrovae.diagnostics import elpd_data as make_elpd


def test_compare_ranks_guides_and_gives_the_paired_standard_error():
    rng = np.random.default_rng(0)
    base = rng.normal(-23, 3, 200)  # images vary a lot...
    better = base + 0.2 + rng.normal(0, 0.1, 200)  # ...but the paired gain is clear
    table = compare_guides({"diagonal": base, "full": better})
    assert list(table.index) == ["full", "diagonal"]
    diff = better - base
    assert table.loc["diagonal", "elpd_diff"] == pytest.approx(diff.sum(), rel=1e-6)
    assert table.loc["diagonal", "dse"] == pytest.approx(np.sqrt(200) * diff.std(ddof=1), rel=0.05)
    assert table.loc["diagonal", "dse"] < make_elpd(base).se / 5  # pairing removes image noise


def test_elpd_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN or Inf"):
        make_elpd(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="same test images"):
        compare_guides({"a": np.zeros(3), "b": np.zeros(4)})
