"""The op registry (``distinfer.ops.registry``): every op is reachable by name, declares its ONNX form
or a reason it has none, and each ONNX form computes what distinfer's own kernel computes.

The ONNX tests export one op alone (a Cell whose ``construct`` calls it) and run the file in
onnxruntime on random inputs, against the same Cell run by distinfer. A new op needs an entry in
``SAMPLES`` (or an ``onnx_refusal``); the walk over the registry fails until it has one.
"""
from __future__ import annotations

import numpy as np
import pytest

import distinfer as ms
from distinfer import context, nn, ops
from distinfer.errors import OnnxExportError
from distinfer.ops import registry
from distinfer.ops._shape import encode_index

_rng = np.random.default_rng(0)


def _f32(*shape):
    return _rng.standard_normal(shape).astype(np.float32)


def _pos(*shape):
    return (_rng.random(shape) + 0.5).astype(np.float32)


def _round(*shape):
    return np.round(_rng.standard_normal(shape)).astype(np.float32)  # many equal pairs for comparisons


def _ids(*shape, high=4):
    return _rng.integers(0, high, shape).astype(np.int32)


# op name -> (call on Tensors, input arrays); constants are part of the call.
SAMPLES = {
    "Add": (lambda a, b: ops.Add()(a, b), [_f32(2, 3), _f32(3)]),
    "Sub": (lambda a: ops.Sub()(1.5, a), [_f32(2, 3)]),
    "Mul": (lambda a, b: ops.Mul()(a, b), [_f32(2, 3), _f32(2, 1)]),
    "RealDiv": (lambda a, b: ops.RealDiv()(a, b), [_f32(2, 3), _pos(2, 3)]),
    "Div": (lambda a: ops.Div()(a, 4.0), [_f32(2, 3)]),
    "Maximum": (lambda a, b: ops.Maximum()(a, b), [_f32(2, 3), _f32(2, 3)]),
    "Minimum": (lambda a, b: ops.Minimum()(a, b), [_f32(2, 3), _f32(3)]),
    "Pow": (lambda a, b: ops.Pow()(a, b), [_pos(2, 3), _f32(2, 3)]),
    "Less": (lambda a: ops.Less()(a, 0.5), [_f32(2, 3)]),
    "Greater": (lambda a, b: ops.Greater()(a, b), [_round(2, 3), _round(2, 3)]),
    "LessEqual": (lambda a, b: ops.LessEqual()(a, b), [_round(2, 3), _round(2, 3)]),
    "GreaterEqual": (lambda a: ops.GreaterEqual()(a, 0.0), [_round(2, 3)]),
    "Equal": (lambda a, b: ops.Equal()(a, b), [_round(2, 3), _round(2, 3)]),
    "ReLU": (lambda a: ops.ReLU()(a), [_f32(2, 3)]),
    "GeLU": (lambda a: ops.GeLU()(a), [_f32(2, 3)]),
    "FastGeLU": (lambda a: ops.FastGeLU()(a), [_f32(3, 4) * 3]),
    "Sigmoid": (lambda a: ops.Sigmoid()(a), [_f32(2, 3)]),
    "SiLU": (lambda a: ops.SiLU()(a), [_f32(2, 3)]),
    "Tanh": (lambda a: ops.Tanh()(a), [_f32(2, 3)]),
    "Exp": (lambda a: ops.Exp()(a), [_f32(2, 3)]),
    "Log": (lambda a: ops.Log()(a), [_pos(2, 3)]),
    "Sqrt": (lambda a: ops.Sqrt()(a), [_pos(2, 3)]),
    "Rsqrt": (lambda a: ops.Rsqrt()(a), [_pos(2, 3)]),
    "Neg": (lambda a: ops.Neg()(a), [_f32(2, 3)]),
    "Square": (lambda a: ops.Square()(a), [_f32(2, 3)]),
    "Abs": (lambda a: ops.Abs()(a), [_f32(2, 3)]),
    "Erf": (lambda a: ops.Erf()(a), [_f32(2, 3)]),
    "Identity": (lambda a: ops.Identity()(a), [_f32(2, 3)]),
    "Cast": (lambda a: ops.Cast()(a, ms.int32), [_f32(2, 3) * 3]),
    "Softmax": (lambda a: ops.Softmax(-1)(a), [_f32(2, 3, 4)]),
    "LogSoftmax": (lambda a: ops.LogSoftmax(1)(a), [_f32(2, 3, 4)]),
    "BiasAdd": (lambda a, b: ops.BiasAdd()(a, b), [_f32(2, 3, 4), _f32(3)]),
    "MatMul": (lambda a, b: ops.MatMul(transpose_b=True)(a, b), [_f32(2, 3), _f32(4, 3)]),
    "BatchMatMul": (lambda a, b: ops.BatchMatMul(transpose_a=True)(a, b), [_f32(2, 3, 4), _f32(2, 3, 5)]),
    "ReduceSum": (lambda a: ops.ReduceSum(keep_dims=True)(a, (1,)), [_f32(2, 3, 4)]),
    "ReduceMean": (lambda a: ops.ReduceMean()(a, 1), [_f32(2, 3, 4)]),
    "ReduceMax": (lambda a: ops.ReduceMax()(a, (0, 2)), [_f32(2, 3, 4)]),
    "ReduceMin": (lambda a: ops.ReduceMin(keep_dims=True)(a), [_f32(2, 3, 4)]),
    "ArgMaxWithValue": (lambda a: ops.ArgMaxWithValue(axis=1)(a), [_f32(2, 5, 3)]),
    "Reshape": (lambda a: ops.Reshape()(a, (6, -1)), [_f32(2, 3, 4)]),
    "Flatten": (lambda a: ops.Flatten()(a), [_f32(2, 3, 4)]),
    "Transpose": (lambda a: ops.Transpose()(a, (2, 0, 1)), [_f32(2, 3, 4)]),
    "ExpandDims": (lambda a: ops.ExpandDims()(a, -1), [_f32(2, 3)]),
    "Squeeze": (lambda a: ops.Squeeze(1)(a), [_f32(2, 1, 3)]),
    "Concat": (lambda a, b: ops.Concat(1)((a, b)), [_f32(2, 3), _f32(2, 2)]),
    "Split": (lambda a: ops.Split(1, 2)(a), [_f32(2, 4, 3)]),
    "TensorGetItem": (lambda a: ops.TensorGetItem()(a, encode_index((1, slice(None, None, -2), None), 3)),
                      [_f32(3, 5, 2)]),
    "Gather": (lambda t, i: ops.Gather()(t, i, 0), [_f32(5, 3), _ids(2, 3, high=5)]),
    "OneHot": (lambda i: ops.OneHot()(i, 4, 2.0, -1.0), [_ids(2, 3)]),
    "LayerNorm": (lambda x, g, b: ops.LayerNorm(1, 1, 1e-5)(x, g, b), [_f32(2, 3, 4), _pos(3, 4), _f32(3, 4)]),
    "SparseSoftmaxCrossEntropyWithLogits": (lambda x, y: ops.SparseSoftmaxCrossEntropyWithLogits()(x, y),
                                            [_f32(4, 5), _ids(4, high=5)]),
    "SoftmaxCrossEntropyWithLogits": (lambda x, y: ops.SoftmaxCrossEntropyWithLogits()(x, y),
                                      [_f32(4, 5), np.eye(5, dtype=np.float32)[[0, 3, 1, 4]]]),
}


class _Call1(nn.Cell):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, a):
        return self.fn(a)


class _Call2(_Call1):
    def construct(self, a, b):
        return self.fn(a, b)


class _Call3(_Call1):
    def construct(self, a, b, c):
        return self.fn(a, b, c)


def _cell(fn, n_inputs: int) -> nn.Cell:
    return {1: _Call1, 2: _Call2, 3: _Call3}[n_inputs](fn)


@pytest.fixture(autouse=True)
def _stand_alone():
    context.reset_auto_parallel_context()
    yield
    context.reset_auto_parallel_context()


def test_every_op_converts_to_onnx_or_says_why_not():
    ops_ = registry.ops()
    assert len(ops_) >= 53
    for name, cls in ops_.items():
        refusal = cls.onnx_refusal
        assert registry.converts_to_onnx(cls) or (isinstance(refusal, str) and len(refusal) > 20), \
            f"op {name} has neither an ONNX form (onnx_op / to_onnx) nor an onnx_refusal reason"
        if registry.converts_to_onnx(cls):
            assert name in SAMPLES, f"op {name} converts to ONNX: add a sample call to SAMPLES to test it"


def test_every_op_is_exposed_under_its_name():
    for name, cls in registry.ops().items():
        assert getattr(ops, name) is cls, name
        assert registry.lookup(name) is cls
        for alias in cls.ms_aliases:
            assert registry.lookup(alias) is cls


@pytest.mark.parametrize("name", sorted(n for n, c in registry.ops().items() if registry.converts_to_onnx(c)))
def test_op_alone_in_onnxruntime_equals_distinfer(name, tmp_path):
    import onnx
    import onnxruntime as ort

    fn, arrays = SAMPLES[name]
    net = _cell(fn, len(arrays))
    inputs = [ms.Tensor(a) for a in arrays]
    want = net(*inputs)
    want = [t.asnumpy() for t in (want if isinstance(want, tuple) else (want,))]
    path = ms.export(net, *inputs, file_name=str(tmp_path / name), file_format="ONNX")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (name, g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=2e-6, err_msg=name)


def test_refused_op_names_its_reason(tmp_path):
    net = _cell(lambda a: ops.Dropout(0.8)(a)[0], 1)
    with pytest.raises(OnnxExportError, match=r"op Dropout .* no ONNX form: its mask comes from"):
        ms.export(net, ms.Tensor(_f32(2, 3)), file_name=str(tmp_path / "drop"), file_format="ONNX")


def test_call_without_onnx_form_is_refused(tmp_path):
    net = _cell(lambda a: ops.Softmax((0, 1))(a), 1)
    with pytest.raises(OnnxExportError, match=r"Softmax over several axes \(0, 1\)"):
        ms.export(net, ms.Tensor(_f32(2, 3)), file_name=str(tmp_path / "sm"), file_format="ONNX")


def test_amp_white_list_is_declared_by_the_ops():
    # MindSpore's amp white list, as far as distinfer has those primitives (no Conv, PReLU or Ger).
    assert registry.amp_ops("white") == {"MatMul", "BatchMatMul", "ReLU"}


def test_a_name_is_registered_once():
    twin = type("ReLU", (ops.Tanh,), {"__module__": "user_ops"})  # outside distinfer.ops: not registered
    assert registry.lookup("ReLU") is ops.ReLU
    with pytest.raises(ValueError, match="'ReLU' of user_ops.ReLU is already taken by distinfer.ops"):
        registry.register(twin)
    assert registry.lookup("ReLU") is ops.ReLU


# ------------------------------------------------------------------- MindIR facts of the ops
def _seed_net_with_transpose_b(mindir_fixtures, tmp_path, flag_value):
    """MindSpore's seed_net.mindir with every MatMul's transpose_b input set to ``flag_value`` (and, for
    True, the weights stored transposed, so the network computes the same)."""
    from distinfer._proto import mind_ir_pb2 as pb
    from distinfer.exporter._codec import encode_value, tensor_array

    model = pb.ModelProto.FromString((mindir_fixtures / "seed_net.mindir").read_bytes())
    flag = pb.NodeProto(name="flag", op_type="Constant", output=["flag"])
    flag.attribute.append(encode_value("value", flag_value))
    nodes = [flag, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    prims = {p.name: p.op_type for p in model.primitives}
    for node in model.graph.node:
        if node.op_type.startswith("REF::") and prims[node.op_type[5:]] == "MatMul":
            node.input[3] = "flag"
    if flag_value is True:
        for t in model.graph.parameter:
            if len(t.dims) == 2:
                arr = np.ascontiguousarray(tensor_array(t, "weight").T)
                t.dims[:] = arr.shape
                t.raw_data = arr.tobytes()
    path = tmp_path / "seed_t.mindir"
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_mindspore_matmul_takes_its_transpose_flags_from_node_inputs(ms_fixtures, tmp_path):
    assert [i.name for i in ops.MatMul.mindir.inputs] == ["transpose_a", "transpose_b"]
    mindir = ms_fixtures / "mindir"
    x = np.load(mindir / "input.npz")["x"]
    y = np.load(mindir / "expected_output.npz")["y"]
    out = nn.GraphCell(ms.load(_seed_net_with_transpose_b(mindir, tmp_path, True)))(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-5)


def test_mindspore_matmul_flag_that_is_not_a_scalar_is_refused(ms_fixtures, tmp_path):
    from distinfer.errors import FormatError

    path = _seed_net_with_transpose_b(ms_fixtures / "mindir", tmp_path, np.array([1, 0], np.int64))
    with pytest.raises(FormatError, match=r"MatMul.*input 3.*'transpose_b' holds ndarray"):
        nn.GraphCell(ms.load(path))(ms.Tensor(np.zeros((4, 1, 28, 28), np.float32)))
