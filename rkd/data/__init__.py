"""Image classification data: load once into uint8 tensors, split reproducibly, transform on device.

One module per concept: ``bundle`` (the ``DataBundle`` every source produces, splitting and
fingerprints), ``sources`` (``load_data``, which picks the source by ``data.name``), one module per
source (``fashion_mnist``, ``hf``, ``imagefolder``), ``arrow`` (raw Arrow column reads both dataset
sources share), ``transforms`` (model input pipelines and augmentation) and ``loaders``. Importers
use the names exported here.
"""

from rkd.data.bundle import SPLITS, DataBundle, DataError, Split, describe, split_indices
from rkd.data.fashion_mnist import CHECKSUM_FILE, FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, read_idx
from rkd.data.loaders import IndexedImages, make_loader, subset_indices, subset_loader
from rkd.data.sources import load_data
from rkd.data.transforms import ImageTransform, augment, channel_stats, random_erase, student_transform

__all__ = [
    "DataError",
    "Split",
    "DataBundle",
    "ImageTransform",
    "augment",
    "channel_stats",
    "random_erase",
    "student_transform",
    "IndexedImages",
    "make_loader",
    "subset_indices",
    "subset_loader",
    "split_indices",
    "load_data",
    "read_idx",
    "describe",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "CHECKSUM_FILE",
    "SPLITS",
]
