import os

import pyro
import pytest
import torch

from pyrovae.data import FASHION_MNIST_DIR, load_dataset

os.environ.setdefault("MPLBACKEND", "Agg")

CUDA_MARKS = (
    pytest.mark.cuda,  # `pytest -m cuda` runs exactly these on a GPU machine
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device; none is present"
    ),
)
# every test that trains or evaluates takes `device`: CPU always, CUDA when present
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA_MARKS)]


def requires_cuda(test):
    """Mark a test as CUDA-only: selected by ``-m cuda``, skipped without a GPU."""
    for mark in CUDA_MARKS:
        test = mark(test)
    return test


requires_fashion = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist (make test does this)",
)


@pytest.fixture(autouse=True)
def seeded():
    pyro.set_rng_seed(0)
    yield


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_gray():
    return load_dataset("digits", binarize="none")
