"""``mindspore.parallel``: the executor that runs sharded ops, ``Layout``, ``shard``, and MindSpore's checkpoint
functions.

The checkpoint functions live in :mod:`distinfer.reshard.api`; they are imported on first use,
so that importing the executor (as every op does) does not load the resharding engine.
"""
from . import _executor  # noqa: F401  (registers the primitive executor)
from . import shard as _shard_module  # noqa: F401  (first, so that the function below is ``parallel.shard``)
from .shard_layout import Layout
from .shard_region import shard
from .._lazy import lazy_exports

_RESHARD = ("load_distributed_checkpoint", "merge_sliced_parameter", "rank_list_for_transform",
            "transform_checkpoint_by_rank", "transform_checkpoints", "build_searched_strategy",
            "merge_pipeline_strategys", "convert_checkpoints", "convert_checkpoint_by_rank",
            "rank_list_for_convert", "unified_safetensors")

__all__: list[str] = [*_RESHARD, "load_segmented_checkpoints", "Layout", "shard", "sync_pipeline_shared_parameters"]

__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(_RESHARD, "..reshard.api"),
    "load_segmented_checkpoints": "..serialization",  # MindSpore lists it under mindspore.parallel too
    "sync_pipeline_shared_parameters": ".pipeline_sync",  # a Cell-level function: nn loads on first use
})
