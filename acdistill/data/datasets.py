"""Dataset registry: a dataset is one registration (`DatasetSpec`) that holds every fact acdistill uses of it:
its classes and their names, its per-channel mean and std, its image size, its offline mirror files, its
torchvision loader and its RobustBench name. Every other module reads them from here.

A split is held in memory as one uint8 tensor [N, 3, S, S], S the registration's image size (32 for the built-in
datasets: STL-10's 96x96 files are resized and MNIST's 28x28 padded, as their registrations say). Files of any other
size are refused, never resized silently. Keeping images as one tensor lets augmentation run on whole batches
instead of per-image PIL work; the largest built-in split (SVHN train, 73k images) is ~220 MB.

Sources, in order: the offline mirror of `.npz` files (``--data-dir`` or ``ACDISTILL_DATA_DIR``) when it has the
dataset, else torchvision (``download=True``) under ``root``.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from acdistill.errors import AcdistillError, warn
from acdistill.registry import Registry

MIRROR_ENV = "ACDISTILL_DATA_DIR"


def unit_images(images: torch.Tensor) -> torch.Tensor:
    """`images` as float pixels in [0, 1], the scale every model and attack takes: uint8 is read as 0-255, a float
    tensor as already in [0, 1] (as `ImageSet` checks)."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def check_images(images: torch.Tensor, what: str = "images") -> None:
    """Refuse images on a scale acdistill does not read, in one line: only uint8 (0-255) and float in [0, 1] are
    images. A float tensor of 0-255 values would otherwise be clamped into [0, 1] by every attack, and one of [0, 1]
    values divided by 255 again, silently (torchattacks refuses inputs outside [0, 1] for the same reason)."""
    if images.dtype == torch.uint8:
        return
    if not images.is_floating_point():
        raise AcdistillError(f"{what} are {images.dtype}; images are uint8 (0-255) or float in [0, 1]")
    if images.numel():
        low, high = images.min().item(), images.max().item()
        if low < 0 or high > 1:
            hint = "; for 0-255 values pass uint8 images" if high > 1 else ""
            raise AcdistillError(
                f"{what} are {images.dtype} with values from {low:g} to {high:g}: float images must be in [0, 1]{hint}"
            )


@dataclass(frozen=True)
class ImageSet:
    """A split in memory. ``indices`` are positions in the original dataset order (the GACD memory bank and
    index-file subsets address images by them).

    images: [N, C, H, W], uint8 (0-255; every loaded dataset) or float in [0, 1]; anything else is refused
    (AcdistillError) when the set is built. labels, indices: int64 [N]."""

    name: str
    images: torch.Tensor  # uint8 [N, 3, S, S], or float in [0, 1]
    labels: torch.Tensor  # int64 [N]
    indices: torch.Tensor  # int64 [N]
    num_classes: int
    source: str

    def __post_init__(self):
        if self.images.dim() != 4:
            raise AcdistillError(f"{self.name} images have shape {list(self.images.shape)}, not [N, C, H, W]")
        check_images(self.images, f"{self.name} images")
        if not len(self.labels) == len(self.indices) == len(self.images):
            raise AcdistillError(
                f"{self.name} has {len(self.images)} images, {len(self.labels)} labels and {len(self.indices)} indices"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(
            self.name,
            self.images.to(device),
            self.labels.to(device),
            self.indices.to(device),
            self.num_classes,
            self.source,
        )

    def digest(self) -> str:
        """sha256 of the images, labels and dataset indices: equal digests, the same data, wherever it came from
        (a mirror file, a download, an index file)."""
        h = hashlib.sha256()
        for t in (self.images, self.labels, self.indices):
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def take(self, n: int) -> ImageSet:
        return self.select(slice(0, n))

    def select(self, which: slice | torch.Tensor) -> ImageSet:
        return ImageSet(
            self.name, self.images[which], self.labels[which], self.indices[which], self.num_classes, self.source
        )


@dataclass(frozen=True)
class MirrorFile:
    filename: str
    exact: bool  # False for lossy copies (JPEG): warn when used


@dataclass(frozen=True)
class DatasetSpec:
    """Everything acdistill knows of one dataset. Register one with `register_dataset`; nothing else changes.

    name: the `data.dataset` value. num_classes: labels are 0 .. num_classes - 1.
    torchvision_loader: (root, train) -> (images uint8 [N, H, W, C], [N, C, H, W] or [N, H, W], labels [N]).
    mean, std: per-channel statistics of the training split in [0, 1] units, 1 or 3 values; models built for the
    dataset normalize with them. image_size: H = W of the images models see. source_size: H = W of the files when
    it differs from image_size: smaller files are zero-padded, larger ones resized (antialiased bilinear); files of
    any other size are refused. class_names: for figures (default: the class numbers). robustbench: the dataset's
    name in RobustBench's model zoo, when the zoo ranks models of it. split_sizes: the images of the whole train and
    test splits, which cost estimates read (null: unknown, then CIFAR's 50 000 and 10 000 are assumed)."""

    name: str
    num_classes: int
    torchvision_loader: Callable[[str, bool], tuple[np.ndarray, np.ndarray]]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mirror_files: tuple[MirrorFile, ...] = field(default=())
    image_size: int = 32
    source_size: int | None = None
    class_names: tuple[str, ...] | None = None
    robustbench: str | None = None
    split_sizes: tuple[int, int] | None = None

    def __post_init__(self):
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")

    def names_of_classes(self) -> list[str]:
        return list(self.class_names) if self.class_names else [str(c) for c in range(self.num_classes)]


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset: `data.dataset: <spec.name>` then trains, distills and evaluates with it."""
    return DATASETS.register(spec.name)(spec)


def _tv_cifar(cls_name: str):
    def load(root: str, train: bool):
        import torchvision.datasets as tvd

        ds = getattr(tvd, cls_name)(root, train=train, download=True)
        return np.asarray(ds.data), np.asarray(ds.targets)

    return load


def _tv_split(cls_name: str):
    def load(root: str, train: bool):
        import torchvision.datasets as tvd

        ds = getattr(tvd, cls_name)(root, split="train" if train else "test", download=True)
        return np.asarray(ds.data), np.asarray(ds.labels)

    return load


def _tv_mnist(root: str, train: bool):
    import torchvision.datasets as tvd

    ds = tvd.MNIST(root, train=train, download=True)
    return ds.data.numpy(), ds.targets.numpy()


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

register_dataset(
    DatasetSpec(
        "cifar10",
        10,
        _tv_cifar("CIFAR10"),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2471, 0.2435, 0.2616),
        mirror_files=(MirrorFile("cifar10_lossless_subset.npz", True), MirrorFile("cifar10_jpeg.npz", False)),
        class_names=CIFAR10_CLASSES,
        robustbench="cifar10",
        split_sizes=(50000, 10000),
    )
)
register_dataset(
    DatasetSpec(
        "cifar100",
        100,
        _tv_cifar("CIFAR100"),
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        robustbench="cifar100",
        split_sizes=(50000, 10000),
    )
)
register_dataset(
    DatasetSpec(
        "svhn",
        10,
        _tv_split("SVHN"),
        mean=(0.4377, 0.4438, 0.4728),
        std=(0.198, 0.201, 0.197),
        split_sizes=(73257, 26032),
    )
)
register_dataset(
    DatasetSpec(
        "stl10",
        10,
        _tv_split("STL10"),
        mean=(0.4467, 0.4398, 0.4066),
        std=(0.2603, 0.2566, 0.2713),
        source_size=96,
        class_names=("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
        split_sizes=(5000, 8000),
    )
)
register_dataset(
    DatasetSpec(
        "mnist",
        10,
        _tv_mnist,
        # grey images are read as 3 equal channels, so the one channel's statistics apply to each
        mean=(0.1307,),
        std=(0.3081,),
        mirror_files=(MirrorFile("mnist.npz", True),),
        source_size=28,
        split_sizes=(60000, 10000),
    )
)


def to_model_layout(images: np.ndarray | torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """Bring a source's images to uint8 [N, 3, S, S], S = spec.image_size: HWC -> CHW, grey -> 3 channels, and
    spec.source_size -> S by zero padding (smaller, lossless: MNIST) or an antialiased resize (larger: STL-10).
    Any other size is an AcdistillError."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8:
        raise AcdistillError(f"{spec.name} images must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise AcdistillError(f"cannot read {spec.name} images of shape {tuple(images.shape)}")
    x = x.expand(-1, 3, -1, -1)
    size, h, w = spec.image_size, *x.shape[-2:]
    if (h, w) == (size, size):
        return x.contiguous()
    if h != w or h != spec.source_size:
        sizes = " or ".join(str(s) for s in (size, spec.source_size) if s)
        raise AcdistillError(
            f"{spec.name} images are {h}x{w}, but its registration reads {sizes} pixels square (image_size, "
            "source_size); acdistill does not resize images its registration does not name"
        )
    if h < size:
        before = (size - h) // 2
        return F.pad(x, (before, size - h - before, before, size - h - before)).contiguous()
    x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).contiguous()


def mirror_dir(data_dir: str | os.PathLike | None) -> Path | None:
    chosen = data_dir or os.environ.get(MIRROR_ENV)
    return Path(chosen) if chosen else None


def _read_npz(path: Path, train: bool, labels_only: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
    split = "train" if train else "test"
    try:
        with np.load(path, allow_pickle=False) as z:
            return (None if labels_only else z[f"x_{split}"]), z[f"y_{split}"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise AcdistillError(f"{path}: corrupted or truncated .npz ({e.__class__.__name__}: {e})") from None
    except KeyError as e:
        raise AcdistillError(f"{path}: not a mirror file, missing array {e}") from None


def _npz_length(path: Path, train: bool) -> int:
    return len(_read_npz(path, train, labels_only=True)[1]) if path.is_file() else 0


def read_index_file(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise AcdistillError(f"subset index file not found: {p}")
    try:
        idx = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(p, dtype=np.int64, ndmin=1)
    except ValueError as e:
        raise AcdistillError(f"{p}: not a list of integer indices ({e})") from None
    idx = np.asarray(idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or (idx < 0).any():
        raise AcdistillError(f"{p}: an index file holds one non-negative integer per line (or a 1-D .npy)")
    return idx.astype(np.int64)


RANGE = re.compile(r"\s*(\d+)\s*:\s*(\d+)\s*")


def subset_indices(subset: int | str | None) -> np.ndarray | None:
    """None: the whole split; an int n: the first n images; "A:B": images A to B - 1; another string: a path to an
    index file."""
    if subset is None:
        return None
    if isinstance(subset, int):
        if subset <= 0:
            raise AcdistillError(f"subset size must be positive, got {subset}")
        return np.arange(subset)
    bounds = RANGE.fullmatch(subset)
    if bounds:
        start, stop = int(bounds[1]), int(bounds[2])
        if stop <= start:
            raise AcdistillError(f"subset range {subset}: A:B takes the images A to B - 1, so B must exceed A")
        return np.arange(start, stop)
    return read_index_file(subset)


def check_held_out(train_subset: int | str | None, held_out: str | None) -> None:
    """Refuse held-out images that are also training images: a setting chosen on them would be chosen on data the
    model was fitted to."""
    if held_out is None:
        return
    held = subset_indices(held_out)
    train = subset_indices(train_subset)
    shared = held if train is None else np.intersect1d(held, train)
    if len(shared):
        raise AcdistillError(
            f"data.val_subset {held_out} shares {len(shared)} images with data.train_subset {train_subset} (first: "
            f"{int(shared[0])}); held-out images must not be trained on"
        )


def check_subsets(
    name: str,
    subsets: dict[str, int | str | None],
    *,
    held_out: tuple[int | str | None, str | None] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> None:
    """Before any work: each named subset ({"data.train_subset": ..., }) reads (an index file exists and holds
    indices), fits the offline mirror's largest copy of its split when the mirror has the dataset, and the held-out
    images (train_subset, val_subset) are no training images. Splits are by key: a key with "test" is the test
    split, any other the training split."""
    spec = DATASETS.get(name)
    mirror = mirror_dir(data_dir)
    for key, subset in subsets.items():
        wanted = subset_indices(subset)
        if wanted is None or mirror is None or not len(wanted):
            continue
        train = "test" not in key
        sizes = [_npz_length(mirror / mf.filename, train) for mf in spec.mirror_files]
        if any(sizes) and int(wanted.max()) >= max(sizes):
            raise AcdistillError(
                f"{key} {subset} asks for {name} {'train' if train else 'test'} image {int(wanted.max())}, but the "
                f"offline mirror {mirror} holds {max(sizes)}"
            )
    if held_out is not None:
        check_held_out(*held_out)


def load_split(
    name: str,
    train: bool,
    subset: int | str | None = None,
    root: str = "data",
    data_dir: str | os.PathLike | None = None,
) -> ImageSet:
    """One split of a registered dataset in memory: images uint8 [N, 3, S, S] (S = the registration's image_size),
    labels and dataset indices int64 [N].

    name: a registered dataset (`DATASETS.names()`). train: the training split, else the test split. subset: None
    (the whole split), n (the first n images), "A:B" (images A to B - 1) or the path of an index file. The images
    come from the offline mirror (`data_dir`, else $ACDISTILL_DATA_DIR) when it holds them, else from torchvision
    under `root`, downloaded if need be. Raises AcdistillError, in one line, for an unknown dataset, a subset past
    the split's end, an unreadable index file or mirror file, and a split found nowhere (it names where it looked).
    """
    spec = DATASETS.get(name)
    wanted = subset_indices(subset)
    need = 0 if wanted is None else int(wanted.max()) + 1
    split = "train" if train else "test"

    mirror = mirror_dir(data_dir)
    looked: list[str] = []
    loaded = None
    if mirror is not None:
        looked = [str(mirror / mf.filename) for mf in spec.mirror_files]
        sizes = {mf: _npz_length(mirror / mf.filename, train) for mf in spec.mirror_files}
        # The whole split comes from the largest copy; a subset from the first (most exact) copy that holds it.
        fits = [mf for mf, n in sizes.items() if n and (wanted is not None and need <= n)]
        if wanted is None and any(sizes.values()):
            fits = [max(sizes, key=sizes.get)]
        if fits:
            mf, path = fits[0], mirror / fits[0].filename
            if not mf.exact:
                warn(
                    f"{name}: using the lossy (JPEG) mirror copy {path}; accuracies differ slightly from the "
                    "original images"
                )
            loaded = (*_read_npz(path, train), f"mirror:{path.name}")
    if loaded is None:
        made = not Path(root).exists()
        try:
            loaded = (*spec.torchvision_loader(root, train), f"torchvision:{root}")
        except Exception as e:  # no network, or a partial download: say where we looked and how to fix it
            if made and Path(root).is_dir() and not any(Path(root).iterdir()):
                Path(root).rmdir()  # torchvision made it before failing: a refused run leaves nothing
            if mirror is None:
                where = f"no mirror directory (set {MIRROR_ENV} or --data-dir)"
            elif looked:
                where = f"{', '.join(looked)} (missing, or too few images for the subset)"
            else:
                where = f"{mirror} (the mirror has no {name} files)"
            raise AcdistillError(
                f"no {name} {split} data: offline mirror: {where}; torchvision download into '{root}' failed "
                f"({e.__class__.__name__}). Point {MIRROR_ENV} or --data-dir at a directory of mirror .npz files"
            ) from None
    images, labels, source = loaded
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if len(images) != len(labels):
        raise AcdistillError(f"{source}: {len(images)} images but {len(labels)} labels")
    if wanted is None:
        wanted = np.arange(len(labels))
    elif need > len(labels):
        raise AcdistillError(f"{name} {split} subset asks for index {need - 1} but {source} has {len(labels)} images")
    idx = torch.as_tensor(wanted)
    return ImageSet(name, to_model_layout(np.asarray(images)[wanted], spec), labels[idx], idx, spec.num_classes, source)
