"""export / load / GraphCell / ONNX / verify (spec §9).

The MPI cases run tests/mpi/export_seed.py under ``python -m distinfer.launch``.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import distinfer as ms
from distinfer import context, nn, ops
from distinfer._proto import mind_ir_pb2 as pb
from distinfer.common.initializer import Normal, initializer
from distinfer.errors import CommError, FormatError
from distinfer.exporter import UnsupportedOpError, verify_export
from distinfer.exporter._codec import decode_value
from distinfer.exporter.mindspore_ops import mindir_ops
from distinfer.exporter.onnx_writer import OnnxExportError, check_exportable
from distinfer.exporter.trace import Trace, trace_network
from distinfer.exporter.verify import register

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from seed_net import seed_network  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from op_cases import op_cases, outputs  # noqa: E402


@pytest.fixture(autouse=True)
def _stand_alone():
    context.reset_auto_parallel_context()
    yield
    context.reset_auto_parallel_context()


@pytest.fixture(scope="module")
def mindir_fixtures(ms_fixtures) -> Path:
    return ms_fixtures / "mindir"


def _x(shape=(4, 1, 28, 28), seed=3) -> ms.Tensor:
    return ms.Tensor(np.random.default_rng(seed).random(shape, dtype=np.float32))


# ------------------------------------------------------------------ wire-format helpers
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return out, pos


def _fields(buf: bytes) -> list[tuple[int, int, bytes | int]]:
    """Top-level ``(field number, wire type, payload)`` of a serialised message."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        elif wire == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        else:
            raise AssertionError(f"wire type {wire}")
        out.append((num, wire, val))
    return out


def _numbers(buf: bytes) -> set[int]:
    return {n for n, _, _ in _fields(buf)}


# ------------------------------------------------------------------- networks
class GPTBlock(nn.Cell):
    """A small pre-LN causal attention + GeLU MLP block (Gather, LayerNorm, Split, BatchMatMul, Softmax...)."""

    def __init__(self, vocab=32, hidden=16, heads=2, seq=8):
        super().__init__()
        self.vocab, self.hidden, self.heads, self.seq = vocab, hidden, heads, seq
        self.hd = hidden // heads
        p = lambda *s, mean=0.0: ms.Parameter(initializer(Normal(0.2, mean), list(s), ms.float32))  # noqa: E731
        self.wte, self.wpe = p(vocab, hidden), p(seq, hidden)
        self.g1, self.b1, self.g2, self.b2 = p(hidden, mean=1.0), p(hidden), p(hidden, mean=1.0), p(hidden)
        self.w_qkv, self.b_qkv, self.w_o = p(hidden, 3 * hidden), p(3 * hidden), p(hidden, hidden)
        self.w_fc, self.w_proj, self.w_head = p(hidden, 4 * hidden), p(4 * hidden, hidden), p(hidden, vocab)
        upper = np.triu(np.ones((seq, seq), bool), 1)
        self.mask = ms.Tensor(np.where(upper, -1e9, 0.0).astype(np.float32).reshape(1, 1, seq, seq))
        self.gather, self.ln1, self.ln2 = ops.Gather(), ops.LayerNorm(-1, -1, 1e-5), ops.LayerNorm(-1, -1, 1e-5)
        self.split = ops.Split(axis=3, output_num=3)
        self.scores, self.context = ops.BatchMatMul(transpose_b=True), ops.BatchMatMul()
        self.softmax, self.gelu, self.transpose, self.reshape = ops.Softmax(-1), ops.GeLU(), ops.Transpose(), \
            ops.Reshape()

    def construct(self, ids):
        b = ids.shape[0]
        h = self.reshape(ops.add(self.gather(self.wte, ids, 0), self.wpe), (b * self.seq, self.hidden))
        x = self.ln1(h, self.g1, self.b1)[0]
        qkv = self.reshape(ops.add(ops.matmul(x, self.w_qkv), self.b_qkv), (b, self.seq, self.heads, 3 * self.hd))
        q, k, v = (self.transpose(t, (0, 2, 1, 3)) for t in self.split(qkv))
        s = ops.add(ops.mul(self.scores(q, k), 1.0 / math.sqrt(self.hd)), self.mask)
        ctx = self.reshape(self.transpose(self.context(self.softmax(s), v), (0, 2, 1, 3)), (b * self.seq, self.hidden))
        h = ops.add(h, ops.matmul(ctx, self.w_o))
        h = ops.add(h, ops.matmul(self.gelu(ops.matmul(self.ln2(h, self.g2, self.b2)[0], self.w_fc)), self.w_proj))
        return self.reshape(ops.matmul(h, self.w_head), (b, self.seq, self.vocab))


def _ids() -> ms.Tensor:
    return ms.Tensor(np.random.default_rng(1).integers(0, 32, (2, 8)).astype(np.int32))


# ------------------------------------------------------------------- the real MindSpore file
def test_real_mindspore_mindir_runs(mindir_fixtures):
    graph = ms.load(str(mindir_fixtures / "seed_net.mindir"))
    x = np.load(mindir_fixtures / "input.npz")["x"]
    y = np.load(mindir_fixtures / "expected_output.npz")["y"]
    out = nn.GraphCell(graph)(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-5)
    assert graph.rank is None and not graph.parameter_layout_dict()
    full = np.load(mindir_fixtures.parent / "distributed" / "seed_8dev" / "full.npz")
    for name, arr in graph.weights().items():
        np.testing.assert_array_equal(arr, full[name])


def test_verify_real_mindspore_export(mindir_fixtures):
    full = mindir_fixtures.parent / "distributed" / "seed_8dev" / "full.npz"
    report = verify_export(str(mindir_fixtures), checkpoint=str(full))
    assert report.ok and len(report.checked) == 6, str(report)


def _structure(model: pb.ModelProto) -> list[tuple]:
    """Per node: its op (primitive op_type, or Constant and the constant's type), primitive type,
    input count, node attribute names, node_attr names and primitive attribute names."""
    prims = {p.name: p for p in model.primitives}
    rows = []
    for n in model.graph.node:
        if n.op_type == "Constant":
            rows.append(("Constant", pb.AttributeProto.AttributeType.Name(n.attribute[0].type), len(n.input)))
            continue
        p = prims[n.op_type[5:]]
        rows.append((p.op_type, pb.PrimitiveProto.PrimType.Name(p.prim_type), len(n.input),
                     [a.name for a in n.attribute], [a.name for a in n.node_attr], sorted(a.name for a in p.attribute)))
    return rows


def test_seed_export_has_mindspores_structure(tmp_path, mindir_fixtures):
    """Golden check against the file MindSpore 2.10 wrote for the same network: node by node the same
    primitives (MatMul with its two transpose inputs, a Load with its U monad per weight, the
    MakeTuple/UpdateState/Depend tail), attributes, naming and dtypes."""
    theirs = pb.ModelProto.FromString((mindir_fixtures / "seed_net.mindir").read_bytes())
    net = seed_network(shard=False)
    full = np.load(mindir_fixtures.parent / "distributed" / "seed_8dev" / "full.npz")
    for name, p in net.parameters_and_names():
        p.set_data(ms.Tensor(full[name]))
    x = ms.Tensor(np.load(mindir_fixtures / "input.npz")["x"])
    ours = pb.ModelProto.FromString(Path(ms.export(net, x, file_name=str(tmp_path / "seed"))).read_bytes())
    assert _structure(ours) == _structure(theirs)
    for field in ("ir_version", "model_version", "mind_ir_version", "little_endian"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert not ours.HasField("parallel") and not theirs.HasField("parallel")
    g, their_g = ours.graph, theirs.graph
    assert [(p.name.split(":", 1)[1], p.ref_key, p.data_type, list(p.dims), p.compression_type) for p in g.parameter] \
        == [(p.name.split(":", 1)[1], p.ref_key, p.data_type, list(p.dims), p.compression_type)
            for p in their_g.parameter]
    assert all(p.name == f"{g.name}:{p.ref_key}" for p in g.parameter)
    assert [(i.name.split(":", 1)[1], list(i.tensor[0].dims), i.tensor[0].data_type) for i in g.input] == \
        [(i.name.split(":", 1)[1], list(i.tensor[0].dims), i.tensor[0].data_type) for i in their_g.input]
    assert [(list(o.tensor[0].dims), o.tensor[0].data_type) for o in g.output] == \
        [(list(o.tensor[0].dims), o.tensor[0].data_type) for o in their_g.output]
    for model in (ours, theirs):  # CNodes are "<graph>:<debug name>:<id>", the output the last one
        cnodes = [n for n in model.graph.node if n.op_type != "Constant"]
        pattern = re.compile(re.escape(model.graph.name) + r":[A-Za-z_]\w*:\d+")
        assert all(n.name == n.output[0] and pattern.fullmatch(n.name) for n in cnodes)
        assert model.graph.output[0].name == cnodes[-1].name
    assert {a.name for a in g.attribute} <= {a.name for a in their_g.attribute}
    np.testing.assert_array_equal(nn.GraphCell(ms.load(str(tmp_path / "seed.mindir")))(x).asnumpy(), net(x).asnumpy())


# ------------------------------------------------------------------- stand-alone round trip
def test_standalone_roundtrip_equals_predict(tmp_path):
    ms.set_seed(2)
    net = seed_network(shard=False)
    x = _x()
    path = ms.export(net, x, file_name=str(tmp_path / "sub" / "seed"))
    assert path == str(tmp_path / "sub" / "seed.mindir") and os.path.isfile(path)
    expected = ms.Model(net).predict(x).asnumpy()
    got = nn.GraphCell(ms.load(path))(x).asnumpy()
    np.testing.assert_array_equal(got, expected)


def test_gpt_block_mindir_roundtrip(tmp_path):
    ms.set_seed(3)
    net, ids = GPTBlock(), _ids()
    path = ms.export(net, ids, file_name=str(tmp_path / "gpt"))
    np.testing.assert_array_equal(nn.GraphCell(ms.load(path))(ids).asnumpy(), ms.Model(net).predict(ids).asnumpy())


@pytest.mark.parametrize("name", sorted(op_cases()))
def test_every_op_round_trips_exactly(tmp_path, name):
    """Each op as MindSpore's primitive (constant inputs, tuple outputs...) and back runs as before."""
    net, inputs = op_cases()[name]
    xs = [ms.Tensor(a) for a in inputs]
    want = outputs(net(*xs))
    got = outputs(nn.GraphCell(ms.load(ms.export(net, *xs, file_name=str(tmp_path / name))))(*xs))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def test_op_cases_cover_the_table():
    used = {s.prim.name for net, inputs in op_cases().values()
            for s in trace_network(net, [ms.Tensor(a) for a in inputs]).steps}
    assert set(mindir_ops()) <= used, sorted(set(mindir_ops()) - used)


def test_tuple_output_and_params_init(tmp_path):
    class Two(nn.Cell):
        def __init__(self):
            super().__init__()
            self.dense = nn.Dense(3, 2)

        def construct(self, x):
            y = self.dense(x)
            return y, ops.relu(y)

    ms.set_seed(4)
    net, x = Two(), _x((5, 3))
    graph = ms.load(ms.export(net, x, file_name=str(tmp_path / "two")))
    a, b = nn.GraphCell(graph)(x)
    ea, eb = net(x)
    np.testing.assert_array_equal(a.asnumpy(), ea.asnumpy())
    np.testing.assert_array_equal(b.asnumpy(), eb.asnumpy())
    zero = {"dense.bias": np.zeros(2, np.float32)}
    a0, _ = nn.GraphCell(graph, params_init=zero)(x)
    np.testing.assert_allclose(a0.asnumpy(), ea.asnumpy() - net.dense.bias.asnumpy(), rtol=1e-6, atol=1e-6)


def test_file_layout_and_field_numbers(tmp_path):
    ms.set_seed(5)
    path = ms.export(seed_network(shard=False), _x(), file_name=str(tmp_path / "seed"))
    data = Path(path).read_bytes()
    model = pb.ModelProto.FromString(data)
    assert (model.ir_version, model.mind_ir_version, model.little_endian) == ("1.1", 3, True)
    assert not model.HasField("parallel")
    top = _fields(data)
    nums = {n for n, _, _ in top}
    assert {1, 2, 5, 7, 10, 12, 13, 14} <= nums and 11 not in nums
    assert next(v for n, _, v in top if n == 1) == b"1.1" and next(v for n, _, v in top if n == 13) == 3
    graph = next(v for n, _, v in top if n == 7)
    gnums = _numbers(graph)
    assert {1, 2, 3, 5, 6} <= gnums  # node, name, parameter, input, output
    params = [v for n, _, v in _fields(graph) if n == 3]
    assert len(params) == 6
    first = {n: v for n, _, v in _fields(params[0])}
    assert {1, 2, 7, 9, 13} <= set(first)  # dims, data_type, name, raw_data, ref_key
    gname = next(v for n, _, v in _fields(graph) if n == 2)
    assert first[13] == b"layer1.weight" and first[7] == gname + b":layer1.weight" and first[2] == 1
    node = next(v for n, _, v in _fields(graph) if n == 1)
    assert next(v for n, _, v in _fields(node) if n == 4).startswith(b"REF::Flatten:")
    prim = next(v for n, _, v in top if n == 12)
    assert {1, 2, 5} <= _numbers(prim)
    w = model.graph.parameter[0]
    np.testing.assert_array_equal(np.frombuffer(w.raw_data, "<f4").reshape(tuple(w.dims)),
                                  ms.load(path).weights()["layer1.weight"])


def test_external_data(tmp_path):
    ms.set_seed(6)
    net, x = seed_network(shard=False), _x()
    path = ms.export(net, x, file_name=str(tmp_path / "big"), total_save=0)
    data_file = tmp_path / "big_variables" / "data_0"
    assert data_file.is_file()
    model = pb.ModelProto.FromString(Path(path).read_bytes())
    for t in model.graph.parameter:
        assert not t.raw_data and t.external_data.location == "big_variables/data_0"
        assert t.external_data.offset % 64 == 0
    np.testing.assert_array_equal(nn.GraphCell(ms.load(path))(x).asnumpy(), net(x).asnumpy())
    data_file.write_bytes(data_file.read_bytes()[:1000])
    with pytest.raises(FormatError, match="past the end"):
        ms.load(path)


# ------------------------------------------------------------------------- ONNX
def _onnx_run(path, feeds):
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(path))
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_onnx_seed_network(tmp_path):
    import onnx

    ms.set_seed(7)
    net, x = seed_network(shard=False), _x()
    path = ms.export(net, x, file_name=str(tmp_path / "seed"), file_format="ONNX")
    model = onnx.load(path)
    assert [n.op_type for n in model.graph.node] == ["Flatten", "Gemm", "Add", "Relu", "Gemm", "Add", "Relu",
                                                     "Gemm", "Add"]
    assert {i.name for i in model.graph.initializer} >= {"layer1.weight", "layer3.bias"}
    assert model.opset_import[0].version >= 17 and model.graph.input[0].name == "x"
    out = _onnx_run(path, {"x": x.asnumpy()})[0]
    np.testing.assert_allclose(out, ms.Model(net).predict(x).asnumpy(), rtol=1e-5, atol=1e-5)


def test_onnx_gpt_block(tmp_path):
    ms.set_seed(8)
    net, ids = GPTBlock(), _ids()
    path = ms.export(net, ids, file_name=str(tmp_path / "gpt"), file_format="ONNX")
    out = _onnx_run(path, {"ids": ids.asnumpy()})[0]
    np.testing.assert_allclose(out, ms.Model(net).predict(ids).asnumpy(), rtol=1e-5, atol=1e-5)


def test_onnx_refuses_distributed_trace():
    with pytest.raises(OnnxExportError, match="MINDIR"):
        check_exportable(Trace(sharded=True, device_num=8))


def test_bad_format_argument(tmp_path):
    with pytest.raises(ValueError, match="file_format"):
        ms.export(nn.ReLU(), _x((2, 2)), file_name=str(tmp_path / "r"), file_format="AIR")


# ------------------------------------------------------------------------- bad input
@pytest.fixture
def seed_file(tmp_path):
    ms.set_seed(9)
    return ms.export(seed_network(shard=False), _x(), file_name=str(tmp_path / "seed"))


def test_wrong_input_shape(seed_file):
    cell = nn.GraphCell(ms.load(seed_file))
    with pytest.raises(ValueError, match=r"input '.*:x'.*\(2, 1, 28, 28\).*\(4, 1, 28, 28\)"):
        cell(_x((2, 1, 28, 28)))
    with pytest.raises(TypeError, match="expected 1 input"):
        cell(_x(), _x())


@pytest.mark.parametrize("fraction", [0.0005, 0.3, 0.6, 0.9, 0.9999])
def test_truncated_file(seed_file, tmp_path, fraction):
    data = Path(seed_file).read_bytes()
    cut = tmp_path / "cut.mindir"
    cut.write_bytes(data[:max(1, int(len(data) * fraction))])
    with pytest.raises(FormatError, match="cut.mindir"):
        ms.load(str(cut))


def test_non_mindir_files(tmp_path, mindir_fixtures):
    for name, content in (("text.mindir", b"hello, I am not a model\n"), ("empty.mindir", b""),
                          ("noise.mindir", np.random.default_rng(0).bytes(4096))):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(FormatError, match=name):
            ms.load(str(tmp_path / name))
    with pytest.raises(ValueError, match=r"seed_net\.onnx.*\.mindir|\.mindir.*seed_net\.onnx"):
        ms.load(str(mindir_fixtures / "seed_net.onnx"))


def test_older_distinfer_format_is_refused(seed_file, tmp_path):
    """Format "1" files carried distinfer-only node attributes; they are refused with the reason."""
    model = pb.ModelProto.FromString(Path(seed_file).read_bytes())
    model.user_info["distinfer.format"] = "1"
    old = tmp_path / "old.mindir"
    old.write_bytes(model.SerializeToString())
    with pytest.raises(FormatError, match=r"old\.mindir: written by an older distinfer \(format '1'.*export the "
                                          r"network again"):
        ms.load(str(old))


def test_unsupported_node(seed_file, tmp_path):
    model = pb.ModelProto.FromString(Path(seed_file).read_bytes())
    model.primitives[0].op_type = "FancyOp"
    bad = tmp_path / "fancy.mindir"
    bad.write_bytes(model.SerializeToString())
    with pytest.raises(UnsupportedOpError, match=r"node '.*:CNode_\d+:\d+' has operator 'FancyOp' \(REF::Flatten:\d+\)"):
        ms.load(str(bad))


def test_hostile_attribute_is_not_applied(seed_file, tmp_path):
    """Attributes an op does not have (e.g. a method name) are ignored, never executed."""
    from distinfer.exporter._codec import encode_value

    model = pb.ModelProto.FromString(Path(seed_file).read_bytes())
    for prim in model.primitives:
        prim.attribute.append(encode_value("kernel", "os.system('echo pwned')"))
        prim.attribute.append(encode_value("__class__", "int"))
    bad = tmp_path / "hostile.mindir"
    bad.write_bytes(model.SerializeToString())
    x = _x()
    np.testing.assert_array_equal(nn.GraphCell(ms.load(str(bad)))(x).asnumpy(),
                                  nn.GraphCell(ms.load(seed_file))(x).asnumpy())


# ------------------------------------------------------------------------- MPI
def _launch(n: int, out: Path, dataset: str, env: dict | None = None, script: str = "export_seed.py") -> None:
    from distinfer.launch import mpirun_command, mpirun_env

    cmd = mpirun_command(n, [str(ROOT / "tests" / "mpi" / script), str(out)] + ([dataset] if dataset else []))
    proc = subprocess.run(cmd, env=mpirun_env({**os.environ, **(env or {})}, n), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(proc.stdout.split()) == sorted(sum([["OK", str(r)] for r in range(n)], [])), proc.stdout


@pytest.fixture(scope="module")
def export_8(tmp_path_factory, ms_fixtures) -> Path:
    out = tmp_path_factory.mktemp("mindir8")
    _launch(8, out, "data_parallel", {"EXPORT_FULL_WEIGHTS": str(ms_fixtures / "distributed/seed_8dev/full.npz")})
    return out


def test_mpi_8_ranks_roundtrip_and_layouts(export_8):
    files = sorted(os.listdir(export_8))
    assert [f for f in files if f.endswith(".mindir")] == [f"net_rank_{r}.mindir" for r in range(8)]
    data = (export_8 / "net_rank_2.mindir").read_bytes()
    par = next(v for n, _, v in _fields(data) if n == 11)
    lay = next(v for n, _, v in _fields(par) if n == 1)
    assert {1, 2, 3, 4, 5, 6} <= _numbers(lay)
    g = ms.load(str(export_8 / "net_rank_2.mindir"))
    assert g.parameter_layout_dict()["layer1.weight"] == [[2, 2, 2], [-1, 1], [784, 256], 0, True, ""]
    assert g.parameter_layout_dict()["layer3.weight"] == [[2, 2, 2], [1, -1], [256, 10], 0, True, ""]
    np.testing.assert_array_equal(g.weights()["layer1.weight"], np.load(
        ROOT.parent / "shared/fixtures/mindspore/distributed/seed_8dev/full.npz")["layer1.weight"][:, 256:])
    # Rank 2's communication, as MindSpore's primitives over MindSpore-named groups: the batch rows
    # gathered 8 -> 2 ways, layer1's column halves gathered back, rows again for layer3, whose
    # split contraction is summed.
    prims = [g.primitives[n.op_type[5:]] for n in g.nodes if n.op_type.startswith("REF::")]
    comm = [(p.op_type, attrs["group"], attrs["group_ranks"]) for p in prims
            if "group" in (attrs := {a.name: decode_value(a) for a in p.attribute})]
    four, two = "4-6301172352641561019", "2-5208665662337742843"
    assert comm == [("AllGather", four, "0-1-2-3"), ("AllGather", two, "0-2"), ("AllGather", four, "0-1-2-3"),
                    ("AllReduce", two, "0-2")]
    assert g.groups == {four: [0, 1, 2, 3], two: [0, 2]}


def test_mpi_8_wrong_rank_count(export_8):
    with pytest.raises(CommError, match=r"8-rank export.*1 rank"):
        nn.GraphCell(ms.load(str(export_8 / "net_rank_3.mindir")))


@pytest.fixture(scope="module")
def changed_npz(export_8, ms_fixtures) -> Path:
    """The seed weights with layer3.weight moved by +1 (every other tensor as exported)."""
    other = np.load(ms_fixtures / "distributed" / "seed_8dev" / "full.npz")
    changed = {k: other[k] for k in other.files}
    changed["layer3.weight"] = changed["layer3.weight"] + 1
    path = export_8.parent / "changed.npz"
    np.savez(path, **changed)
    return path


def test_verify_export_against_checkpoints(export_8, ms_fixtures, changed_npz):
    dist = ms_fixtures / "distributed" / "seed_8dev"
    assert verify_export(str(export_8), checkpoint=str(dist / "full.npz")).ok
    report = verify_export(str(export_8), checkpoint=str(dist), strategy=str(ms_fixtures / "strategy/seed_8dev.ckpt"))
    assert report.ok, str(report)
    report = verify_export(str(export_8), checkpoint=str(changed_npz))
    assert not report.ok
    assert set(report.mismatches) == {"layer3.weight"} and "max abs diff 1" in report.mismatches["layer3.weight"]


def test_verify_cli(export_8, ms_fixtures, changed_npz, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    ns = parser.parse_args(["verify", str(export_8), "--checkpoint",
                            str(ms_fixtures / "distributed/seed_8dev/full.npz")])
    assert ns.func(ns) == 0
    assert "0 mismatch" in capsys.readouterr().out
    from distinfer import cli

    # Always run (it used to depend on another test having written changed.npz first).
    assert cli.main(["verify", str(export_8), "--checkpoint", str(changed_npz)]) == 1
    out = capsys.readouterr().out
    assert "6 parameter(s) checked, 1 mismatch(es)" in out and "layer3.weight: values differ" in out, out
    assert cli.main(["verify", str(export_8), "--checkpoint", str(ms_fixtures / "distributed/seed_8dev"),
                     "--strategy", str(ms_fixtures / "strategy/seed_8dev.ckpt")]) == 0


def test_mpi_2_ranks_full_batch(tmp_path):
    _launch(2, tmp_path, "full_batch")
    g = ms.load(str(tmp_path / "net_rank_1.mindir"))
    assert g.device_num == 2 and g.rank == 1


def test_mpi_4_ranks_gpt_block_and_out_strategy(tmp_path):
    """Megatron-style tensor parallel GPT block (vocab-split Gather, row-parallel projections) and a
    MatMul out_strategy (reduce-scatter) round-trip exactly."""
    _launch(4, tmp_path, "", script="export_gpt.py")
    g = ms.load(str(tmp_path / "gpt_rank_0.mindir"))
    kinds = {g.primitives[n.op_type[5:]].op_type for n in g.nodes if n.op_type.startswith("REF::")}
    assert {"Gather", "LayerNorm", "Split", "BatchMatMul", "Softmax", "AllReduce"} <= kinds
    g = ms.load(str(tmp_path / "mm_rank_1.mindir"))
    kinds = [g.primitives[n.op_type[5:]].op_type for n in g.nodes if n.op_type.startswith("REF::")]
    assert "ReduceScatter" in kinds  # the out_strategy's reduction straight into a row split
    g = ms.load(str(tmp_path / "rows_rank_1.mindir"))
    comm = [(p.op_type, attrs) for p in (g.primitives[n.op_type[5:]] for n in g.nodes if n.op_type.startswith("REF::"))
            if p.op_type in ("Send", "Receive") for attrs in [{a.name: decode_value(a) for a in p.attribute}]]
    # Rank 1 holds rows 4:6 and needs rows 2:4, which rank 2 holds (and rank 2 needs rank 1's).
    assert [(op, a.get("dest_rank", a.get("src_rank")), a["shape"]) for op, a in comm] == \
        [("Send", 2, (2, 4)), ("Receive", 2, [2, 4])]


def test_indexing_is_traced_not_frozen(tmp_path):
    """``x[...]`` inside construct is an op: exports replay it on new inputs (MINDIR and ONNX)."""
    import onnxruntime as ort

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.d = nn.Dense(4, 3)

        def construct(self, x):
            return self.d(x[:, 1]) + x[::-1, None, 2, 1:4].reshape(2, 3) + x[-1, ::-2, 0].sum()

    net = Net()
    x = ms.Tensor(np.random.RandomState(0).randn(2, 5, 4).astype(np.float32))
    x2 = ms.Tensor(np.random.RandomState(1).randn(2, 5, 4).astype(np.float32))
    mindir = ms.export(net, x, file_name=str(tmp_path / "idx"))
    np.testing.assert_array_equal(nn.GraphCell(ms.load(mindir))(x2).asnumpy(), net(x2).asnumpy())
    onnx_file = ms.export(net, x, file_name=str(tmp_path / "idx"), file_format="ONNX")
    sess = ort.InferenceSession(onnx_file)
    out = sess.run(None, {sess.get_inputs()[0].name: x2.asnumpy()})[0]
    np.testing.assert_allclose(out, net(x2).asnumpy(), rtol=1e-6, atol=1e-6)


class _ExactGeLU(nn.Cell):
    """Dense then ``ops.gelu`` with its default ``approximate="none"`` (Erf inside)."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(4, 3)

    def construct(self, x):
        return ops.gelu(self.dense(x))


def test_exact_gelu_predicts_exports_and_reloads(tmp_path):
    ms.set_seed(3)
    net = _ExactGeLU()
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    h = x.astype(np.float64) @ net.dense.weight.asnumpy().T.astype(np.float64) + net.dense.bias.asnumpy()
    want = 0.5 * h * (1 + np.frompyfunc(math.erf, 1, 1)(h / math.sqrt(2)).astype(np.float64))
    got = ms.Model(net).predict(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    onnx_path = ms.export(net, ms.Tensor(x), file_name=str(tmp_path / "gelu"), file_format="ONNX")
    np.testing.assert_allclose(_onnx_run(onnx_path, {"x": x})[0], got, rtol=1e-6, atol=1e-6)
    mindir = ms.export(net, ms.Tensor(x), file_name=str(tmp_path / "gelu"))
    np.testing.assert_array_equal(nn.GraphCell(ms.load(mindir))(ms.Tensor(x)).asnumpy(), got)


def test_gelu_refuses_unknown_approximation():
    with pytest.raises(ValueError, match="'none' or 'tanh'"):
        ops.gelu(ms.Tensor(np.ones(2, np.float32)), approximate="erf")
