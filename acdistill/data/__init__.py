"""Datasets: the registry and the offline mirror (datasets.py), in-memory batches (loader.py); importing this
package imports every module in it, so that a new module's `register_dataset` calls are registered."""

from acdistill.data.datasets import (
    DATASETS,
    MIRROR_ENV,
    DatasetSpec,
    ImageSet,
    check_images,
    load_split,
    register_dataset,
    unit_images,
)
from acdistill.data.loader import Batch, iterate, random_crop_flip
from acdistill.registry import import_modules

import_modules(__name__, __path__)

__all__ = [
    "DATASETS",
    "MIRROR_ENV",
    "Batch",
    "DatasetSpec",
    "ImageSet",
    "check_images",
    "iterate",
    "load_split",
    "random_crop_flip",
    "register_dataset",
    "unit_images",
]
