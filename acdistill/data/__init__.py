from acdistill.data.datasets import DATASETS, MIRROR_ENV, ImageSet, load_split
from acdistill.data.loader import Batch, iterate, random_crop_flip

__all__ = ["DATASETS", "MIRROR_ENV", "Batch", "ImageSet", "iterate", "load_split", "random_crop_flip"]
