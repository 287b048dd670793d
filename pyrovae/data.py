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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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
            raise ValueError(
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

    def batches(self, split: str, batch_size: int, shuffle: bool = False) -> Iterator[torch.Tensor]:
        """Minibatches of ``split`` as presented to a model.

        Training batches under ``"dynamic"`` binarization are a fresh Bernoulli draw each
        time (from torch's global RNG on the data's device, so seeding and checkpointed RNG
        state make them reproducible).
        """
        data = self.split(split)
        n = data.shape[0]
        order = torch.randperm(n).to(data.device) if shuffle else None
        for start in range(0, n, batch_size):
            if order is None:
                batch = data[start : start + batch_size]
            else:
                batch = data[order[start : start + batch_size]]
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
        raise ValueError(f"unknown binarize={binarize!r}; choose one of {BINARIZE_MODES}")
    splits = {"train": train, "validation": validation, "test": test}
    for split, tensor in splits.items():
        if tensor is None:
            continue
        check_data(tensor, f"{name} {split} split")
        if binarize != "none" and (tensor.min() < 0 or tensor.max() > 1):
            raise ValueError(
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
        raise ValueError(
            f"data set {data.name!r} has no labels; semi-supervised training needs them"
        )
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = data.labels["train"].cpu()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for k in labels.unique().tolist():
        rows = torch.nonzero(labels == k).flatten()
        if len(rows) < per_class:
            raise ValueError(f"class {k} has {len(rows)} training rows, fewer than {per_class}")
        chosen.append(rows[torch.randperm(len(rows), generator=generator)[:per_class]])
    index = torch.cat(chosen)
    return data.train[index.to(data.train.device)], labels[index].to(data.train.device)


def check_data(x: torch.Tensor, what: str = "data") -> None:
    """Raise ``ValueError`` for data a VAE cannot train on: wrong rank, empty, NaN or Inf."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(
            f"{what} must have shape (N, D) (flatten images first: x.reshape(len(x), -1)); "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(x.shape)}); it needs at least one row")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()
        raise ValueError(
            f"{what} has NaN or Inf in {len(bad)} rows (first: {bad[:5].tolist()}); "
            "drop or impute those rows before training"
        )


# ---------------------------------------------------------------------------- readers


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{dtype_code:02x}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims}, found {data.size} values")
    return data.reshape(dims)


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
    image_shape = tuple(train.shape[1:])
    to_tensor = lambda a: torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
    train_t = to_tensor(train)
    # The published protocol: the last num_validation training images are the validation set.
    cut = train_t.shape[0] - num_validation
    return train_t[:cut], train_t[cut:], to_tensor(test), image_shape


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
            raise ValueError(f"dataset {name!r} reads IDX files from a folder: pass data_dir=")
        directory = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
        n_val = 10_000 if num_validation is None else num_validation
        train, val, test, shape = _load_idx_images(name, directory, n_val)
        splits = make_splits(name, train, val, test, binarize, shape)
        splits.labels = _load_idx_labels(directory, n_val)
        return splits
    if name == "npz":
        if path is None:
            raise ValueError("dataset 'npz' needs path= pointing at a .npz file")
        with np.load(path) as arrays:
            if "train" not in arrays:
                raise ValueError(f"{path} has no 'train' array (found {sorted(arrays.files)})")
            get = lambda k: torch.as_tensor(arrays[k], dtype=torch.float32) if k in arrays else None  # noqa: E731
            train, val, test = get("train"), get("validation"), get("test")
        return make_splits(
            "npz",
            train.flatten(1),
            *(t if t is None else t.flatten(1) for t in (val, test)),
            binarize=binarize,
        )
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


DATASETS = ("digits", "fashion-mnist", "mnist", "idx", "npz")
