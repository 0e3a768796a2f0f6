"""distinfer: MindSpore-shaped semi-auto-parallel models on CPUs, with MPI ranks as devices.

Swap ``import mindspore as ms`` for ``import distinfer as ms`` and run the script under
``mpirun -n N``. Importing distinfer does not start MPI; :func:`communication.init` does.

>>> import numpy as np, distinfer as ms
>>> ms.Tensor(np.ones(2, np.float32)).dtype
Float32
"""
from . import _logging  # noqa: F401  (rank-prefixed log lines)
from .dtype import (Type, bfloat16, bool_, double, dtype_to_nptype, float16, float32, float64, float_, half, int8,
                    int16, int32, int64, int_, pytype_to_dtype, qint4x2, uint8, uint16, uint32, uint64)
from .dtype import bool_ as bool  # noqa: A001  (MindSpore exports ms.bool)
from .context import (GRAPH_MODE, PYNATIVE_MODE, ParallelMode, get_auto_parallel_context, get_context,
                      reset_auto_parallel_context, set_auto_parallel_context, set_context)
from .tensor import Parameter, ParameterTuple, Tensor
from .common.initializer import get_seed, set_seed as _set_init_seed
from . import ops, nn, parallel, communication, train  # noqa: E402
from .train import Model
from . import amp  # noqa: E402
from .amp import DynamicLossScaleManager, FixedLossScaleManager, LossScaleManager  # noqa: E402
from .autograd import grad, value_and_grad
from ._lazy import lazy_exports

from ._version import __version__  # noqa: E402


def set_seed(seed: int) -> None:
    """Seed parameter initialisation and numpy, identically on every rank.

    As in MindSpore, dataset shuffling is seeded separately (``distinfer.dataset.config.set_seed``);
    unseeded, each rank shuffles its own way.
    """
    _set_init_seed(seed)


__all__ = [
    "Tensor", "Parameter", "ParameterTuple", "Model", "dataset", "train", "grad", "value_and_grad", "set_seed", "get_seed", "set_context", "get_context", "set_auto_parallel_context",
    "get_auto_parallel_context", "reset_auto_parallel_context", "ParallelMode", "GRAPH_MODE", "PYNATIVE_MODE",
    "ops", "nn", "communication", "parallel", "Type", "float16", "float32", "float64", "bfloat16", "int8", "int16",
    "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool_", "qint4x2", "dtype_to_nptype", "pytype_to_dtype",
    "amp", "LossScaleManager", "FixedLossScaleManager", "DynamicLossScaleManager", "Layout",
    "save_checkpoint", "load_checkpoint", "load_param_into_net", "load_segmented_checkpoints",
    "ckpt_to_safetensors", "safetensors_to_ckpt", "export", "load",
    "load_distributed_checkpoint", "merge_sliced_parameter", "build_searched_strategy",
    "merge_pipeline_strategys", "rank_list_for_transform", "transform_checkpoint_by_rank",
    "transform_checkpoints", "unified_safetensors", "shard", "sync_pipeline_shared_parameters", "jit", "jit_class",
    "JitConfig", "lazy_inline", "no_inline", "set_device", "runtime",
]

# Imported on first use: file formats pull in protobuf and safetensors, export pulls in onnx.
_SERIALIZATION = ("save_checkpoint", "load_checkpoint", "load_param_into_net", "load_segmented_checkpoints",
                  "ckpt_to_safetensors", "safetensors_to_ckpt")
_CHECKPOINT = ("build_searched_strategy", "load_distributed_checkpoint", "merge_pipeline_strategys",
               "merge_sliced_parameter", "rank_list_for_transform", "transform_checkpoint_by_rank",
               "transform_checkpoints", "unified_safetensors")
__getattr__, __dir__ = lazy_exports(__name__, {
    "dataset": ".dataset", "export": ".exporter", "load": ".exporter", "Layout": ".parallel.shard_layout",
    "shard": ".parallel.shard_region", "sync_pipeline_shared_parameters": ".parallel.pipeline_sync",
    **dict.fromkeys(_SERIALIZATION, ".serialization"), **dict.fromkeys(_CHECKPOINT, ".reshard.api")})

from .common.api import JitConfig, jit, jit_class, lazy_inline, no_inline  # noqa: E402
from .context import set_device  # noqa: E402
from . import runtime  # noqa: E402,F401
from .communication import comm_func as _comm_func  # noqa: E402  (so communication.comm_func is an attribute)
del _comm_func
