import os

import pyro
import pytest
import torch

from pyrovae.data import FASHION_MNIST_DIR, load_dataset

os.environ.setdefault("MPLBACKEND", "Agg")

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device; none is present"
)
requires_fashion = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist (make test does this)",
)


@pytest.fixture(autouse=True)
def seeded():
    pyro.set_rng_seed(0)
    yield


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_gray():
    return load_dataset("digits", binarize="none")
