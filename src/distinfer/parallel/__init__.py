"""``mindspore.parallel``: the executor that runs sharded ops, ``Layout``, and MindSpore's checkpoint functions.

The checkpoint functions live in :mod:`distinfer.reshard.api`; they are imported on first use,
so that importing the executor (as every op does) does not load the resharding engine.
"""
from . import _executor  # noqa: F401  (registers the primitive executor)
from .shard_layout import Layout

_RESHARD = ("load_distributed_checkpoint", "merge_sliced_parameter", "rank_list_for_transform",
            "transform_checkpoint_by_rank", "transform_checkpoints", "build_searched_strategy",
            "merge_pipeline_strategys", "convert_checkpoints", "convert_checkpoint_by_rank",
            "rank_list_for_convert", "unified_safetensors")

__all__: list[str] = [*_RESHARD, "load_segmented_checkpoints", "Layout"]


def __getattr__(name: str):
    if name in _RESHARD:
        from ..reshard import api

        return getattr(api, name)
    if name == "load_segmented_checkpoints":  # MindSpore lists it under mindspore.parallel too
        from ..serialization import load_segmented_checkpoints

        return load_segmented_checkpoints
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
