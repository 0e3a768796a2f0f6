"""``mindspore.dataset`` for distinfer: lazy, numpy-based input pipelines.

Scripts written for MindSpore keep working after ``import distinfer.dataset as ds``:

>>> import distinfer.dataset as ds
>>> import numpy as np
>>> data = ds.MnistDataset(ds.embedded_mnist_dir(), usage="train", shuffle=False)
>>> data = data.map([ds.vision.Rescale(1.0 / 255.0, 0), ds.vision.Normalize(mean=(0.1307,), std=(0.3081,)),
...                  ds.vision.HWC2CHW()], "image")
>>> data = data.map(ds.transforms.TypeCast(np.int32), "label").batch(32)
>>> image, label = next(data.create_tuple_iterator(output_numpy=True))
>>> image.shape, image.dtype, label.dtype, data.get_dataset_size()
((32, 1, 28, 28), dtype('float32'), dtype('int32'), 125)
"""
from . import config, transforms, vision
from .config import _set_global_seed
from .engine import Dataset, DictIterator, TupleIterator
from .samplers import (DistributedSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler,
                       SubsetSampler)
from .sources import GeneratorDataset, MnistDataset, NumpySlicesDataset, embedded_mnist_dir

__all__ = [
    "config", "transforms", "vision", "Dataset", "TupleIterator", "DictIterator",
    "MnistDataset", "NumpySlicesDataset", "GeneratorDataset", "embedded_mnist_dir",
    "Sampler", "SequentialSampler", "RandomSampler", "DistributedSampler", "SubsetSampler",
    "SubsetRandomSampler",
]
