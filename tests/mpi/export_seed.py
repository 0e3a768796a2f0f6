"""MPI body of tests/test_export.py: every rank exports its MindIR, loads it back and compares.

    python -m distinfer.launch -n 8 tests/mpi/export_seed.py OUT_DIR data_parallel
    python -m distinfer.launch -n 2 tests/mpi/export_seed.py OUT_DIR full_batch

Prints ``OK <rank>`` when this rank's GraphCell output equals ``Model.predict`` exactly and
the file's layout records equal ``infer_predict_layout``.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

import distinfer as ms  # noqa: E402
from distinfer import nn  # noqa: E402
from distinfer.communication import _backend, get_group_size, get_rank, init  # noqa: E402
from distinfer.errors import CommError  # noqa: E402
from seed_net import seed_network  # noqa: E402


def main(out_dir: str, dataset: str) -> None:
    ms.set_seed(7)
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", dataset_strategy=dataset)
    init()
    rank, size = get_rank(), get_group_size()
    net = seed_network(shard=False)
    if size == 8:
        net.layer1.matmul.shard(((2, 1), (1, 2)))
        net.layer3.matmul.shard(((2, 2), (2, 1)))
    else:  # 2 ranks: column split of layer1, split contraction (AllReduce) in layer3
        net.layer1.matmul.shard(((1, 1), (1, 2)))
        net.layer3.matmul.shard(((1, 2), (2, 1)))
    full = np.random.default_rng(5).random((16, 1, 28, 28), dtype=np.float32)
    local = full if dataset == "full_batch" else np.split(full, size)[rank]
    x = ms.Tensor(local)
    full_weights = os.environ.get("EXPORT_FULL_WEIGHTS")
    if full_weights:  # start from a full checkpoint (sliced by the first consumer)
        data = np.load(full_weights)
        for name, p in net.parameters_and_names():
            p.set_data(ms.Tensor(data[name]))
    path = ms.export(net, x, file_name=os.path.join(out_dir, f"net_rank_{rank}"))
    model = ms.Model(net)
    expected = model.predict(x).asnumpy()
    layouts = model.infer_predict_layout(x)
    graph = ms.load(path)
    got = nn.GraphCell(graph)(x).asnumpy()
    assert np.array_equal(got, expected), f"rank {rank}: GraphCell differs from predict by {np.abs(got - expected).max()}"
    recorded = graph.parameter_layout_dict()
    for name, entry in layouts.items():
        assert recorded[name] == entry[:6], f"rank {rank}: {name} layout {recorded[name]} != {entry[:6]}"
    assert set(recorded) == set(layouts), (sorted(recorded), sorted(layouts))
    _backend.world().barrier()
    other = ms.load(os.path.join(out_dir, f"net_rank_{(rank + 1) % size}.mindir"))
    try:
        nn.GraphCell(other)
    except CommError as e:
        other_rank = (rank + 1) % size
        want = f"is rank {other_rank}'s part of a {size}-rank export, but it is being run on rank {rank}"
        assert f"net_rank_{other_rank}.mindir" in str(e) and want in str(e), e
    else:
        raise AssertionError("loading another rank's file did not fail")
    try:
        ms.export(net, x, file_name=os.path.join(out_dir, f"net_rank_{rank}"), file_format="ONNX")
    except ValueError as e:
        assert "MINDIR" in str(e), e
    else:
        raise AssertionError("ONNX export of a distributed network did not fail")
    print(f"OK {rank}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
