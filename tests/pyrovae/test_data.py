import gzip
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrovae.data import check_data, load_dataset, make_splits, read_idx
from pyrovae.errors import PyrovaeError
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
        (torch.zeros(5, 0), r"no features \(shape \(5, 0\)\)"),
        (torch.zeros(3, 2, dtype=torch.int64), r"dtype torch.int64.*x.float\(\)"),
        (torch.zeros(3, 2, dtype=torch.bool), r"dtype torch.bool.*x.float\(\)"),
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
    with pytest.raises(
        PyrovaeError, match="unknown dataset 'digit' \\(did you mean 'digits'\\?\\)"
    ):
        load_dataset("digit")


def test_every_split_is_checked_before_training():
    """Observed before: a validation split with another feature count crashed after epoch 1."""
    with pytest.raises(PyrovaeError, match="validation split has 5 features per row but the train"):
        make_splits("x", torch.rand(10, 4), torch.rand(3, 5), None, binarize="none")
    with pytest.raises(PyrovaeError, match="test split has NaN"):
        make_splits("x", torch.rand(10, 4), None, torch.full((2, 4), float("nan")), "none")


def test_float64_data_is_refused_with_the_cast_to_use(digits):
    from guides import build_guide
    from models import build_vae
    from pyrovae.train import fit

    model, guide = build_vae(64, 2, (16,)), build_guide(64, 2, "diagonal", (16,))
    doubled = tuple(t.double() for t in (digits.train, digits.validation))
    with pytest.raises(
        PyrovaeError,
        match=r"dtype torch.float64 but the networks are torch.float32; cast every split with "
        r"x.float\(\)",
    ):
        fit(model, guide, doubled, epochs=1, progress=False)


def test_num_validation_that_leaves_no_training_rows_is_named(tmp_path):
    with pytest.raises(
        PyrovaeError, match=r"num_validation=2000 but digits has 1572 .*--num-validation"
    ):
        load_dataset("digits", num_validation=2000)
    assert load_dataset("digits", num_validation=100).validation.shape == (100, 64)
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 2, 2)), False)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 2, 2)), False)
    with pytest.raises(PyrovaeError, match="num_validation=10000 but mnist has 5 training rows"):
        load_dataset("mnist", data_dir=tmp_path)


def test_npz_num_validation_and_malformed_files(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, train=np.random.rand(12, 3))
    data = load_dataset("npz", binarize="none", path=path, num_validation=4)
    assert data.train.shape == (8, 3) and data.validation.shape == (4, 3)
    objects = tmp_path / "objects.npz"
    np.savez(objects, train=np.array([{"a": 1}], dtype=object))
    with pytest.raises(PyrovaeError, match="cannot be read as a .npz"):
        load_dataset("npz", path=objects)
    vector = tmp_path / "vector.npz"
    np.savez(vector, train=np.random.rand(12))
    with pytest.raises(PyrovaeError, match=r"shape \(12,\)"):
        load_dataset("npz", path=vector)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(PyrovaeError, match="cannot be read"):
        load_dataset("npz", path=garbage)
    with pytest.raises(PyrovaeError, match="--data-path"):
        load_dataset("npz")


def _header(dtype_code=8, dims=(3, 2, 2)) -> bytes:
    return struct.pack(f">BBBB{len(dims)}I", 0, 0, dtype_code, len(dims), *dims)


@pytest.mark.parametrize(
    "raw, compress, message",
    [
        (b"\x00\x00\x08", False, "bad or missing magic"),
        (b"\x00\x00\x08\x00", False, "claims 0 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00", False, "truncated inside its header"),
        (_header() + b"\x00" * 5, False, "is truncated"),
        (_header() + b"\x00" * 13, False, "has bytes after its data"),
        (_header(0x07), False, "unknown IDX element type 0x07"),
        (_header(dims=(10**9, 28, 28)), False, "more than the"),
    ],
)
def test_malformed_idx_files_name_the_problem(tmp_path, raw, compress, message):
    path = tmp_path / "f"
    path.write_bytes(raw)
    with pytest.raises(PyrovaeError, match=message):
        read_idx(path)


def test_damaged_gzip_files_are_refused(tmp_path):
    good = gzip.compress(_header() + bytes(12))
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(PyrovaeError, match="(not a complete gzip file|is truncated)"):
        read_idx(truncated)
    plain = tmp_path / "plain.gz"
    plain.write_bytes(_header() + bytes(12))
    with pytest.raises(PyrovaeError, match="not a complete gzip file"):
        read_idx(plain)


def test_a_small_file_claiming_a_billion_items_costs_bounded_memory(tmp_path):
    """Observed before: the whole file was decompressed before the header was checked,
    about 1 GB for a 389 KB file claiming 10^9 items."""
    import tracemalloc

    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(_header(dims=(10**9,)) + bytes(50_000_000)))  # 50 MB of zeros
    tracemalloc.start()
    with pytest.raises(PyrovaeError, match="is truncated"):
        read_idx(path, max_bytes=10**9)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 120_000_000, peak  # what the file holds (50 MB) plus chunks, not 1 GB


@settings(
    max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.binary(min_size=0, max_size=24),
    body=st.binary(min_size=0, max_size=64),
    compress=st.booleans(),
    cut=st.integers(min_value=0, max_value=200),
)
def test_idx_reader_fuzz_never_raises_a_foreign_exception(tmp_path, header, body, compress, cut):
    raw = (b"\x00\x00" + header if len(header) % 2 else header) + body
    raw = gzip.compress(raw)[: cut or None] if compress else raw
    path = tmp_path / ("fuzz.gz" if compress else "fuzz")
    path.write_bytes(raw)
    try:
        array = read_idx(path, max_bytes=1 << 20)
    except PyrovaeError:
        return
    assert array.nbytes <= 1 << 20
