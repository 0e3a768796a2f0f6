"""MindSpore's distributed checkpoint functions: thin facades over the resharding engine.

``load_distributed_checkpoint``, ``merge_sliced_parameter``, ``rank_list_for_transform``,
``transform_checkpoint_by_rank``, ``transform_checkpoints`` (and the ``convert_*`` names) and
``unified_safetensors`` keep MindSpore 2.10's signatures, defaults, file naming and error cases
(spec §2, §6, §7, §8). Each checks its arguments as MindSpore does and calls the engine: targets
(:mod:`.targets`) say what every destination gets, every destination block is assembled from
ranged reads of the source files (:mod:`.sources`), and output files are written by
:func:`.writing.fan_out`. So unlike MindSpore no rank loads whole files or builds full tensors it
does not need, and every check (file count, unreadable files, strategy vs. file shapes,
indivisible destinations, a strategy for another network) runs before the network or any output
file is touched.

Where distinfer differs from MindSpore (on purpose):

* bf16 stays bf16 in ``load_distributed_checkpoint`` (MindSpore merges in float32 and converts
  back with a warning, or fails with ``strict_load=True``); ``transform_*`` write bf16 as MindSpore
  does; ``merge_sliced_parameter`` returns float32 for bf16 slices, as MindSpore does.
* ``transform_checkpoints`` also writes safetensors from ckpt input (``output_format``), and does
  not require the device counts to divide each other.
* Work is divided among MPI ranks when run under ``mpirun``, or among ``process_num`` spawned
  worker processes otherwise.

This module is on floor 5: loading into a network checks that it is a ``Cell`` and hands the
blocks to ``load_param_into_net``.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from .. import context
from .. import dtype as mstype
from ..communication import _backend, get_rank
from ..io.strategy_file import ParamLayout, _layout_from_pb, build_searched_strategy, merge_pipeline_strategys
from ..layout import replicated
from ..nn.cell import Cell
from ..plan import assemble, extract, make_plan
from ..serialization import load_param_into_net
from ..tensor import Parameter, Tensor
from .discovery import pick_rank_files
from .loading import rank_file_blocks, unified_blocks
from .planning import TrainStrategy, infer_full_shape, rank_list
from .targets import (SliceJob, TransformJob, check_predict_strategy, is_int, plan_transform, plan_unify,
                      source_stage, split_range, strategy_or_none)
from .writing import fan_out, write_unified_index

__all__ = ["load_distributed_checkpoint", "merge_sliced_parameter", "rank_list_for_transform",
           "transform_checkpoint_by_rank", "transform_checkpoints", "build_searched_strategy",
           "merge_pipeline_strategys", "convert_checkpoints", "convert_checkpoint_by_rank",
           "rank_list_for_convert", "unified_safetensors"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def _processes(max_process_num: int) -> int:
    """Worker processes for at most ``max_process_num``: no more than the cores."""
    return min(max_process_num, os.cpu_count() or 1)


# ------------------------------------------------------------------------------ transform
def rank_list_for_transform(rank_id: int, src_strategy_file: Optional[str] = None,
                            dst_strategy_file: Optional[str] = None) -> list[int]:
    """Source ranks needed to build destination ``rank_id``, in descending order (MindSpore's order).

    >>> import os, tempfile
    >>> from distinfer.io import ParamLayout, StrategyFile, write_strategy
    >>> d = tempfile.mkdtemp()   # the seed network's layer1.weight: 8 ranks, columns split by the middle axis
    >>> write_strategy(f"{d}/src.ckpt", StrategyFile(layouts={"w": ParamLayout([2, 2, 2], [-1, 1])}))
    >>> write_strategy(f"{d}/dst.ckpt", StrategyFile(layouts={"w": ParamLayout([4], [0, -1])}))
    >>> rank_list_for_transform(0, f"{d}/src.ckpt", f"{d}/dst.ckpt")
    [2, 0]
    """
    if not isinstance(rank_id, int) or isinstance(rank_id, bool) or rank_id < 0:
        raise TypeError(f"For 'rank_list_for_transform', 'rank_id' must be a non-negative int, got {rank_id!r}")
    return rank_list(strategy_or_none(src_strategy_file), strategy_or_none(dst_strategy_file), rank_id)


def transform_checkpoint_by_rank(rank_id: int, checkpoint_files_map: Mapping[int, str], save_checkpoint_file_name: str,
                                 src_strategy_file: Optional[str] = None, dst_strategy_file: Optional[str] = None) -> None:
    """Write destination ``rank_id``'s checkpoint from the source files in ``checkpoint_files_map``.

    ``checkpoint_files_map`` is ``{source rank: path}`` and needs the ranks
    :func:`rank_list_for_transform` names; ``save_checkpoint_file_name`` must end with ``.ckpt``
    (or ``.safetensors``) and its directory must exist, as in MindSpore.

    With one pipeline stage's strategy file as the source (the per-sub-network mode of
    :func:`transform_checkpoints`) the map is keyed by the stage's local ranks (``rank_list_for_transform``
    gives those), e.g. ``{0: "rank_4/...", 1: "rank_5/..."}`` for stage 1 of 4 devices, and the
    output holds that stage's parameters: the ``_part<stage>`` file of that rank.

    >>> import tempfile, numpy as np
    >>> from distinfer.io import CkptFile, ParamLayout, StrategyFile, write_ckpt, write_strategy
    >>> d = tempfile.mkdtemp(); full = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> for r in range(2):  # training saved w's column blocks on 2 ranks
    ...     write_ckpt(f"{d}/rank{r}.ckpt", [("w", full[:, 2 * r:2 * r + 2])])
    >>> write_strategy(f"{d}/src_strategy.ckpt", StrategyFile(layouts={"w": ParamLayout([2], [-1, 0])}))
    >>> write_strategy(f"{d}/dst_strategy.ckpt", StrategyFile(layouts={"w": ParamLayout([2], [0, -1])}))  # rows
    >>> transform_checkpoint_by_rank(1, {r: f"{d}/rank{r}.ckpt" for r in range(2)}, f"{d}/dst1.ckpt",
    ...                              f"{d}/src_strategy.ckpt", f"{d}/dst_strategy.ckpt")
    >>> with CkptFile(f"{d}/dst1.ckpt") as f: print(f.read("w").tolist())
    [[4.0, 5.0, 6.0, 7.0]]
    >>> convert_checkpoint_by_rank is transform_checkpoint_by_rank  # MindSpore >= 2.4's name for it
    True
    """
    if not isinstance(checkpoint_files_map, Mapping):
        raise TypeError(f"For 'transform_checkpoint_by_rank', 'checkpoint_files_map' must be a dict, got "
                        f"{type(checkpoint_files_map).__name__}")
    if not is_int(rank_id):
        raise TypeError(f"For 'transform_checkpoint_by_rank', 'rank_id' must be an int, got "
                        f"{type(rank_id).__name__} ({rank_id!r:.80})")
    for k, v in checkpoint_files_map.items():
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"For 'transform_checkpoint_by_rank', the key {k!r} of 'checkpoint_files_map' must "
                             f"be a non-negative int rank")
        if not isinstance(v, (str, os.PathLike)) or not os.path.isfile(v):
            raise ValueError(f"For 'transform_checkpoint_by_rank', the checkpoint file {v!r} of rank {k} does not "
                             f"exist")
    out = os.fspath(save_checkpoint_file_name)
    if not (out.endswith(".ckpt") or out.endswith(".safetensors")):
        raise ValueError(f"For 'transform_checkpoint_by_rank', 'save_checkpoint_file_name' must end with '.ckpt', "
                         f"got {out!r}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ValueError(f"For 'transform_checkpoint_by_rank', the directory {parent} of "
                         f"'save_checkpoint_file_name' does not exist")
    job = TransformJob(src_strategy_file, dst_strategy_file, checkpoint_files_map, [rank_id])
    try:
        fan_out(job, {rank_id: out}, divide=False)
    finally:
        job.close()


def transform_checkpoints(src_checkpoints_dir: str, dst_checkpoints_dir: str, ckpt_prefix: str,
                          src_strategy_file: Optional[str] = None, dst_strategy_file: Optional[str] = None,
                          process_num: int = 1, output_format: str = "ckpt", *,
                          split_among_ranks: bool = False) -> None:
    """Reshard every rank of ``src_checkpoints_dir`` to the destination strategy (MindSpore 2.10 semantics).

    Input ``src_dir/rank_<r>/*.ckpt`` (lexicographically last file of each rank; or
    ``*.safetensors``, largest trailing numbers), output
    ``dst_dir/rank_<r>/{ckpt_prefix}{r}.ckpt`` (``.safetensors`` with ``output_format``).
    ``dst_strategy_file=None`` merges to one full checkpoint (rank 0). Entries not in the
    strategy (``global_step``...) are copied from source rank ``r % source devices``. All
    validation runs before the first file is written. A sliced parameter the destination strategy
    does not name (optimizer state) keeps source rank ``r % source devices``'s slice, as in MindSpore.

    As in MindSpore the call is not collective: whoever calls it writes every destination rank
    (one rank of an ``mpirun`` job may call it alone), ``process_num`` spawned processes sharing the
    work. ``split_among_ranks=True`` (distinfer's option) divides the destination ranks among the
    ranks of an ``mpirun`` job instead: then every rank must call it, with the same arguments (they
    are checked), and it returns when all files are written.

    **Per-sub-network mode** (MindSpore's ``_transform_checkpoint_by_stage``): when both
    strategies have one stage and the source strategy's parameters are a strict subset of the
    destination's, the source strategy is taken as the per-stage strategy file of pipeline stage
    ``s`` of a training run (``s`` is the stage its operator strategy items record). Its files
    are then read from ``src_dir/rank_<s*n + i>`` (``i < n``, the stage's devices, numbered as
    pipeline training numbers them) and written to
    ``dst_dir/rank_<r>/{ckpt_prefix}{r}_part{s}.ckpt``: call it once per stage with that stage's
    strategy file and the same directories, then read a rank with
    ``load_segmented_checkpoints(dst_dir/rank_<r>)``. (A non-pipeline source whose network lacks
    some destination parameters takes this path too, with stage 0, as in MindSpore.)

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import CkptFile, ParamLayout, StrategyFile, write_ckpt, write_strategy
    >>> d = tempfile.mkdtemp(); full = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> for r in range(2):  # training saved w's column blocks in src/rank_0 and src/rank_1
    ...     os.makedirs(f"{d}/src/rank_{r}")
    ...     write_ckpt(f"{d}/src/rank_{r}/net.ckpt", [("w", full[:, 2 * r:2 * r + 2])])
    >>> write_strategy(f"{d}/src_strategy.ckpt", StrategyFile(layouts={"w": ParamLayout([2], [-1, 0])}))
    >>> transform_checkpoints(f"{d}/src", f"{d}/dst", "full", f"{d}/src_strategy.ckpt")  # no dst strategy: merge
    >>> with CkptFile(f"{d}/dst/rank_0/full0.ckpt") as f: print(f.read("w").tolist())
    [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
    >>> convert_checkpoints is transform_checkpoints  # MindSpore >= 2.4's name for the same function
    True
    """
    if not isinstance(ckpt_prefix, str):
        raise TypeError(f"For 'transform_checkpoints', 'ckpt_prefix' must be a str, got {type(ckpt_prefix).__name__}")
    if output_format not in ("ckpt", "safetensors"):
        raise ValueError(f"For 'transform_checkpoints', 'output_format' must be 'ckpt' or 'safetensors', got "
                         f"{output_format!r}")
    if not isinstance(process_num, int) or isinstance(process_num, bool) or process_num < 1:
        raise ValueError(f"For 'transform_checkpoints', 'process_num' must be a positive int, got {process_num!r}")
    src_dir = os.fspath(src_checkpoints_dir)
    if not os.path.isdir(src_dir):
        raise ValueError(f"For 'transform_checkpoints', the source directory {src_dir} does not exist")
    stage = source_stage(src_strategy_file, dst_strategy_file)
    suffix = ""
    if stage is None:
        job = plan_transform(src_dir, src_strategy_file, dst_strategy_file)
    else:
        n = TrainStrategy.from_file(src_strategy_file).stage_devices
        picked = pick_rank_files(src_dir, range(stage * n, stage * n + n))
        log.info("transform_checkpoints: per-stage mode, pipeline stage %d (source ranks %d..%d)", stage, stage * n,
                 stage * n + n - 1)
        job = plan_transform(None, src_strategy_file, dst_strategy_file, {r - stage * n: p for r, p in picked.items()})
        suffix = f"_part{stage}"
    dst_dir = os.fspath(dst_checkpoints_dir)
    outputs = {r: os.path.join(dst_dir, f"rank_{r}", f"{ckpt_prefix}{r}{suffix}.{output_format}")
               for r in sorted(job.layouts)}
    if split_among_ranks:
        _agree("transform_checkpoints", src=_real(src_dir), dst=_real(dst_dir), prefix=ckpt_prefix,
               strategies=[_real(src_strategy_file), _real(dst_strategy_file)], output_format=output_format)
    try:
        fan_out(job, outputs, process_num, desc="transform", divide=split_among_ranks)
    finally:
        job.close()


# MindSpore >= 2.4 aliases.
convert_checkpoints = transform_checkpoints
convert_checkpoint_by_rank = transform_checkpoint_by_rank
rank_list_for_convert = rank_list_for_transform


# ------------------------------------------------------------------------------ merge
def merge_sliced_parameter(sliced_parameters: Sequence[Any], strategy: Optional[Mapping[str, Any]] = None):
    """Merge one slice per device (rank order, duplicates included) into the full Parameter.

    Without ``strategy`` the slices are concatenated on axis 0. With ``strategy`` (the output
    of ``build_searched_strategy``, or ``{name: ParamLayout}``) they are placed by the
    parameter's layout, optimizer shard included. bf16 slices give a float32 result, as in
    MindSpore.

    >>> import numpy as np, distinfer as ms
    >>> ps = [ms.Parameter(ms.Tensor(np.full((1, 2), i, np.float32)), name="w") for i in range(2)]
    >>> merge_sliced_parameter(ps).asnumpy().tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    """
    if not isinstance(sliced_parameters, (list, tuple)):
        raise TypeError(f"For 'merge_sliced_parameter', 'sliced_parameters' must be a list of Parameter, got "
                        f"{type(sliced_parameters).__name__}")
    if not sliced_parameters:
        raise ValueError("For 'merge_sliced_parameter', 'sliced_parameters' must not be empty")
    if strategy and not isinstance(strategy, Mapping):
        raise TypeError(f"For 'merge_sliced_parameter', 'strategy' must be a dict, got {type(strategy).__name__}")
    for p in sliced_parameters:
        if not isinstance(p, Parameter):
            raise TypeError(f"For 'merge_sliced_parameter', every element must be a Parameter, got {type(p).__name__}")
    name = sliced_parameters[0].name
    arrays = [p.asnumpy() for p in sliced_parameters]
    for p, a in zip(sliced_parameters, arrays):
        if p.name != name:
            raise ValueError(f"For 'merge_sliced_parameter', all slices must have the same name, got {name!r} and "
                             f"{p.name!r}")
        if a.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(f"For 'merge_sliced_parameter', slice shapes may differ only on axis 0, got "
                             f"{arrays[0].shape} and {a.shape} for {name!r}")
    dt = arrays[0].dtype
    out_dt = np.float32 if dt == mstype.bfloat16.np else dt
    if not strategy:  # None or empty: concatenate on axis 0, as MindSpore does
        full = np.concatenate([a.astype(out_dt, copy=False) for a in arrays], axis=0)
        return Parameter(Tensor(full), name=name, requires_grad=sliced_parameters[0].requires_grad)
    if name not in strategy:
        raise KeyError(f"For 'merge_sliced_parameter', the parameter {name!r} is not in the strategy")
    pl = strategy[name]
    if not isinstance(pl, ParamLayout):
        pl = _layout_from_pb(name, pl, "strategy")
    if pl.param_split_shape:
        if len(pl.param_split_shape) != len(arrays):
            raise ValueError(f"For 'merge_sliced_parameter', {name!r} has param_split_shape {pl.param_split_shape} "
                             f"but {len(arrays)} slices were given")
        full = np.concatenate([a.astype(out_dt, copy=False) for a in arrays], axis=0)
        return Parameter(Tensor(full), name=name, requires_grad=sliced_parameters[0].requires_grad)
    devices = math.prod(pl.dev_matrix)
    if len(arrays) != devices:
        raise ValueError(f"For 'merge_sliced_parameter', the length of 'sliced_parameters' should be equal to "
                         f"device_count. The length of 'sliced_parameters' is {len(arrays)}, but the device_count "
                         f"is {devices}.")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"For 'merge_sliced_parameter', the slices of {name!r} should be the same when slice "
                         f"manner is even, got shapes {sorted(shapes)}")
    src = pl.to_layout(infer_full_shape(pl, arrays[0].shape))
    dst = replicated(src.shape, 1)
    full = assemble(make_plan(src, dst), 0, lambda pc: extract(arrays[pc.src], src, pc.src, pc.box), dtype=dt)
    return Parameter(Tensor(full.astype(out_dt, copy=False)), name=name,
                     requires_grad=sliced_parameters[0].requires_grad)


# ------------------------------------------------------------------------------ load
def _check_files(checkpoint_filenames: Any, fmt: str) -> list[str]:
    if not isinstance(checkpoint_filenames, (list, tuple)):
        raise TypeError(f"For 'load_distributed_checkpoint', 'checkpoint_filenames' must be a list of file paths, got "
                        f"{type(checkpoint_filenames).__name__}")
    ext = ".safetensors" if fmt == "safetensors" else ".ckpt"
    out = []
    for i, f in enumerate(checkpoint_filenames):
        if not isinstance(f, (str, os.PathLike)) or not os.fspath(f).endswith(ext) or not os.path.isfile(f) \
                or os.path.getsize(f) == 0:
            raise ValueError(f"For 'load_distributed_checkpoint', please make sure the {f} at index {i} is a valid "
                             f"checkpoint file, it must be a string ending with '{ext}', and the checkpoint file it "
                             f"represents must exist and be non-empty.")
        out.append(os.fspath(f))
    return out


def load_distributed_checkpoint(network, checkpoint_filenames=None, predict_strategy=None,
                                train_strategy_filename=None, strict_load=False, dec_key=None, dec_mode="AES-GCM",
                                format="ckpt", unified_safetensors_dir=None, dst_safetensors_dir=None, rank_id=None,
                                output_format="safetensors", name_map=None, max_process_num=64,
                                return_param_dict=False):
    """Load per-rank checkpoints into ``network`` for its (predict) layout (MindSpore 2.10 semantics).

    ``checkpoint_filenames`` are one pipeline stage's rank files in rank order (their count must
    equal the training strategy's per-stage device count). With ``predict_strategy=None`` the
    full tensors are loaded; with a layout dict (``Model.infer_predict_layout``) each parameter
    gets this rank's block (``communication.get_rank()``, optimizer shard from element [5]).
    The training strategy comes from ``train_strategy_filename`` or
    ``strategy_ckpt_config["load_file"]``; an empty one makes this a silent no-op. Only the
    bytes of the needed blocks are read. Returns True, or ``{name: Parameter}`` with
    ``return_param_dict``.

    **Unified mode** (``format="safetensors", unified_safetensors_dir=DIR``, DIR written by
    :func:`unified_safetensors`): the full tensors in DIR are sliced for this
    rank (``get_rank()`` unless ``rank_id``) by ``predict_strategy`` (a layout dict or a strategy
    file) and loaded, with the hyper params; ``name_map`` maps network names to the names in DIR.
    With ``network=None`` and ``dst_safetensors_dir``, ``dst_safetensors_dir/rank_<r>/net.<output_format>``
    is written for ``rank_id``, or for every rank of ``predict_strategy`` (by up to
    ``max_process_num`` processes, or divided among the ranks of an ``mpirun`` job).
    ``checkpoint_filenames``, ``train_strategy_filename`` and ``dec_key`` must be None and
    ``strict_load`` False. Each rank reads only its blocks' bytes.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import write_safetensors
    >>> d = tempfile.mkdtemp(); write_safetensors(f"{d}/part0.safetensors", {"w": np.arange(6.0).reshape(3, 2)})
    >>> got = load_distributed_checkpoint(None, predict_strategy={"w": [[2], [-1, 0], [], 0]}, format="safetensors",
    ...                                   unified_safetensors_dir=d, rank_id=1, return_param_dict=True)
    >>> got["w"].asnumpy().tolist()
    [[1.0], [3.0], [5.0]]
    """
    if output_format not in ("ckpt", "safetensors"):
        raise ValueError(f"For 'load_distributed_checkpoint', 'format' and 'output_format' must be 'ckpt' or "
                         f"'safetensors', but got output_format={output_format!r}.")
    if network is not None and not isinstance(network, Cell):
        raise TypeError(f"For 'load_distributed_checkpoint', 'network' must be a Cell, got {type(network).__name__}")
    if dec_key is not None and not isinstance(dec_key, bytes):
        raise TypeError(f"For 'load_distributed_checkpoint', 'dec_key' must be None or bytes, got "
                        f"{type(dec_key).__name__}")
    if not isinstance(dec_mode, str):
        raise TypeError(f"For 'load_distributed_checkpoint', 'dec_mode' must be a str, got {type(dec_mode).__name__}")
    if unified_safetensors_dir is not None or dst_safetensors_dir is not None:
        return _load_unified_mode(network, checkpoint_filenames, predict_strategy, train_strategy_filename,
                                  strict_load, dec_key, dec_mode, format, unified_safetensors_dir,
                                  dst_safetensors_dir, rank_id, output_format, name_map, max_process_num,
                                  return_param_dict)
    if dec_key is not None:
        raise NotImplementedError("For 'load_distributed_checkpoint', encrypted checkpoints (dec_key) are not "
                                  "supported by distinfer")
    if format not in ("ckpt", "safetensors"):
        raise ValueError(f"For 'load_distributed_checkpoint', 'format' must be 'ckpt' or 'safetensors', got {format!r}")
    if network is None and not return_param_dict:
        raise TypeError("For 'load_distributed_checkpoint', 'network' must be a Cell (None is only allowed with "
                        "'unified_safetensors_dir', or with return_param_dict=True)")
    files = _check_files(checkpoint_filenames, format)
    predict = check_predict_strategy(predict_strategy)
    if train_strategy_filename is None:
        cfg = context.get_auto_parallel_context("strategy_ckpt_config")
        train_strategy_filename = cfg.get("load_file") or None
    if train_strategy_filename is None:
        raise ValueError("For 'load_distributed_checkpoint', 'train_strategy_filename' is None and "
                         "strategy_ckpt_config['load_file'] is not set")
    train = TrainStrategy.from_file(train_strategy_filename)
    if not len(train):
        return {} if return_param_dict else True
    if len(files) != train.stage_devices:
        raise ValueError(f"For 'Load_distributed_checkpoint', the length of 'checkpoint_filenames' should be equal to "
                         f"the device count of training process. But got the length of 'checkpoint_filenames' is "
                         f"{len(files)} and the device count is {train.stage_devices}.")
    if rank_id is None:  # under mpirun, ranks given the same files must agree on their order and the strategies
        real = [_real(f) for f in files]
        _agree("load_distributed_checkpoint", key=sorted(real), checkpoint_filenames=real,
               train_strategy_filename=_real(train_strategy_filename), predict_strategy=predict)
    rank = get_rank() if rank_id is None else int(rank_id)
    param_dict = rank_file_blocks(network, files, train, train_strategy_filename, predict, rank, strict_load)
    if return_param_dict:
        return param_dict
    if network is not None and param_dict:
        _load_into(network, param_dict, strict_load)
    return True


def _load_unified_mode(network, checkpoint_filenames, predict_strategy, train_strategy_filename, strict_load, dec_key,
                       dec_mode, format, unified_safetensors_dir, dst_safetensors_dir, rank_id, output_format,
                       name_map, max_process_num, return_param_dict):
    """Check the arguments of the unified mode as MindSpore does, then run it (:func:`_load_unified`)."""
    api = "For 'load_distributed_checkpoint'"
    if format != "safetensors":
        raise ValueError(f"{api}, 'format' must be 'safetensors' when 'unified_safetensors_dir' or "
                         f"'dst_safetensors_dir' is given, but got {format!r}.")
    if output_format not in ("ckpt", "safetensors"):
        raise ValueError(f"{api}, 'format' and 'output_format' must be 'ckpt' or 'safetensors', but got "
                         f"{output_format!r}.")
    if unified_safetensors_dir is None:
        raise ValueError(f"{api}, 'unified_safetensors_dir' can not be None when format is 'safetensors' and "
                         f"'dst_safetensors_dir' is given.")
    for arg, value in (("checkpoint_filenames", checkpoint_filenames),
                       ("train_strategy_filename", train_strategy_filename), ("dec_key", dec_key)):
        if value is not None:
            raise ValueError(f"{api}, '{arg}' must be None when 'unified_safetensors_dir' is given (format "
                             f"'safetensors'), but got a {type(value).__name__}.")
    if strict_load or dec_mode != "AES-GCM":
        raise ValueError(f"{api}, strict_load and dec_mode must be default when format is 'safetensors'.")
    if not isinstance(unified_safetensors_dir, (str, os.PathLike)):
        raise TypeError(f"{api}, 'unified_safetensors_dir' must be a str path, got "
                        f"{type(unified_safetensors_dir).__name__}")
    if name_map is not None and (not isinstance(name_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in name_map.items())):
        raise TypeError(f"{api}, 'name_map' must be a dict of str to str, got {type(name_map).__name__}")
    if rank_id is not None and (not is_int(rank_id) or rank_id < 0):
        raise ValueError(f"{api}, 'rank_id' must be None or a non-negative int, got {rank_id!r}")
    if not isinstance(max_process_num, int) or isinstance(max_process_num, bool) or max_process_num < 1:
        raise ValueError(f"{api}, 'max_process_num' must be a positive int, got {max_process_num!r}")
    if network is None:
        if dst_safetensors_dir is None and not return_param_dict:
            raise ValueError(f"{api}, 'dst_safetensors_dir' can not be None when network is None.")
        if dst_safetensors_dir is not None and not isinstance(dst_safetensors_dir, (str, os.PathLike)):
            raise TypeError(f"{api}, 'dst_safetensors_dir' must be a str path, got "
                            f"{type(dst_safetensors_dir).__name__}")
    return _load_unified(network, unified_safetensors_dir, predict_strategy, dst_safetensors_dir, rank_id,
                         output_format, name_map, max_process_num, return_param_dict)


def _load_unified(network: Any, unified_dir: PathLike, predict_strategy: Any = None,
                  dst_safetensors_dir: Optional[PathLike] = None, rank_id: Optional[int] = None,
                  output_format: str = "safetensors", name_map: Optional[Mapping[str, str]] = None,
                  max_process_num: int = 64, return_param_dict: bool = False) -> Union[bool, dict]:
    """The unified mode of ``load_distributed_checkpoint`` (arguments already checked there).

    With ``network``: its parameters get this rank's blocks (``get_rank()`` unless ``rank_id``)
    of the unified tensors — sliced by ``predict_strategy`` (a layout dict from
    ``Model.infer_predict_layout`` or a strategy file), whole where it has no entry — plus the
    hyper params. ``name_map`` maps network names to the names in the unified files. Without a
    network, ``dst_safetensors_dir/rank_<r>/net.<output_format>`` is written for ``rank_id``,
    or for every destination rank (by up to ``max_process_num`` processes, or divided among the
    ranks of an ``mpirun`` job); it holds the predict strategy's parameters (every unified
    tensor when there is none) and the hyper params.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import SafetensorsFile, write_safetensors
    >>> d = tempfile.mkdtemp(); write_safetensors(f"{d}/part0.safetensors", {"w": np.arange(8.0).reshape(4, 2)})
    >>> _load_unified(None, d, {"w": [[2], [0, -1], [], 0]}, f"{d}/out", max_process_num=1)
    True
    >>> SafetensorsFile(f"{d}/out/rank_1/net.safetensors").read("w").tolist()
    [[4.0, 5.0], [6.0, 7.0]]
    """
    job = SliceJob(unified_dir, predict_strategy, name_map)
    try:
        if rank_id is None:  # under mpirun: the ranks slicing for the same parameters must agree on how
            predict = _real(job.predict_arg) if isinstance(job.predict_arg, str) else job.predict
            _agree("load_distributed_checkpoint", key=[_real(job.unified_dir), sorted(job.predict or {})],
                   unified_safetensors_dir=_real(job.unified_dir), predict_strategy=predict, name_map=job.name_map,
                   dst_safetensors_dir=_real(dst_safetensors_dir), output_format=output_format)
        if network is not None or dst_safetensors_dir is None:
            rank = get_rank() if rank_id is None else int(rank_id)
            param_dict = unified_blocks(job, network, rank)
            if return_param_dict or network is None:
                return param_dict
            if param_dict:
                _load_into(network, param_dict, False)
            return True
        ranks = [int(rank_id)] if rank_id is not None else list(range(job.device_num))
        job.check_ranks(ranks)  # every rank validated before the first file is written
        dst = os.fspath(dst_safetensors_dir)
        outputs = {r: os.path.join(dst, f"rank_{r}", f"net.{output_format}") for r in ranks}
        fan_out(job, outputs, _processes(max_process_num), desc="load_distributed_checkpoint", divide=rank_id is None)
        return True
    finally:
        job.close()


def _real(path: Optional[PathLike]) -> Optional[str]:
    return None if path is None else os.path.realpath(path)


def _agree(api: str, key: Any = None, **inputs: Any) -> None:
    """Under mpirun, every rank calling ``api`` with the same ``key`` must give the same ``inputs``
    (file lists in the same order, the same strategies); otherwise a DivergenceError names the
    ranks and both views instead of loading or writing different weights."""
    _backend.agree(api, inputs, key=key)


def _load_into(network, param_dict: dict, strict_load: bool) -> None:
    # The blocks are this call's own (nothing else refers to them): the net adopts them
    # instead of copying each one again.
    load_param_into_net(network, param_dict, strict_load=strict_load, _donate=True)


# ------------------------------------------------------------------------------ unified_safetensors
def _check_unified_args(src_dir: Any, src_strategy_file: Any, dst_dir: Any, file_suffix: Any, max_process_num: Any,
                        choice_func: Any, split_dst_file: Any) -> tuple[int, int]:
    api = "For 'unified_safetensors'"
    for arg, value in (("src_dir", src_dir), ("src_strategy_file", src_strategy_file), ("dst_dir", dst_dir)):
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{api}, '{arg}' must be a str path, got {type(value).__name__}")
    if os.path.isfile(src_dir):
        raise ValueError(f"{api}, the 'src_dir' can not be a file: {os.fspath(src_dir)}")
    if not os.path.isdir(src_dir):
        raise ValueError(f"{api}, the source directory {os.fspath(src_dir)} does not exist")
    if not os.path.isfile(src_strategy_file):
        raise ValueError(f"{api}, the strategy file {os.fspath(src_strategy_file)} does not exist")
    if os.path.isfile(dst_dir):
        raise ValueError(f"{api}, the 'dst_dir' {os.fspath(dst_dir)} is a file, not a directory")
    if file_suffix is not None and not isinstance(file_suffix, str):
        raise TypeError(f"{api}, 'file_suffix' must be a str or None, got {type(file_suffix).__name__}")
    if not isinstance(max_process_num, int) or isinstance(max_process_num, bool) or max_process_num < 1:
        raise ValueError(f"{api}, 'max_process_num' must be a positive int, got {max_process_num!r}")
    if choice_func is not None and not callable(choice_func):
        raise TypeError(f"{api}, 'choice_func' must be callable or None, got {type(choice_func).__name__}")
    if split_dst_file in ((), None, []):
        return 1, 1
    ok = isinstance(split_dst_file, (tuple, list)) and len(split_dst_file) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in split_dst_file)
    if not ok or not 1 <= split_dst_file[0] <= split_dst_file[1]:
        raise ValueError(f"{api}, 'split_dst_file' must be () or (current task, total tasks) with "
                         f"1 <= current <= total, got {split_dst_file!r}")
    return int(split_dst_file[0]), int(split_dst_file[1])


def unified_safetensors(src_dir: str, src_strategy_file: str, dst_dir: str, merge_with_redundancy: bool = True,
                        file_suffix: Optional[str] = None, max_process_num: int = 64,
                        choice_func: Optional[Callable[[str], Union[bool, str]]] = None,
                        split_dst_file: Sequence[int] = ()) -> None:
    """Merge per-rank safetensors into full tensors in ``dst_dir`` (MindSpore 2.10's ``unified_safetensors``).

    Input ``src_dir/rank_<r>/*.safetensors`` for every rank of ``src_strategy_file`` (a merged
    pipeline strategy works too); in a rank directory with several files the one with the
    largest last two numbers in its name is used, or with ``file_suffix`` the one whose name
    ends with ``{file_suffix}.safetensors`` (the shortest such name). Output, in ``dst_dir``:
    ``part{i}.safetensors`` (full tensors, ``ceil(total bytes / SPLIT_BYTES)`` parts, largest
    tensor first into the lightest part), ``param_name_map.json`` and ``hyper_param.safetensors``
    (rank 0's entries that are not in the strategy). ``accu_grads*`` parameters are dropped.

    ``merge_with_redundancy=False`` reads files saved with ``remove_redundancy=True`` (each slice
    in one replica's file only); a file's ``remove_redundancy`` metadata overrides the argument,
    with a warning, as in MindSpore. ``choice_func(name)`` returns False to drop a parameter,
    True to keep it or a str to rename it. ``split_dst_file=(k, n)`` writes only the k-th
    (1-based) of n slices of the parts (the map and hyper params with k=1), for running one
    merge on several machines. Parts are written by up to ``max_process_num`` processes, or
    divided among the ranks of an ``mpirun`` job.

    Differences from MindSpore: ``.ckpt`` rank files are accepted too (entries safetensors cannot
    hold, such as strings, are left out of ``hyper_param.safetensors`` with a warning); ties in
    the bin packing follow the strategy's parameter order.

    >>> import json, os, tempfile, numpy as np
    >>> from distinfer.io import write_safetensors
    >>> d = tempfile.mkdtemp(); full = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> for r in range(2):
    ...     os.makedirs(f"{d}/src/rank_{r}")
    ...     write_safetensors(f"{d}/src/rank_{r}/net-1_1.safetensors", {"w": full[:, 2 * r:2 * r + 2]})
    >>> _ = open(f"{d}/s.json", "w").write(json.dumps(
    ...     {"parallel_layout_item": {"w": {"dev_matrix": [2], "tensor_map": [-1, 0]}}}))
    >>> unified_safetensors(f"{d}/src", f"{d}/s.json", f"{d}/out", choice_func=lambda n: "model." + n)
    >>> json.load(open(f"{d}/out/param_name_map.json"))
    {'metadata': {'total_size': 32}, 'weight_map': {'model.w': 'part0.safetensors'}}
    """
    current, total = _check_unified_args(src_dir, src_strategy_file, dst_dir, file_suffix, max_process_num,
                                         choice_func, split_dst_file)
    _agree("unified_safetensors", src=_real(src_dir), dst=_real(dst_dir), strategy=_real(src_strategy_file),
           redundancy=bool(merge_with_redundancy), suffix=file_suffix, split=[current, total])
    src_dir, dst_dir = os.fspath(src_dir), os.fspath(dst_dir)
    plan = plan_unify(src_dir, os.fspath(src_strategy_file), bool(merge_with_redundancy), file_suffix, choice_func)
    os.makedirs(dst_dir, exist_ok=True)
    outputs = {k: os.path.join(dst_dir, f"part{k}.safetensors") for k in split_range((current, total), len(plan.parts))}

    def commit() -> None:  # the map and the hyper params come with task 1 of split_dst_file
        write_unified_index(dst_dir, plan.weight_map(), plan.total_size, plan.files[min(plan.files)], plan.hyper)

    try:
        fan_out(plan, outputs, _processes(max_process_num), desc="unified_safetensors",
                commit=commit if current == 1 else None)
    finally:
        plan.close()
