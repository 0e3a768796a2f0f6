"""``mindspore.parallel``: the executor that runs sharded ops, and checkpoint resharding
(imported on first use: it reads MindSpore's file formats)."""
from . import _executor  # noqa: F401  (registers the primitive executor)
from .shard_layout import Layout
from .._lazy import lazy_exports

__all__: list[str] = ["load_distributed_checkpoint", "merge_sliced_parameter", "rank_list_for_transform",
                      "transform_checkpoint_by_rank", "transform_checkpoints", "build_searched_strategy",
                      "merge_pipeline_strategys", "convert_checkpoints", "convert_checkpoint_by_rank",
                      "rank_list_for_convert", "unified_safetensors", "load_segmented_checkpoints", "Layout"]

__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(__all__[:10], ".checkpoint"), "unified_safetensors": ".unified",
    "load_segmented_checkpoints": "..serialization",  # MindSpore lists it under mindspore.parallel too
})
