from acdistill.data.datasets import DATASETS, MIRROR_ENV, ImageSet, check_images, load_split, unit_images
from acdistill.data.loader import Batch, iterate, random_crop_flip

__all__ = [
    "DATASETS",
    "MIRROR_ENV",
    "Batch",
    "ImageSet",
    "check_images",
    "iterate",
    "load_split",
    "random_crop_flip",
    "unit_images",
]
