"""Real data sets as tensors in [0, 1], split and binarized by the published protocol.

``load_dataset(name)`` returns a :class:`DataSplits` whose ``train``, ``validation`` and
``test`` tensors have shape ``(N, D)`` (images flattened row-major). Binarization modes:

- ``"dynamic"``: the training set keeps its gray levels ``p`` and every batch drawn from it
  is a fresh ``Bernoulli(p)`` draw; validation and test are binarized once with a fixed
  seed (the protocol behind the published VAE log-likelihoods: Burda et al. 2015;
  Tomczak & Welling 2018).
- ``"static"``: every split is binarized once with a fixed seed.
- ``"none"``: gray levels everywhere (Gaussian or continuous-Bernoulli likelihoods).
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyrovae.errors import PyrovaeError, unknown_name

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
BINARIZE_MODES = ("dynamic", "static", "none")
_BINARIZE_SEED = 0  # fixed draw for static splits and for dynamic validation/test


@dataclass
class DataSplits:
    """Train/validation/test tensors of one data set, shape ``(N, D)``, values in [0, 1].

    ``train`` holds gray levels when ``binarize == "dynamic"``; use :meth:`batches` to
    draw binarized minibatches from it.
    """

    name: str
    train: torch.Tensor
    validation: torch.Tensor | None
    test: torch.Tensor | None
    binarize: str
    image_shape: tuple[int, int] | None = None
    # Class labels per split (int64, shape (N,)) where the data set has them; unused in
    # training, read by examples and clustering/semi-supervised evaluation.
    labels: dict[str, torch.Tensor] | None = None

    @property
    def num_features(self) -> int:
        return self.train.shape[-1]

    def split(self, name: str) -> torch.Tensor:
        tensor = {"train": self.train, "validation": self.validation, "test": self.test}.get(name)
        if tensor is None:
            raise PyrovaeError(
                f"data set {self.name!r} has no {name!r} split; "
                "pass validation/test tensors or use load_dataset()"
            )
        return tensor

    def to(self, device: torch.device | str) -> DataSplits:
        """A copy with every split on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return DataSplits(
            self.name,
            move(self.train),
            move(self.validation),
            move(self.test),
            self.binarize,
            self.image_shape,
            None if self.labels is None else {k: move(v) for k, v in self.labels.items()},
        )

    def present_like_train(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of gray levels presented as a training batch is: a fresh Bernoulli draw
        under ``"dynamic"`` binarization, unchanged otherwise."""
        return torch.bernoulli(x) if self.binarize == "dynamic" else x

    def batches(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[torch.Tensor]:
        """Minibatches of ``split`` as presented to a model.

        Training batches under ``"dynamic"`` binarization are a fresh Bernoulli draw each
        time (from torch's global RNG on the data's device, so seeding and checkpointed RNG
        state make them reproducible). The shuffle uses ``generator`` when given (CPU),
        else the global RNG. With ``shard = (rank, world_size)`` each global batch of
        ``batch_size`` rows is split across processes: this process gets rows
        ``rank, rank + world_size, ...`` of it (data-parallel training).
        """
        data = self.split(split)
        n = data.shape[0]
        order = None
        if shuffle:
            order = torch.randperm(n, generator=generator).to(data.device)
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            if order is None and shard is None:
                batch = data[rows]
            else:
                index = order[rows] if order is not None else torch.arange(n)[rows]
                if shard is not None:
                    index = index[shard[0] :: shard[1]]
                batch = data[index.to(data.device)]
            if split == "train" and self.binarize == "dynamic":
                batch = torch.bernoulli(batch)
            yield batch

    def presented(self, split: str) -> torch.Tensor:
        """The whole split as a model sees it (one Bernoulli draw for dynamic train)."""
        data = self.split(split)
        if split == "train" and self.binarize == "dynamic":
            return torch.bernoulli(data)
        return data


def _binarize_once(x: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x, generator=generator)


def make_splits(
    name: str,
    train: torch.Tensor,
    validation: torch.Tensor | None,
    test: torch.Tensor | None,
    binarize: str = "dynamic",
    image_shape: tuple[int, int] | None = None,
) -> DataSplits:
    """Check gray-level splits and binarize them according to ``binarize``."""
    if binarize not in BINARIZE_MODES:
        raise unknown_name("binarize mode", binarize, BINARIZE_MODES)
    splits = {"train": train, "validation": validation, "test": test}
    check_splits(name, splits)
    for split, tensor in splits.items():
        if tensor is None:
            continue
        if binarize != "none" and (tensor.min() < 0 or tensor.max() > 1):
            raise PyrovaeError(
                f"{name} {split} split has values in [{tensor.min():.3g}, {tensor.max():.3g}]; "
                "binarization needs gray levels in [0, 1]. Rescale the data or use binarize='none'."
            )
    if binarize == "static":
        splits = {
            k: None if v is None else _binarize_once(v, _BINARIZE_SEED) for k, v in splits.items()
        }
    elif binarize == "dynamic":
        for k in ("validation", "test"):
            if splits[k] is not None:
                splits[k] = _binarize_once(splits[k], _BINARIZE_SEED + 1)
    return DataSplits(
        name, splits["train"], splits["validation"], splits["test"], binarize, image_shape
    )


def labeled_subset(
    data: DataSplits, per_class: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` training rows of every class, chosen with ``seed``: ``(x, y)`` with x
    as stored (gray levels under dynamic binarization) and y int64 labels. The semi-
    supervised protocol: e.g. 10 per class = 100 labels."""
    if data.labels is None:
        raise PyrovaeError(
            f"data set {data.name!r} has no labels; semi-supervised training needs them"
        )
    if per_class < 1:
        raise PyrovaeError(f"per_class must be >= 1, got {per_class}")
    labels = data.labels["train"].cpu()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for k in labels.unique().tolist():
        rows = torch.nonzero(labels == k).flatten()
        if len(rows) < per_class:
            raise PyrovaeError(f"class {k} has {len(rows)} training rows, fewer than {per_class}")
        chosen.append(rows[torch.randperm(len(rows), generator=generator)[:per_class]])
    index = torch.cat(chosen)
    return data.train[index.to(data.train.device)], labels[index].to(data.train.device)


def check_splits(name: str, splits: dict[str, torch.Tensor | None]) -> None:
    """:func:`check_data` on every split present (``"train"`` first), and the same number
    of features in each as in the train split."""
    width = None
    for split, tensor in splits.items():
        if tensor is None:
            continue
        check_data(tensor, f"{name} {split} split")
        width = tensor.shape[1] if width is None else width
        if tensor.shape[1] != width:
            raise PyrovaeError(
                f"{name} {split} split has {tensor.shape[1]} features per row but the train "
                f"split has {width}; every split needs the same columns"
            )


def check_data(x: torch.Tensor, what: str = "data") -> None:
    """Raise ``ValueError`` for data a VAE cannot train on: wrong rank, empty, NaN or Inf."""
    if not isinstance(x, torch.Tensor):
        raise PyrovaeError(f"{what} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if x.dim() != 2:
        raise PyrovaeError(
            f"{what} must have shape (N, D) (flatten images first: x.reshape(len(x), -1)); "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise PyrovaeError(f"{what} is empty (shape {tuple(x.shape)}); it needs at least one row")
    if x.shape[1] == 0:
        raise PyrovaeError(f"{what} has no features (shape {tuple(x.shape)}); it needs D >= 1")
    if not x.dtype.is_floating_point:
        raise PyrovaeError(
            f"{what} has dtype {x.dtype}; a VAE trains on floating-point values: cast it with "
            "x.float() (and scale gray levels to [0, 1])"
        )
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()
        raise PyrovaeError(
            f"{what} has NaN or Inf in {len(bad)} rows (first: {bad[:5].tolist()}); "
            "drop or impute those rows before training"
        )


# ---------------------------------------------------------------------------- readers


IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_IDX_DIMS = 4  # MNIST-style files have 1 (labels) or 3 (images)
MAX_IDX_BYTES = 2**32  # 4 GiB: far above any IDX data set, far below what fits in memory
_CHUNK = 1 << 20


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed (``.gz``) or not.

    The header (magic, element type, dimensions) is read and checked before any payload;
    the payload is then streamed in 1 MiB chunks and never grows past the size the header
    promises (at most ``max_bytes``), so a damaged or hostile file costs bounded memory
    and time. Every malformed file raises :class:`PyrovaeError` naming the problem."""
    path = Path(path)
    compressed = path.suffix == ".gz"
    try:
        with (gzip.open if compressed else open)(path, "rb") as f:
            return _read_idx_stream(f, path, max_bytes)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise PyrovaeError(
            f"{path} is not a complete gzip file ({type(error).__name__}: {error}); download "
            "or install it again"
        ) from None
    except IsADirectoryError:
        raise PyrovaeError(f"{path} is a folder, not an IDX file") from None


def _read_idx_stream(f, path: Path, max_bytes: int) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise PyrovaeError(f"{path} is not an IDX file (bad or missing magic number)")
    dtype_code, ndim = magic[2], magic[3]
    if dtype_code not in IDX_DTYPES:
        raise PyrovaeError(f"{path}: unknown IDX element type 0x{dtype_code:02x}")
    if not 1 <= ndim <= MAX_IDX_DIMS:
        raise PyrovaeError(f"{path}: the header claims {ndim} dimensions; IDX data has 1 to 4")
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise PyrovaeError(f"{path} is truncated inside its header ({ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = np.dtype(IDX_DTYPES[dtype_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if expected > max_bytes:
        raise PyrovaeError(
            f"{path}: the header claims {dims} values ({expected:,} bytes), more than the "
            f"{max_bytes:,}-byte limit; the file is damaged"
        )
    chunks, received = [], 0
    while received <= expected:  # one byte past the promise is enough to call it too long
        chunk = f.read(min(_CHUNK, expected + 1 - received))
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    if received != expected:
        problem = "is truncated" if received < expected else "has bytes after its data"
        raise PyrovaeError(
            f"{path} {problem}: the header says {dims} ({expected:,} bytes), found "
            f"{'more' if received > expected else f'{received:,} bytes'}"
        )
    return np.frombuffer(b"".join(chunks), dtype=dtype).reshape(dims)


def _find_idx(directory: Path, stem: str, dataset: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    hint = (
        "install it with `apt-get install dataset-fashion-mnist` or pass --data-dir"
        if dataset == "fashion-mnist"
        else "pass --data-dir (data_dir=) pointing at the folder holding the IDX files"
    )
    raise FileNotFoundError(f"{dataset}: missing {directory / stem}[.gz]; {hint}")


def check_num_validation(num_validation: int, available: int, dataset: str) -> None:
    """The held-out count must leave at least one training row."""
    if not isinstance(num_validation, int) or not 1 <= num_validation < available:
        raise PyrovaeError(
            f"num_validation={num_validation!r} but {dataset} has {available} training rows to "
            f"split; choose 1 <= num_validation < {available} (CLI: --num-validation)"
        )


def _load_idx_labels(directory: Path, num_validation: int) -> dict[str, torch.Tensor] | None:
    """Labels of the IDX splits, or None when the label files are absent."""
    files = {}
    for split, stem in (("train", "train-labels-idx1-ubyte"), ("test", "t10k-labels-idx1-ubyte")):
        found = [p for p in (directory / f"{stem}.gz", directory / stem) if p.exists()]
        if not found:
            return None
        files[split] = torch.from_numpy(read_idx(found[0]).astype(np.int64))
    cut = len(files["train"]) - num_validation
    return {
        "train": files["train"][:cut],
        "validation": files["train"][cut:],
        "test": files["test"],
    }


def _load_idx_images(
    dataset: str, directory: Path, num_validation: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
    train = read_idx(_find_idx(directory, "train-images-idx3-ubyte", dataset))
    test = read_idx(_find_idx(directory, "t10k-images-idx3-ubyte", dataset))
    for images, stem in ((train, "train-images"), (test, "t10k-images")):
        if images.ndim != 3 or images.shape[1:] != train.shape[1:]:
            raise PyrovaeError(
                f"{dataset}: {stem} has shape {images.shape}; IDX images are (N, height, width) "
                f"with the same image size in train and test"
            )
    check_num_validation(num_validation, train.shape[0], dataset)
    image_shape = tuple(train.shape[1:])
    to_tensor = lambda a: torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
    train_t = to_tensor(train)
    # The published protocol: the last num_validation training images are the validation set.
    cut = train_t.shape[0] - num_validation
    return train_t[:cut], train_t[cut:], to_tensor(test), image_shape


def _load_npz(path, binarize: str, num_validation: int | None) -> DataSplits:
    """Arrays ``train`` and optional ``validation``/``test`` of a .npz file, each (N, ...)
    flattened to (N, D). Without a ``validation`` array, ``num_validation`` holds out the
    last rows of ``train``. Object arrays are refused (they would need pickle)."""
    if path is None:
        raise PyrovaeError("dataset 'npz' needs path= (CLI: --data-path) pointing at a .npz file")
    try:
        # opened here so the file is closed even when numpy refuses it (it leaks otherwise)
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as arrays:
            found = sorted(arrays.files)
            parts = {k: arrays[k] for k in ("train", "validation", "test") if k in arrays}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise PyrovaeError(f"{path} cannot be read as a .npz of numeric arrays ({error})") from None
    if "train" not in parts:
        raise PyrovaeError(f"{path} has no 'train' array (found {found})")
    tensors = {}
    for split, array in parts.items():
        if array.ndim < 2 or array.dtype.kind not in "biuf":
            raise PyrovaeError(
                f"{path}: array {split!r} has shape {array.shape} and dtype {array.dtype}; "
                "each split must be numeric with shape (N, D) or (N, height, width)"
            )
        tensors[split] = torch.as_tensor(array.reshape(len(array), -1), dtype=torch.float32)
    if num_validation is not None:
        if "validation" in tensors:
            raise PyrovaeError(
                f"{path} has its own 'validation' array; drop num_validation (--num-validation)"
            )
        check_num_validation(num_validation, len(tensors["train"]), "npz")
        train = tensors["train"]
        tensors["train"], tensors["validation"] = train[:-num_validation], train[-num_validation:]
    return make_splits(
        "npz", tensors["train"], tensors.get("validation"), tensors.get("test"), binarize
    )


def load_dataset(
    name: str = "digits",
    binarize: str = "dynamic",
    data_dir: str | os.PathLike | None = None,
    num_validation: int | None = None,
    path: str | os.PathLike | None = None,
) -> DataSplits:
    """Load a data set by name.

    Args:
        name: ``"digits"`` (sklearn's 1,797 8x8 images, embedded), ``"fashion-mnist"``
            (Debian's IDX files, 50,000/10,000/10,000), ``"mnist"`` or ``"idx"`` (IDX files
            from ``data_dir``), or ``"npz"`` (arrays ``train``, optional ``validation`` and
            ``test`` in ``path``, values in [0, 1]).
        binarize: ``"dynamic"``, ``"static"`` or ``"none"`` (see the module docstring).
        data_dir: folder with the IDX files (defaults to Debian's for fashion-mnist).
        num_validation: training images held out for validation (IDX sets; default 10,000).
        path: the ``.npz`` file for ``name="npz"``.
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.data.astype(np.float32) / 16.0)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        images, targets = images[order], torch.from_numpy(digits.target)[order]
        n_val = 225 if num_validation is None else num_validation
        n_test = 225
        check_num_validation(n_val, len(images) - n_test, name)
        cuts = {
            "train": slice(None, -n_val - n_test),
            "validation": slice(-n_val - n_test, -n_test),
            "test": slice(-n_test, None),
        }
        splits = make_splits(
            name, *(images[c] for c in cuts.values()), binarize=binarize, image_shape=(8, 8)
        )
        splits.labels = {k: targets[c] for k, c in cuts.items()}
        return splits
    if name in ("fashion-mnist", "mnist", "idx"):
        if data_dir is None and name != "fashion-mnist":
            raise PyrovaeError(f"dataset {name!r} reads IDX files from a folder: pass data_dir=")
        directory = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
        n_val = 10_000 if num_validation is None else num_validation
        train, val, test, shape = _load_idx_images(name, directory, n_val)
        splits = make_splits(name, train, val, test, binarize, shape)
        splits.labels = _load_idx_labels(directory, n_val)
        return splits
    if name == "npz":
        return _load_npz(path, binarize, num_validation)
    raise unknown_name("dataset", name, DATASETS)


DATASETS = ("digits", "fashion-mnist", "mnist", "idx", "npz")
