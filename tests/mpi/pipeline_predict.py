"""Pipeline parallel (spec §8): the seed network split into 2 stages of 4 ranks.

Stage 0 runs layer1, stage 1 layer2 and layer3. Each stage loads only its own rank files of the
MindSpore-made ``distributed/pipeline_2x4`` checkpoints (merged pipeline strategy), then predicts;
with ``pipeline_result_broadcast`` every rank gets the result, otherwise only the last stage.
Then the same network is trained across the stages (gradients flow back from stage 1 to stage 0)
and must match one process; its per-rank files and per-stage strategy files merge back exactly.
Prints PASS/FAIL lines per rank.

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
    ok = got == want and err <= 1e-5 and own_ok
    print(f"{'PASS' if ok else 'FAIL'} rank={rank} stage={stage} predict layouts={'ok' if got == want else got} "
          f"rel_err={err:.2e} last_stage_only={'ok' if own_ok else 'wrong'}", flush=True)
    train_across_stages(fixtures, rank, stage)
    train_across_stages(fixtures, rank, stage, micro=2)


def build(pipeline: bool, micro: int = 1):
    ms.set_seed(3)
    net = Network()
    if pipeline:
        net.layer1.pipeline_stage = 0
        net.layer2.pipeline_stage = 1
        net.layer3.pipeline_stage = 1
        net.layer1.matmul.shard(((2, 1), (1, 2)))
        net.layer3.matmul.shard(((2, 2), (2, 1)))
    loss_net = ms.nn.WithLossCell(net, ms.nn.CrossEntropyLoss())
    if micro > 1:
        loss_net = ms.nn.PipelineCell(loss_net, micro)
    step = ms.nn.TrainOneStepCell(loss_net, ms.nn.Momentum(net.trainable_params(), 0.05, 0.9))
    return net, step


def train_across_stages(fixtures: Path, rank: int, stage: int, steps: int = 3, micro: int = 1) -> None:
    import tempfile

    from distinfer.communication import _backend
    from distinfer.layout import replicated
    from distinfer.parallel import _executor as ex

    rs = np.random.RandomState(9)
    data = rs.randn(steps, 16, 1, 28, 28).astype(np.float32)
    labels = rs.randint(0, 10, (steps, 16)).astype(np.int32)
    ms.reset_auto_parallel_context()
    ref_net, ref_step = build(False, micro)
    ref_loss = [float(ref_step(ms.Tensor(data[i]), ms.Tensor(labels[i])).asnumpy()) for i in range(steps)]
    ref = {k: p.asnumpy() for k, p in ref_net.parameters_and_names()}

    world = _backend.world()
    out = world.bcast_object(tempfile.mkdtemp(prefix="pp-") if rank == 0 else None)
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", pipeline_stages=2, full_batch=True,
                                 strategy_ckpt_config={"save_file": f"{out}/strategys/src_strategy_{rank}.ckpt"})
    net, step = build(True, micro)
    rec = ex.Recorder()  # the first step records the strategies, as Model.train does
    model_loss = []
    for i in range(steps):
        with ex.recording(rec if i == 0 else None):
            model_loss.append(float(step(ms.Tensor(data[i]), ms.Tensor(labels[i])).asnumpy()))
    mine = {k: p for k, p in net.parameters_and_names() if p.layout is not None}
    gathered = {k: ex.to_layout(p, replicated(p.global_shape, p.layout.num_devices)).asnumpy()
                for k, p in mine.items()}
    loss_err = max(abs(a - b) / abs(b) for a, b in zip(model_loss, ref_loss))
    w_err = max(float(np.max(np.abs(gathered[k] - ref[k])) / np.max(np.abs(ref[k]))) for k in gathered)
    expect = {0: {"layer1.weight", "layer1.bias"}, 1: {"layer2.weight", "layer2.bias", "layer3.weight",
                                                       "layer3.bias"}}[stage]
    ok = loss_err <= 1e-5 and w_err <= 1e-5 and set(gathered) == expect
    print(f"{'PASS' if ok else 'FAIL'} rank={rank} stage={stage} train micro_size={micro} "
          f"loss_err={loss_err:.2e} weight_err={w_err:.2e} params={sorted(gathered)}", flush=True)
    if micro > 1:
        return
    # Per-rank slices and per-rank strategy files, merged as MindSpore's pipeline tutorial does.
    from distinfer.parallel.strategy import save_strategy

    save_strategy(f"{out}/strategys/src_strategy_{rank}.ckpt", rec, step)
    ms.save_checkpoint(net, f"{out}/rank_{rank}/checkpoint-1_{steps}.ckpt", integrated_save=False)
    world.barrier()
    ms.reset_auto_parallel_context()
    if rank == 0:
        ms.merge_pipeline_strategys(f"{out}/strategys", f"{out}/merged.ckpt")
    world.barrier()
    merged = Network()
    files = [f"{out}/rank_{r}/checkpoint-1_{steps}.ckpt" for r in range(4 * stage, 4 * stage + 4)]
    ms.load_distributed_checkpoint(merged, files, None, train_strategy_filename=f"{out}/merged.ckpt")
    m_err = max(float(np.max(np.abs(merged.parameters_dict()[k].asnumpy() - gathered[k]))) for k in gathered)
    print(f"{'PASS' if m_err == 0 else 'FAIL'} rank={rank} stage={stage} merged_back err={m_err:.1e}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
