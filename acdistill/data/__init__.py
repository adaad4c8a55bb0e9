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
