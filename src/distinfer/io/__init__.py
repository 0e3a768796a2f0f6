"""File formats at the numpy level: MindSpore ``.ckpt``, safetensors and strategy files.

>>> from distinfer.io import CkptFile, write_ckpt, SafetensorsFile, read_strategy
"""
from .ckpt import CkptEntry, CkptFile, RawValue, write_ckpt
from .safetensors_io import SafetensorsFile, ms_crc, safetensors_order, write_safetensors, write_safetensors_stream
from .strategy_file import (ParamLayout, StrategyFile, StrategyTypeError, build_searched_strategy,
                            merge_pipeline_strategys, read_strategy, split_stage_name,
                            write_strategy)

__all__ = ["CkptEntry", "CkptFile", "RawValue", "write_ckpt",
           "SafetensorsFile", "write_safetensors", "write_safetensors_stream", "safetensors_order", "ms_crc",
           "ParamLayout", "StrategyFile", "StrategyTypeError", "read_strategy", "write_strategy",
           "build_searched_strategy", "merge_pipeline_strategys", "split_stage_name"]
