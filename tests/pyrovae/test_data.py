import gzip
import struct

import numpy as np
import pytest
import torch

from pyrovae.data import check_data, load_dataset, make_splits, read_idx
from tests.conftest import requires_fashion


def test_digits_shapes_ranges_and_splits(digits):
    assert digits.train.shape == (1347, 64)
    assert digits.validation.shape == (225, 64)
    assert digits.test.shape == (225, 64)
    assert digits.image_shape == (8, 8)
    # Train keeps gray levels for dynamic binarization; val/test are a fixed binary draw.
    assert 0 <= digits.train.min() and digits.train.max() <= 1
    assert len(torch.unique(digits.train)) == 17  # sklearn digits: 0..16 / 16
    assert set(torch.unique(digits.test).tolist()) == {0.0, 1.0}


def test_dynamic_binarization_draws_fresh_batches(digits):
    first = next(digits.batches("train", 500))
    second = next(digits.batches("train", 500))
    assert set(torch.unique(first).tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    # The fresh draws are Bernoulli(gray level): their mean matches the gray mean.
    draws = torch.stack([next(digits.batches("train", 500)) for _ in range(400)])
    assert torch.allclose(draws.mean(0), digits.train[:500], atol=0.15)
    assert abs(draws.mean() - digits.train[:500].mean()) < 0.01


def test_static_binarization_is_fixed():
    a = load_dataset("digits", binarize="static")
    b = load_dataset("digits", binarize="static")
    assert torch.equal(a.train, b.train)
    assert torch.equal(next(a.batches("train", 100)), next(a.batches("train", 100)))
    assert set(torch.unique(a.train).tolist()) == {0.0, 1.0}


def test_no_binarization_keeps_gray_levels(digits_gray):
    assert torch.equal(next(digits_gray.batches("train", 50)), digits_gray.train[:50])
    assert len(torch.unique(digits_gray.test)) > 2


def test_shuffled_batches_cover_the_split_once(digits):
    rows = torch.cat(list(load_dataset("digits", "none").batches("train", 128, shuffle=True)))
    assert rows.shape == digits.train.shape
    assert torch.equal(rows.sum(0), load_dataset("digits", "none").train.sum(0))


@requires_fashion
def test_fashion_mnist_protocol_split():
    data = load_dataset("fashion-mnist")
    assert data.train.shape == (50_000, 784)
    assert data.validation.shape == (10_000, 784)
    assert data.test.shape == (10_000, 784)
    assert data.image_shape == (28, 28)
    assert data.train.min() == 0 and data.train.max() == 1
    assert set(torch.unique(data.validation).tolist()) == {0.0, 1.0}
    assert not torch.equal(next(data.batches("train", 100)), next(data.batches("train", 100)))


def _write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_round_trip_and_mnist_layout(tmp_path, compress):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(30, 4, 5))
    test = rng.integers(0, 256, size=(7, 4, 5))
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", train, compress)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", test, compress)
    assert np.array_equal(read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"), train)
    data = load_dataset("mnist", binarize="none", data_dir=tmp_path, num_validation=10)
    assert data.train.shape == (20, 20) and data.validation.shape == (10, 20)
    assert torch.allclose(data.test * 255, torch.tensor(test.reshape(7, -1), dtype=torch.float32))


def test_idx_reader_rejects_corrupt_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 100) + b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(truncated)


def test_missing_fashion_files_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_npz_loader(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, train=np.random.rand(12, 3, 3), test=np.random.rand(4, 3, 3))
    data = load_dataset("npz", binarize="static", path=path)
    assert data.train.shape == (12, 9) and data.test.shape == (4, 9) and data.validation is None


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.tensor([[0.1, float("nan")]]), "NaN or Inf"),
        (torch.tensor([[0.1, float("inf")]]), "NaN or Inf"),
        (torch.zeros(0, 4), "empty"),
        (torch.zeros(3, 2, 2), r"shape \(N, D\)"),
        (np.zeros((3, 2)), "torch.Tensor"),
    ],
)
def test_check_data_rejects_bad_input(x, message):
    with pytest.raises(ValueError, match=message):
        check_data(x)


def test_binarization_needs_unit_interval():
    with pytest.raises(ValueError, match=r"gray levels in \[0, 1\]"):
        make_splits("x", torch.full((3, 2), 2.0), None, None, binarize="dynamic")
    with pytest.raises(ValueError, match="unknown binarize"):
        make_splits("x", torch.zeros(3, 2), None, None, binarize="sometimes")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")
