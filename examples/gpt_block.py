"""A GPT-style transformer block written against the MindSpore API, with Megatron-style strategies.

Swap ``import distinfer as ms`` for ``import mindspore as ms`` and this is a MindSpore script:

* token embedding (``Gather``) with the table split by vocabulary rows, plus a learned position
  embedding;
* pre-LayerNorm causal self-attention: the QKV ``MatMul`` is column-parallel, its output is
  reshaped to ``[batch, seq, heads, 3 * head_dim]`` (the columns of ``w_qkv`` are ordered head by
  head, then q/k/v, then head dim, as in Megatron) and ``Split`` into q, k and v, which are
  transposed to ``[batch, heads, seq, head_dim]``; scores are ``BatchMatMul(transpose_b=True)``
  scaled by ``1/sqrt(head_dim)`` with ``Mul``, masked, ``Softmax``-ed and multiplied by v; the
  output projection is row-parallel (a partial sum reduced once);
* a GeLU MLP, column- then row-parallel, with residual ``Add`` s around both sub-blocks;
* a final LayerNorm and an LM head split by vocabulary columns.

``shard_gpt(net, dp, mp)`` sets the strategies; :func:`gpt_reference` is a plain-numpy forward
pass (float64) over the same parameters, written without distinfer's kernels.

    python -m distinfer.launch -n 8 examples/gpt_block.py --dp 2 --mp 4
"""
from __future__ import annotations

import argparse
import math

import numpy as np

import distinfer as ms
from distinfer import nn, ops
from distinfer.common.initializer import Normal, initializer

__all__ = ["GPTBlock", "TokenLoss", "shard_gpt", "gpt_reference", "causal_mask"]

MASK_VALUE = -1e9


def causal_mask(seq: int) -> np.ndarray:
    """``[1, 1, seq, seq]`` additive mask: 0 on and below the diagonal, ``MASK_VALUE`` above."""
    upper = np.triu(np.ones((seq, seq), dtype=bool), k=1)
    return np.where(upper, MASK_VALUE, 0.0).astype(np.float32).reshape(1, 1, seq, seq)


def _param(shape, sigma: float = 0.02, mean: float = 0.0) -> ms.Parameter:
    return ms.Parameter(initializer(Normal(sigma, mean), list(shape), ms.float32))


class GPTBlock(nn.Cell):
    """Embedding, one pre-LN transformer layer and an LM head; ``construct(ids[B, S]) -> logits[B, S, vocab]``."""

    def __init__(self, vocab: int, hidden: int, heads: int, seq: int, ffn: int | None = None,
                 eps: float = 1e-5, causal: bool = True) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"GPTBlock: hidden {hidden} is not divisible by heads {heads}")
        ffn = 4 * hidden if ffn is None else ffn
        self.vocab, self.hidden, self.heads, self.seq, self.ffn = vocab, hidden, heads, seq, ffn
        self.head_dim = hidden // heads
        self.eps, self.causal = eps, causal
        self._make_params()
        self._make_ops()
        self.mask = ms.Tensor(causal_mask(seq)) if causal else None

    def _make_params(self) -> None:
        h, f = self.hidden, self.ffn
        self.wte = _param((self.vocab, h))
        self.wpe = _param((self.seq, h))
        self.ln1_gamma, self.ln1_beta = _param((h,), 0.1, 1.0), _param((h,))
        self.w_qkv, self.b_qkv = _param((h, 3 * h)), _param((3 * h,))
        self.w_o, self.b_o = _param((h, h)), _param((h,))
        self.ln2_gamma, self.ln2_beta = _param((h,), 0.1, 1.0), _param((h,))
        self.w_fc, self.b_fc = _param((h, f)), _param((f,))
        self.w_proj, self.b_proj = _param((f, h)), _param((h,))
        self.lnf_gamma, self.lnf_beta = _param((h,), 0.1, 1.0), _param((h,))
        self.w_head = _param((h, self.vocab))

    def _make_ops(self) -> None:
        self.gather = ops.Gather()
        self.add_pos = ops.Add()
        self.reshape = ops.Reshape()
        self.ln1 = ops.LayerNorm(-1, -1, self.eps)
        self.qkv = ops.MatMul()
        self.qkv_bias = ops.Add()
        self.split_qkv = ops.Split(axis=3, output_num=3)
        self.transpose_q, self.transpose_k, self.transpose_v = ops.Transpose(), ops.Transpose(), ops.Transpose()
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.scale = ops.Mul()
        self.add_mask = ops.Add()
        self.softmax = ops.Softmax(-1)
        self.context = ops.BatchMatMul()
        self.transpose_ctx = ops.Transpose()
        self.proj = ops.MatMul()
        self.proj_bias = ops.Add()
        self.residual1 = ops.Add()
        self.ln2 = ops.LayerNorm(-1, -1, self.eps)
        self.fc = ops.MatMul()
        self.fc_bias = ops.Add()
        self.gelu = ops.GeLU()
        self.fc_proj = ops.MatMul()
        self.fc_proj_bias = ops.Add()
        self.residual2 = ops.Add()
        self.lnf = ops.LayerNorm(-1, -1, self.eps)
        self.head = ops.MatMul()

    def attention(self, x):
        """Causal multi-head self-attention on ``x[B*S, H]``; returns ``[B*S, H]`` before the residual."""
        b = x.shape[0] // self.seq
        qkv = self.qkv_bias(self.qkv(x, self.w_qkv), self.b_qkv)
        qkv = self.reshape(qkv, (b, self.seq, self.heads, 3 * self.head_dim))
        q, k, v = self.split_qkv(qkv)
        perm = (0, 2, 1, 3)
        q, k, v = self.transpose_q(q, perm), self.transpose_k(k, perm), self.transpose_v(v, perm)
        scores = self.scale(self.scores(q, k), 1.0 / math.sqrt(self.head_dim))
        if self.mask is not None:
            scores = self.add_mask(scores, self.mask)
        ctx = self.context(self.softmax(scores), v)
        ctx = self.reshape(self.transpose_ctx(ctx, perm), (b * self.seq, self.hidden))
        return self.proj_bias(self.proj(ctx, self.w_o), self.b_o)

    def mlp(self, x):
        """GeLU MLP on ``x[B*S, H]``."""
        y = self.gelu(self.fc_bias(self.fc(x, self.w_fc), self.b_fc))
        return self.fc_proj_bias(self.fc_proj(y, self.w_proj), self.b_proj)

    def construct(self, ids):
        b = ids.shape[0]
        h = self.add_pos(self.gather(self.wte, ids, 0), self.wpe)
        h = self.reshape(h, (b * self.seq, self.hidden))
        h = self.residual1(h, self.attention(self.ln1(h, self.ln1_gamma, self.ln1_beta)[0]))
        h = self.residual2(h, self.mlp(self.ln2(h, self.ln2_gamma, self.ln2_beta)[0]))
        logits = self.head(self.lnf(h, self.lnf_gamma, self.lnf_beta)[0], self.w_head)
        return self.reshape(logits, (b, self.seq, self.vocab))


class TokenLoss(nn.Cell):
    """Cross entropy over every token: ``construct(logits[B, S, V], labels[B, S])``."""

    def __init__(self) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss()

    def construct(self, logits, labels):
        return self.ce(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def shard_gpt(net: GPTBlock, dp: int, mp: int) -> GPTBlock:
    """Megatron-style strategies: batch over ``dp``; vocab, QKV/MLP columns and heads over ``mp``."""
    row, rep = (dp, 1), (1,)
    net.gather.shard(((mp, 1), (dp, 1)))
    net.add_pos.shard(((dp, 1, 1), (1, 1)))
    for ln in (net.ln1, net.ln2, net.lnf):
        ln.shard((row, rep, rep))
    net.qkv.shard((row, (1, mp)))
    net.qkv_bias.shard(((dp, mp), (mp,)))
    net.split_qkv.shard(((dp, 1, mp, 1),))
    heads4 = (dp, mp, 1, 1)
    net.scores.shard((heads4, heads4))
    net.scale.shard((heads4, ()))
    net.add_mask.shard((heads4, (1, 1, 1, 1)))
    net.softmax.shard((heads4,))
    net.context.shard((heads4, heads4))
    net.proj.shard(((dp, mp), (mp, 1)))
    net.proj_bias.shard((row, rep))
    net.residual1.shard((row, row))
    net.fc.shard((row, (1, mp)))
    net.fc_bias.shard(((dp, mp), (mp,)))
    net.gelu.shard(((dp, mp),))
    net.fc_proj.shard(((dp, mp), (mp, 1)))
    net.fc_proj_bias.shard((row, rep))
    net.residual2.shard((row, row))
    net.head.shard((row, (1, mp)))
    return net


# ------------------------------------------------------------------ numpy reference
def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _reference_attention(p: dict, x: np.ndarray, heads: int, causal: bool) -> np.ndarray:
    bsz, seq, hidden = x.shape
    d = hidden // heads
    qkv = (x @ p["w_qkv"] + p["b_qkv"]).reshape(bsz, seq, heads, 3, d)
    q, k, v = (qkv[:, :, :, i, :].transpose(0, 2, 1, 3) for i in range(3))  # [B, heads, S, d]
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(d)
    if causal:
        scores = scores + causal_mask(seq).astype(np.float64)
    ctx = np.einsum("bhqk,bhkd->bhqd", _softmax(scores), v)
    return ctx.transpose(0, 2, 1, 3).reshape(bsz, seq, hidden) @ p["w_o"] + p["b_o"]


def gpt_reference(params: dict[str, np.ndarray], ids: np.ndarray, heads: int = 4, eps: float = 1e-5,
                  causal: bool = True) -> np.ndarray:
    """Logits ``[B, S, vocab]`` of :class:`GPTBlock` in float64 numpy, from its full parameters by name."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    ids = np.asarray(ids, dtype=np.int64)
    h = p["wte"][ids] + p["wpe"][None, : ids.shape[1]]
    h = h + _reference_attention(p, _layer_norm(h, p["ln1_gamma"], p["ln1_beta"], eps), heads, causal)
    y = _gelu_tanh(_layer_norm(h, p["ln2_gamma"], p["ln2_beta"], eps) @ p["w_fc"] + p["b_fc"])
    h = h + y @ p["w_proj"] + p["b_proj"]
    return _layer_norm(h, p["lnf_gamma"], p["lnf_beta"], eps) @ p["w_head"]


def full_params(net: GPTBlock) -> dict[str, np.ndarray]:
    """The parameters of a stand-alone (unsliced) network as full numpy arrays."""
    return {name: p.init_data().asnumpy() for name, p in net.parameters_and_names()}


def main() -> None:
    ap = argparse.ArgumentParser(description="Distributed GPT block predict vs the numpy reference")
    ap.add_argument("--dp", type=int, default=1)
    ap.add_argument("--mp", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    from distinfer.communication import get_rank, init

    init()
    cfg = dict(vocab=64, hidden=32, heads=4, seq=8, ffn=64)
    ms.set_seed(7)
    ref_params = full_params(GPTBlock(**cfg))
    ids = np.random.RandomState(0).randint(0, cfg["vocab"], size=(args.batch, cfg["seq"])).astype(np.int32)
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", full_batch=True)
    ms.set_seed(7)
    net = shard_gpt(GPTBlock(**cfg), args.dp, args.mp)
    out = ms.Model(net).predict(ms.Tensor(ids)).asnumpy()
    ref = gpt_reference(ref_params, ids, heads=cfg["heads"])
    err = float(np.abs(out - ref).max() / np.abs(ref).max())
    if get_rank() == 0:
        print(f"GPT block dp={args.dp} mp={args.mp}: logits {out.shape}, max relative error {err:.2e}")


if __name__ == "__main__":
    main()
