"""Public signatures, import locations and argument checks that scripts written for MindSpore 2.x rely on.

Each test pins a behaviour of distinfer's MindSpore-shaped API: where a name can be imported
from, a default, or the exception type raised for an obviously bad argument. Where MindSpore
raises ``TypeError`` and earlier distinfer releases raised ``ValueError``, the error is both.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import distinfer as ms
import distinfer.dataset as ds
from distinfer import communication as comm
from distinfer import nn
from distinfer.io import ParamLayout, StrategyFile, write_ckpt, write_strategy


@pytest.fixture(autouse=True)
def _clean_context():
    mode = ms.get_context("mode")
    ms.reset_auto_parallel_context()
    yield
    ms.reset_auto_parallel_context()
    ms.set_context(mode=mode)


def _data(rows: int = 8, batch: int = 4, drop_remainder: bool = False) -> ds.Dataset:
    rng = np.random.RandomState(0)
    x = rng.randn(rows, 4).astype(np.float32)
    y = rng.randint(0, 3, rows).astype(np.int32)
    return ds.NumpySlicesDataset({"x": x, "y": y}, shuffle=False).batch(batch, drop_remainder=drop_remainder)


def _train_model() -> ms.Model:
    net = nn.Dense(4, 3)
    return ms.Model(net, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params(), 0.1))


# ------------------------------------------------------------------------------ imports
def test_import_locations():
    # MindSpore 2.x lists load_segmented_checkpoints under mindspore.parallel as well as at the top level.
    assert ms.parallel.load_segmented_checkpoints is ms.load_segmented_checkpoints
    for name in ("transform_checkpoints", "transform_checkpoint_by_rank", "rank_list_for_transform",
                 "merge_sliced_parameter", "build_searched_strategy", "merge_pipeline_strategys",
                 "load_distributed_checkpoint", "unified_safetensors"):
        assert getattr(ms, name) is getattr(ms.parallel, name), name
    assert issubclass(ms.nn.GraphCell, nn.Cell)


def test_communication_management_module():
    """``import mindspore.communication.management as D`` and ``from ...management import init``."""
    import distinfer.communication.management as D
    from distinfer.communication.management import create_group, get_group_size, get_rank, init

    assert D.get_rank is comm.get_rank and init is comm.init and create_group is comm.create_group
    init()
    assert (get_rank(), get_group_size()) == (0, 1)
    assert "get_local_rank" in D.__all__


# ------------------------------------------------------------------------------ set_context
def test_default_mode_is_pynative():
    code = "import distinfer as ms; print(ms.get_context('mode'), ms.PYNATIVE_MODE)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["1", "1"]


@pytest.mark.parametrize("key,value", [("mode", "graph"), ("device_target", 1), ("max_call_depth", "10"),
                                       ("device_id", "0"), ("save_graphs_path", 1), ("jit_config", "O0")])
def test_set_context_wrong_type_is_type_error(key, value):
    with pytest.raises(TypeError, match=key):
        ms.set_context(**{key: value})


# ------------------------------------------------------------------ auto-parallel context
@pytest.mark.parametrize("key,value", [
    ("device_num", "8"), ("device_num", 8.0), ("global_rank", 1.5), ("pipeline_stages", True), ("pipeline_stages", "2"),
    ("parallel_mode", 1), ("search_mode", 2), ("full_batch", "yes"), ("gradients_mean", 1),
    ("enable_parallel_optimizer", 1), ("pipeline_result_broadcast", "no"), ("strategy_ckpt_config", "x.ckpt"),
    ("strategy_ckpt_config", {"load_file": 1}), ("strategy_ckpt_config", {"only_trainable_params": "yes"}),
    ("strategy_ckpt_load_file", 1), ("strategy_ckpt_save_file", None), ("dataset_strategy", 5),
    ("dataset_strategy", ((1, "8"),)), ("dataset_strategy", (8, 1)), ("pipeline_config", "1f1b"),
    ("parallel_optimizer_config", "x"), ("comm_fusion", ["allreduce"]), ("all_reduce_fusion_config", (8, 160)),
])
def test_set_auto_parallel_context_wrong_type_is_type_error(key, value):
    with pytest.raises(TypeError, match=key.split(".")[0]):
        ms.set_auto_parallel_context(**{key: value})


@pytest.mark.parametrize("key,value", [("device_num", 0), ("global_rank", 4096), ("pipeline_stages", 0),
                                       ("parallel_mode", "semi"), ("search_mode", "greedy"),
                                       ("dataset_strategy", "half_batch"), ("strategy_ckpt_config", {"file": "x"})])
def test_set_auto_parallel_context_bad_value_is_value_error(key, value):
    with pytest.raises(ValueError) as info:
        ms.set_auto_parallel_context(**{key: value})
    assert not isinstance(info.value, TypeError)


def test_parallel_optimizer_config_keys_and_values():
    cfg = {"gradient_accumulation_shard": False, "parallel_optimizer_threshold": 24,
           "optimizer_weight_shard_size": 2, "optimizer_level": "level2"}
    ms.set_auto_parallel_context(enable_parallel_optimizer=True, parallel_optimizer_config=cfg)
    assert ms.get_auto_parallel_context("parallel_optimizer_config") == cfg
    with pytest.raises(ValueError, match="unknown keys.*'bogus'"):
        ms.set_auto_parallel_context(parallel_optimizer_config={"bogus": 1})
    with pytest.raises(ValueError, match="parallel_optimizer_threshold"):
        ms.set_auto_parallel_context(parallel_optimizer_config={"parallel_optimizer_threshold": -1})
    with pytest.raises(ValueError, match="optimizer_level"):
        ms.set_auto_parallel_context(parallel_optimizer_config={"optimizer_level": "level4"})
    with pytest.raises(TypeError, match="gradient_accumulation_shard"):
        ms.set_auto_parallel_context(parallel_optimizer_config={"gradient_accumulation_shard": 1})


def test_dataset_strategy_lists_still_accepted():
    ms.set_auto_parallel_context(dataset_strategy=[[2, 1], [2, 1]])
    assert ms.get_auto_parallel_context("dataset_strategy") == ((2, 1), (2, 1))


# ------------------------------------------------------------------------ communication
def test_init_backend_name_errors():
    with pytest.raises(TypeError, match="backend_name"):
        comm.init(123)
    with pytest.raises(RuntimeError, match="backend_name"):  # as MindSpore
        comm.init("gloo")
    comm.init("mccl")


@pytest.mark.parametrize("call", [
    lambda: comm.get_rank(1), lambda: comm.get_group_size(None), lambda: comm.get_local_rank(0),
    lambda: comm.get_local_rank_size(b"g"), lambda: comm.destroy_group(3), lambda: comm.create_group(7, [0]),
    lambda: comm.get_process_group_ranks(0),
])
def test_group_name_must_be_str(call):
    with pytest.raises(TypeError, match="'group' must be type of string"):
        call()
    assert "7" not in comm._GROUPS and 7 not in comm._GROUPS


def test_create_group_and_rank_arguments():
    comm.init()
    with pytest.raises(TypeError, match="rank_ids"):
        comm.create_group("g_int", 0)
    with pytest.raises(TypeError, match="rank_ids"):
        comm.create_group("g_str", ["0"])
    for bad in ([], [0, 0]):  # MindSpore: ValueError
        with pytest.raises(ValueError, match="distinct"):
            comm.create_group("g_bad", bad)
    comm.create_group("g_np", [np.int64(0)])  # numpy ranks are ints
    try:
        assert comm.get_group_size("g_np") == 1
    finally:
        comm.destroy_group("g_np")
    with pytest.raises(TypeError, match="group_rank_id"):
        comm.get_world_rank_from_group_rank("hccl_world_group", True)
    with pytest.raises(TypeError, match="world_rank_id"):
        comm.get_group_rank_from_world_rank("0", "hccl_world_group")


# ------------------------------------------------------------------------------- Model
def test_model_construction_checks(tmp_path):
    net = nn.Dense(4, 3)
    with pytest.raises(TypeError, match="'network' must be a Cell"):
        ms.Model("not a network")
    with pytest.raises(ValueError, match="'loss_scal_manager' is not recognized"):
        ms.Model(net, nn.CrossEntropyLoss(), loss_scal_manager=None)
    ms.Model(net, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params(), 0.1), keep_batchnorm_fp32=False)
    with pytest.raises(ValueError, match="eval_indexes"):
        ms.Model(net, nn.CrossEntropyLoss(), metrics={"accuracy"}, eval_network=net, eval_indexes=[0, 1])
    ms.Model(net, nn.CrossEntropyLoss(), metrics={"accuracy"}, eval_network=net, eval_indexes=[0, 1, 2])
    x = ms.Tensor(np.ones((2, 4), np.float32))
    graph = ms.load(ms.export(net, x, file_name=str(tmp_path / "dense")))
    cell = nn.GraphCell(graph)
    with pytest.raises(ValueError, match="GraphCell"):
        ms.Model(cell, nn.CrossEntropyLoss())
    assert ms.Model(cell).predict(x).shape == (2, 3)


def test_predict_data_types_in_stand_alone_mode():
    model = ms.Model(nn.Dense(4, 3))
    with pytest.raises(TypeError, match="input 0 is ndarray"):
        model.predict(np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="holds a ndarray"):
        model.predict([ms.Tensor(np.ones((2, 4), np.float32)), np.ones(2)])
    assert model.predict(ms.Tensor(np.ones((2, 4), np.float32))).shape == (2, 3)


def test_train_and_eval_argument_checks():
    model = _train_model()
    with pytest.raises(TypeError, match="dataset_sink_mode"):
        model.train(1, _data(), dataset_sink_mode="yes")
    with pytest.raises(TypeError, match="sink_size"):
        model.train(1, _data(), sink_size="4")
    with pytest.raises(ValueError, match="sink_size"):
        model.train(1, _data(), sink_size=0)
    empty = _data(rows=2, batch=4, drop_remainder=True)
    assert empty.get_dataset_size() == 0
    with pytest.raises(ValueError, match="no valid data"):
        model.train(1, empty)
    model.train(1, _data(), dataset_sink_mode=True, sink_size=-1)  # distinfer runs sink mode as non-sink
    evaluator = ms.Model(model.predict_network, nn.CrossEntropyLoss(), metrics={"accuracy"})
    with pytest.raises(TypeError, match="dataset_sink_mode"):
        evaluator.eval(_data(), dataset_sink_mode=1)
    assert set(evaluator.eval(_data())) == {"accuracy"}


def test_infer_train_layout_needs_sink_mode():
    from seed_net import seed_network

    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=8)
    net = seed_network()
    model = ms.Model(net, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params(), 0.01))
    data = ds.NumpySlicesDataset({"image": np.zeros((8, 1, 28, 28), np.float32), "label": np.zeros(8, np.int32)},
                                 shuffle=False).batch(8)
    with pytest.raises(ValueError, match="dataset_sink_mode"):
        model.infer_train_layout(data, dataset_sink_mode=False)
    with pytest.raises(TypeError, match="dataset_sink_mode"):
        model.infer_train_layout(data, dataset_sink_mode=1)
    with pytest.raises(ValueError, match="sink_size"):
        model.infer_train_layout(data, sink_size=-2)
    assert "layer1.weight" in model.infer_train_layout(data)


# ------------------------------------------------------------------ distributed checkpoints
def _two_rank_files(tmp_path):
    full = np.arange(8, dtype=np.float32).reshape(2, 4)
    files = []
    for r in range(2):
        files.append(str(tmp_path / f"rank{r}.ckpt"))
        write_ckpt(files[-1], [("w", full[:, 2 * r:2 * r + 2])])
    src = tmp_path / "src_strategy.ckpt"
    dst = tmp_path / "dst_strategy.ckpt"
    write_strategy(str(src), StrategyFile(layouts={"w": ParamLayout([2], [-1, 0])}))
    write_strategy(str(dst), StrategyFile(layouts={"w": ParamLayout([2], [0, -1])}))
    return full, files, str(src), str(dst)


def test_merge_sliced_parameter_arguments():
    slices = [ms.Parameter(ms.Tensor(np.full((1, 2), i, np.float32)), name="w") for i in range(2)]
    with pytest.raises(ValueError, match="must not be empty"):  # MindSpore: ValueError
        ms.merge_sliced_parameter([])
    with pytest.raises(TypeError, match="'strategy' must be a dict"):
        ms.merge_sliced_parameter(slices, [("w", ParamLayout([2], [0, -1]))])
    # An empty strategy merges like no strategy: slices concatenated on axis 0.
    assert ms.merge_sliced_parameter(slices, {}).asnumpy().tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_transform_checkpoint_by_rank_rank_id_type(tmp_path):
    _, files, src, dst = _two_rank_files(tmp_path)
    out = str(tmp_path / "out.ckpt")
    with pytest.raises(TypeError, match="rank_id"):
        ms.transform_checkpoint_by_rank(1.0, dict(enumerate(files)), out, src, dst)
    assert not os.path.exists(out)
    ms.transform_checkpoint_by_rank(1, dict(enumerate(files)), out, src, dst)
    assert ms.load_checkpoint(out)["w"].asnumpy().tolist() == [[4.0, 5.0, 6.0, 7.0]]


def test_load_distributed_checkpoint_argument_checks(tmp_path):
    full, files, src, _ = _two_rank_files(tmp_path)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = ms.Parameter(ms.Tensor(np.zeros((2, 4), np.float32)), name="w")

        def construct(self, x):
            return x

    with pytest.raises(TypeError, match="'network' must be a Cell"):
        ms.load_distributed_checkpoint("net", files, None, src)
    with pytest.raises(TypeError, match="'network' must be a Cell"):
        ms.load_distributed_checkpoint(None, files, None, src)
    with pytest.raises(ValueError, match="output_format"):
        ms.load_distributed_checkpoint(Net(), files, None, src, output_format="npz")
    with pytest.raises(TypeError, match="dec_key"):
        ms.load_distributed_checkpoint(Net(), files, None, src, dec_key="secret")
    with pytest.raises(TypeError, match="dec_mode"):
        ms.load_distributed_checkpoint(Net(), files, None, src, dec_mode=1)
    net = Net()
    assert ms.load_distributed_checkpoint(net, files, None, src) is True
    np.testing.assert_array_equal(net.w.asnumpy(), full)
    assert ms.load_distributed_checkpoint(None, files, None, src, return_param_dict=True) == {}


def test_merge_pipeline_strategys_directory_handling(tmp_path):
    with pytest.raises(NotADirectoryError):
        ms.merge_pipeline_strategys(str(tmp_path / "missing"), str(tmp_path / "merged.ckpt"))
    src = tmp_path / "stages"
    src.mkdir()
    write_strategy(str(src / "s0.ckpt"), StrategyFile(items={"MatMul_w": (0, [[2, 1], [1, 2]])},
                                                      layouts={"w": ParamLayout([2, 2], [-1, 0])}))
    dst = tmp_path / "new_dir" / "merged.ckpt"  # MindSpore creates the destination directory
    ms.parallel.merge_pipeline_strategys(str(src), str(dst))
    assert list(ms.build_searched_strategy(str(dst))) == ["0-w"]


def test_load_segmented_checkpoints_arguments(tmp_path):
    with pytest.raises(TypeError, match="ckpt_file_dir"):
        ms.load_segmented_checkpoints(123)
    with pytest.raises(ValueError, match="not a directory"):
        ms.load_segmented_checkpoints(str(tmp_path / "missing"))
    assert ms.parallel.load_segmented_checkpoints(str(tmp_path)) == {}  # no .ckpt files: an empty dict


# --------------------------------------------------------------------------- serialization
def test_save_checkpoint_list_of_parameters(tmp_path):
    net = nn.Dense(3, 2)
    path = str(tmp_path / "params.ckpt")
    ms.save_checkpoint(net.trainable_params(), path, choice_func=lambda n: n != "bias")
    got = ms.load_checkpoint(path)
    assert list(got) == ["weight"]
    np.testing.assert_array_equal(got["weight"].asnumpy(), net.weight.asnumpy())
    with pytest.raises(TypeError, match="element 1"):
        ms.save_checkpoint([net.weight, net.bias.asnumpy()], path)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"integrated_save": "yes"}, TypeError, "integrated_save"),
    ({"async_save": 1}, TypeError, "async_save"),
    ({"async_save": "fork"}, ValueError, "async_save"),
    ({"enc_key": "secret"}, TypeError, "enc_key"),
    ({"enc_mode": 1}, TypeError, "enc_mode"),
    ({"crc_check": "yes"}, TypeError, "crc_check"),
    ({"remove_redundancy": "yes"}, TypeError, "remove_redundancy"),
    ({"format": "safetensors", "enc_mode": "AES-CBC"}, ValueError, "enc_mode"),
    ({"format": "safetensors", "global_step_num": 3}, ValueError, "global_step_num"),
    ({"format": "safetensors", "incremental": True}, ValueError, "incremental"),
])
def test_save_checkpoint_argument_checks(tmp_path, kwargs, error, match):
    path = str(tmp_path / ("a." + kwargs.get("format", "ckpt")))
    with pytest.raises(error, match=match):
        ms.save_checkpoint(nn.Dense(2, 2), path, **kwargs)
    assert not os.path.exists(path)


def test_save_checkpoint_accepts_ckpt_only_options(tmp_path):
    # incremental (MapParameters) and global_step_num (MindSpore's AITurbo saver) do not change a .ckpt.
    path = str(tmp_path / "a.ckpt")
    ms.save_checkpoint(nn.Dense(2, 2), path, global_step_num=5, incremental=True)
    assert sorted(ms.load_checkpoint(path)) == ["bias", "weight"]


@pytest.mark.parametrize("kwargs,error,match", [
    ({"crc_check": "yes"}, TypeError, "crc_check"),
    ({"dec_key": "secret"}, TypeError, "dec_key"),
    ({"dec_mode": 1}, TypeError, "dec_mode"),
    ({"remove_redundancy": "no"}, TypeError, "remove_redundancy"),
])
def test_load_checkpoint_argument_checks(tmp_path, kwargs, error, match):
    path = str(tmp_path / "a.ckpt")
    ms.save_checkpoint(nn.Dense(2, 2), path)
    with pytest.raises(error, match=match):
        ms.load_checkpoint(path, **kwargs)


def test_load_checkpoint_safetensors_needs_default_dec_mode(tmp_path):
    path = str(tmp_path / "a.safetensors")
    ms.save_checkpoint(nn.Dense(2, 2), path, format="safetensors")
    with pytest.raises(ValueError, match="dec_mode"):
        ms.load_checkpoint(path, dec_mode="SM4-CBC", format="safetensors")
    assert sorted(ms.load_checkpoint(path, format="safetensors")) == ["bias", "weight"]


# --------------------------------------------------------------------------------- load
def test_load_mindir_argument_errors(tmp_path):
    missing = str(tmp_path / "net.mindir")
    with pytest.raises(ValueError, match="does not exist"):
        ms.load(missing)
    with pytest.raises(ValueError, match="file_name"):
        ms.load(123)
    (tmp_path / "params.json").write_text(json.dumps({}))
    with pytest.raises(ValueError, match=r"\.mindir"):
        ms.load(str(tmp_path / "params.json"))
