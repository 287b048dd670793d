"""flushed_denormals: subnormal floats read as zero inside, the mode found on entry is
restored on exit (also after an error), and fit trains under it without leaking it."""

import pytest
import torch

from pyrovae import fit
from pyrovae.denormals import denormals_flushed, flushed_denormals

SUBNORMAL = 1e-40  # float32: below the smallest normal number, 1.18e-38


def subnormal_survives() -> bool:
    return (torch.tensor(SUBNORMAL) * 2.0).item() != 0.0


@pytest.fixture(autouse=True)
def plain_ieee_mode():
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


def test_inside_subnormals_are_zero_and_the_mode_is_restored():
    if not torch.set_flush_denormal(False):  # pragma: no cover - CPUs without SSE3
        pytest.skip("this CPU cannot flush subnormal floats")
    assert subnormal_survives() and not denormals_flushed()
    with flushed_denormals("cpu"):
        assert denormals_flushed() and not subnormal_survives()
    assert subnormal_survives()
    with pytest.raises(RuntimeError), flushed_denormals("cpu"):
        raise RuntimeError("boom")
    assert subnormal_survives()


def test_a_mode_already_on_is_left_on():
    if not torch.set_flush_denormal(True):  # pragma: no cover
        pytest.skip("this CPU cannot flush subnormal floats")
    with flushed_denormals("cpu"):
        assert denormals_flushed()
    assert denormals_flushed()


def test_fit_trains_with_subnormals_flushed_and_restores_the_mode(digits, monkeypatch):
    from guides import build_guide
    from models import build_vae
    from pyrovae.train import loop

    seen = []
    original = loop._train_epoch

    def spy(*args, **kwargs):
        seen.append(denormals_flushed())
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", spy)
    guide = build_guide(64, 2, "diagonal", (16,))
    model = build_vae(64, 2, (16,))
    fit(model, guide, digits, epochs=2, batch_size=256, progress=False)
    assert seen == [True, True]
    assert subnormal_survives()
