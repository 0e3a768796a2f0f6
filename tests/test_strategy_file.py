"""Strategy files against MindSpore-made fixtures (spec §3, §8)."""
from __future__ import annotations

import json

import pytest

from distinfer.errors import FormatError, LayoutError
from distinfer.io import (ParamLayout, StrategyFile, StrategyTypeError, build_searched_strategy,
                          merge_pipeline_strategys, read_strategy, split_stage_name, write_strategy)

FILES = ["seed_8dev.ckpt", "seed_8dev.json", "dst_4dev.ckpt", "opt_4dev.ckpt",
         "pipeline/stages/src_strategy_0.ckpt", "pipeline/stages/src_strategy_4.ckpt",
         "pipeline/merged.ckpt"]


@pytest.fixture(scope="module")
def expected(ms_fixtures):
    return json.loads((ms_fixtures / "strategy" / "expected.json").read_text())["files"]


@pytest.mark.parametrize("fn", FILES)
def test_reads_like_build_searched_strategy(ms_fixtures, expected, fn):
    want = expected[fn]["build_searched_strategy"]
    sf = read_strategy(ms_fixtures / "strategy" / fn)
    assert sf.current_stage == 1
    assert set(sf.layouts) == set(want)
    if not fn.endswith(".json"):
        assert list(sf.layouts) == list(want)  # file order
    searched = build_searched_strategy(ms_fixtures / "strategy" / fn)
    for name, w in want.items():
        lay = sf.layouts[name]
        got = {"dev_matrix": lay.dev_matrix, "tensor_map": lay.tensor_map,
               "param_split_shape": lay.param_split_shape, "field": lay.field,
               "opt_weight_shard_step": lay.opt_weight_shard_step,
               "opt_weight_shard_size": lay.opt_weight_shard_size}
        assert got == w
        pbl = searched[name]
        assert list(pbl.dev_matrix[0].dim) == w["dev_matrix"]
        assert list(pbl.tensor_map[0].dim) == w["tensor_map"]
        assert len(pbl.param_split_shape) == 1 and list(pbl.param_split_shape[0].dim) == []
        assert (pbl.field, pbl.opt_weight_shard_step, pbl.opt_weight_shard_size) == \
            (w["field"], w["opt_weight_shard_step"], w["opt_weight_shard_size"])


def test_merged_items_and_names(ms_fixtures, expected):
    info = expected["pipeline/merged.ckpt"]
    sf = read_strategy(ms_fixtures / "strategy" / "pipeline" / "merged.ckpt")
    assert list(sf.layouts) == info["layout_names"]
    assert [[k, stage] for k, (stage, _) in sf.items.items()] == info["strategy_items"]
    assert split_stage_name("1-layer2.weight") == (1, "layer2.weight")


@pytest.mark.parametrize("fn", FILES)
def test_write_is_byte_identical(ms_fixtures, tmp_path, fn):
    src = ms_fixtures / "strategy" / fn
    out = tmp_path / src.name
    write_strategy(out, read_strategy(src))
    assert out.read_bytes() == src.read_bytes()


def test_seed_content_from_scratch(ms_fixtures, tmp_path):
    """The seed network's strategy built by hand equals MindSpore's file byte for byte."""
    items = {"MatMul_layer1.weight": (0, [[2, 1], [1, 2]]), "Add_layer1.bias": (0, [[8, 1], [1]]),
             "MatMul_layer2.weight": (0, [[8, 1], [1, 1]]), "Add_layer2.bias": (0, [[8, 1], [1]]),
             "MatMul_layer3.weight": (0, [[2, 2], [2, 1]]), "Add_layer3.bias": (0, [[8, 1], [1]])}
    shapes = {"layer1.weight": [784, 512], "layer1.bias": [512], "layer2.weight": [512, 512],
              "layer2.bias": [512], "layer3.weight": [512, 10], "layer3.bias": [10]}
    maps = {"layer1.weight": ([2, 2, 2], [-1, 1]), "layer3.weight": ([2, 2, 2], [1, -1])}
    layouts = {n: ParamLayout(*maps.get(n, ([8], [-1] * len(s)))) for n, s in shapes.items()}
    write_strategy(tmp_path / "s.ckpt", StrategyFile(items, layouts))
    assert (tmp_path / "s.ckpt").read_bytes() == (ms_fixtures / "strategy" / "seed_8dev.ckpt").read_bytes()
    for n, s in shapes.items():
        layouts[n].tensor_shape = s
    write_strategy(tmp_path / "s.json", StrategyFile(items, layouts))
    assert (tmp_path / "s.json").read_bytes() == (ms_fixtures / "strategy" / "seed_8dev.json").read_bytes()
    lay = read_strategy(tmp_path / "s.json").layouts["layer1.weight"].to_layout()
    assert [lay.box(r)[1] for r in range(8)] == [(0, 256), (0, 256), (256, 512), (256, 512)] * 2


def test_merge_pipeline(ms_fixtures, tmp_path):
    dst = tmp_path / "merged.ckpt"
    merge_pipeline_strategys(ms_fixtures / "strategy" / "pipeline" / "stages", dst)
    assert dst.read_bytes() == (ms_fixtures / "strategy" / "pipeline" / "merged.ckpt").read_bytes()
    # Duplicates (same bytes / same stage) are skipped; mixing .ckpt and .json is refused.
    stages = tmp_path / "stages"
    stages.mkdir()
    for n in ("src_strategy_0.ckpt", "src_strategy_4.ckpt"):
        (stages / n).write_bytes((ms_fixtures / "strategy" / "pipeline" / "stages" / n).read_bytes())
    (stages / "src_strategy_1.ckpt").write_bytes((stages / "src_strategy_0.ckpt").read_bytes())
    merge_pipeline_strategys(stages, tmp_path / "m2.ckpt")
    assert (tmp_path / "m2.ckpt").read_bytes() == dst.read_bytes()
    (stages / "x.json").write_text("{}")
    with pytest.raises(FormatError, match=r"stages: holds both .ckpt and .json strategy files"):
        merge_pipeline_strategys(stages, tmp_path / "m3.ckpt")


def test_to_layout_opt_shard(ms_fixtures):
    sf = read_strategy(ms_fixtures / "strategy" / "opt_4dev.ckpt")
    l2 = sf.layouts["layer2.weight"].to_layout((512, 512))
    assert [l2.box(r)[0] for r in range(4)] == [(0, 128), (128, 256), (256, 384), (384, 512)]
    l3 = sf.layouts["layer3.weight"].to_layout((512, 10))
    assert [l3.box(r)[0] for r in range(4)] == [(0, 128), (256, 384), (128, 256), (384, 512)]
    with pytest.raises(LayoutError, match="records no tensor shape; pass shape="):
        ParamLayout([4], [-1]).to_layout()
    with pytest.raises(LayoutError, match=r"manual split param_split_shape=\[3, 5\] is not supported"):
        ParamLayout([2], [0], param_split_shape=[3, 5], indices_offset=[0, 3]).to_layout((8,))


def test_nested_tensor_map_roundtrip(tmp_path):
    sf = StrategyFile(layouts={"w": ParamLayout([2, 2, 2], [(2, 1), -1], param_split_shape=[],
                                                opt_weight_shard_step=1, opt_weight_shard_size=2)})
    for name in ("n.ckpt", "n.json"):
        write_strategy(tmp_path / name, sf)
        got = read_strategy(tmp_path / name).layouts["w"]
        assert got.tensor_map == [(2, 1), -1] and got.opt_weight_shard_size == 2


def test_errors(ms_fixtures, tmp_path):
    assert build_searched_strategy(None) is None
    with pytest.raises(FormatError, match="no such strategy file"):
        build_searched_strategy(tmp_path / "missing.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(FormatError, match="should not be empty"):
        build_searched_strategy(tmp_path / "empty.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"\xff\xff\xff garbage")
    with pytest.raises(TypeError, match="json or protobuf"):
        build_searched_strategy(tmp_path / "bad.ckpt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StrategyTypeError, match=r"bad.json: the strategy file type should be one of json or protobuf"):
        read_strategy(tmp_path / "bad.json")
    (tmp_path / "shape.json").write_text('{"parallel_layout_item": {"w": {"dev_matrix": "x"}}}')
    with pytest.raises(FormatError, match="shape.json"):
        read_strategy(tmp_path / "shape.json")
    assert build_searched_strategy(_write(tmp_path / "none.ckpt", StrategyFile())) == {}
    data = (ms_fixtures / "strategy" / "seed_8dev.ckpt").read_bytes()
    parsed = []
    for cut in range(1, len(data)):
        (tmp_path / "cut.ckpt").write_bytes(data[:cut])
        try:
            read_strategy(tmp_path / "cut.ckpt")
            parsed.append(cut)
        except FormatError as exc:
            assert "cut.ckpt" in str(exc)
    # Protobuf has no record count: only a cut between top-level fields is a valid (shorter) file.
    assert parsed == _field_ends(data)[:-1]


def _field_ends(data: bytes) -> list[int]:
    """Byte offsets where the top-level protobuf fields of ``data`` end (varint and length-delimited)."""
    def varint(pos):
        out = shift = 0
        while True:
            b = data[pos]
            out, shift, pos = out | (b & 0x7F) << shift, shift + 7, pos + 1
            if b < 0x80:
                return out, pos
    ends, pos = [], 0
    while pos < len(data):
        key, pos = varint(pos)
        assert key & 7 in (0, 2), key
        value, pos = varint(pos)
        pos += value if key & 7 == 2 else 0
        ends.append(pos)
    return ends


def _write(path, sf):
    write_strategy(path, sf)
    return path
