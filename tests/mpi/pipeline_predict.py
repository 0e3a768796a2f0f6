"""Pipeline-parallel inference (spec §8): the seed network split into 2 stages of 4 ranks.

Stage 0 runs layer1, stage 1 layer2 and layer3. Each stage loads only its own rank files of the
MindSpore-made ``distributed/pipeline_2x4`` checkpoints (merged pipeline strategy), then predicts;
with ``pipeline_result_broadcast`` every rank gets the result, otherwise only the last stage.
Prints one PASS/FAIL line per rank.

    python -m distinfer.launch -n 8 tests/mpi/pipeline_predict.py <fixtures/mindspore>
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import distinfer as ms  # noqa: E402
from distinfer.communication import get_rank, init  # noqa: E402
from seed_net import Network  # noqa: E402


def numpy_forward(full, x):
    h = x.reshape(len(x), -1).astype(np.float64)
    h = np.maximum(h @ full["layer1.weight"] + full["layer1.bias"], 0)
    h = np.maximum(h @ full["layer2.weight"] + full["layer2.bias"], 0)
    return h @ full["layer3.weight"] + full["layer3.bias"]


def main(fixtures: Path) -> None:
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", pipeline_stages=2, full_batch=True)
    init()
    rank = get_rank()
    stage = rank // 4
    net = Network()
    net.layer1.pipeline_stage = 0
    net.layer2.pipeline_stage = 1
    net.layer3.pipeline_stage = 1
    net.layer1.matmul.shard(((2, 1), (1, 2)))
    net.layer3.matmul.shard(((2, 2), (2, 1)))
    x = np.random.RandomState(5).rand(8, 1, 28, 28).astype(np.float32)
    model = ms.Model(net)
    layout = model.infer_predict_layout(ms.Tensor(x))
    want = {0: {"layer1.weight": ([2, 2], [-1, 0]), "layer1.bias": ([4], [-1])},
            1: {"layer2.weight": ([4], [-1, -1]), "layer2.bias": ([4], [-1]), "layer3.weight": ([2, 2], [0, -1]),
                "layer3.bias": ([4], [-1])}}[stage]
    got = {k: (v[0], v[1]) for k, v in layout.items()}
    src = fixtures / "distributed" / "pipeline_2x4"
    files = [str(src / f"rank_{r}" / "checkpoint-1_1.ckpt") for r in range(4 * stage, 4 * stage + 4)]
    ms.load_distributed_checkpoint(net, files, layout,
                                   train_strategy_filename=str(fixtures / "strategy" / "pipeline" / "merged.ckpt"))
    full = dict(np.load(src / "full.npz", allow_pickle=False))
    ref = numpy_forward(full, x)
    ms.set_auto_parallel_context(pipeline_result_broadcast=True)
    everywhere = model.predict(ms.Tensor(x)).asnumpy()
    ms.set_auto_parallel_context(pipeline_result_broadcast=False)
    last_only = model.predict(ms.Tensor(x)).asnumpy()
    err = float(np.max(np.abs(everywhere - ref)) / np.max(np.abs(ref)))
    own_ok = np.array_equal(last_only, everywhere) if stage == 1 else not last_only.any()
    refused = training_is_refused(net, x)
    ok = got == want and err <= 1e-5 and own_ok and refused
    print(f"{'PASS' if ok else 'FAIL'} rank={rank} stage={stage} layouts={'ok' if got == want else got} "
          f"rel_err={err:.2e} last_stage_only={'ok' if own_ok else 'wrong'} training_refused={refused}", flush=True)


def training_is_refused(net, x) -> bool:
    """Gradients do not cross stages yet: a training step must fail clearly on every rank (no hang)."""
    step = ms.nn.TrainOneStepCell(ms.nn.WithLossCell(net, ms.nn.CrossEntropyLoss()),
                                  ms.nn.SGD(net.trainable_params(), 0.1))
    try:
        step(ms.Tensor(x), ms.Tensor(np.zeros(len(x), np.int32)))
    except RuntimeError as e:
        return "pipeline" in str(e)
    return False


if __name__ == "__main__":
    main(Path(sys.argv[1]))
