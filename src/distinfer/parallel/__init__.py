"""``mindspore.parallel``: the executor that runs sharded ops, and checkpoint resharding."""
from . import _executor  # noqa: F401  (registers the primitive executor)
from .checkpoint import (build_searched_strategy, convert_checkpoint_by_rank, convert_checkpoints,
                         load_distributed_checkpoint, merge_pipeline_strategys, merge_sliced_parameter,
                         rank_list_for_convert, rank_list_for_transform, transform_checkpoint_by_rank,
                         transform_checkpoints)
from .unified import unified_safetensors
from .shard_layout import Layout
from .pipeline_sync import sync_pipeline_shared_parameters
from ..serialization import load_segmented_checkpoints  # MindSpore lists it under mindspore.parallel too

__all__: list[str] = ["load_distributed_checkpoint", "merge_sliced_parameter", "rank_list_for_transform",
                      "transform_checkpoint_by_rank", "transform_checkpoints", "build_searched_strategy",
                      "merge_pipeline_strategys", "convert_checkpoints", "convert_checkpoint_by_rank",
                      "rank_list_for_convert", "unified_safetensors", "load_segmented_checkpoints", "Layout",
                      "sync_pipeline_shared_parameters"]
