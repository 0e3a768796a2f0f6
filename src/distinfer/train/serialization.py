"""``mindspore.train.serialization``: MindSpore's module path for the save, load and export functions.

>>> import distinfer as ms
>>> from distinfer.train.serialization import load_checkpoint, save_checkpoint, export
>>> save_checkpoint is ms.save_checkpoint and load_checkpoint is ms.load_checkpoint and export is ms.export
True
"""
from ..exporter import export, load
from ..reshard.api import build_searched_strategy, load_distributed_checkpoint, merge_sliced_parameter
from ..serialization import (ckpt_to_safetensors, load_checkpoint, load_param_into_net, safetensors_to_ckpt,
                             save_checkpoint)

__all__ = ["save_checkpoint", "load_checkpoint", "load_param_into_net", "export", "load", "ckpt_to_safetensors",
           "safetensors_to_ckpt", "load_distributed_checkpoint", "merge_sliced_parameter", "build_searched_strategy"]
