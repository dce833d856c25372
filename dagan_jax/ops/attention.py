"""Exact softmax attention whose memory is linear in the number of pixels.

DaGAN's depth-aware attention (CVPR 2022, Sec. 3.3) and DaGAN++'s cross-modal
geometry-guided attention (TPAMI 2023, Sec. 3.3.2, Eq. 13) both compute

    out = softmax(scale * Q K^T) V,      Q (B, N, d), K (B, M, d), V (B, M, C),

with the softmax over the M keys, N = M = h * w pixels of one feature map, and
*no* 1/sqrt(d) factor (the official ``DepthAwareAttention`` has none), hence
``scale=1.0`` by default. The residual ``gamma * out + feat`` and the
projections live in the model, not here.

DaGAN++ applies this at every decoder layer, up to 256x256 maps, where the
(N, M) matrix alone is 65536^2 * 4 bytes = 17 GB per sample in float32. The
``'blockwise'`` implementation never forms it: it loops over query blocks and
key blocks with an online (streaming) softmax, keeping a running row maximum
``m`` and normaliser ``l`` (FlashAttention; Milakov & Gimelshein 2018), and its
backward pass is a ``jax.custom_vjp`` that recomputes probabilities block by
block from the saved output and log-sum-exp (FlashAttention-2's backward), so
forward and backward both need O(B * (N + M) * (d + C)) memory plus one
(block_q, block_k) tile. Results are exact up to float rounding (order of
summation differs from the naive form).

Its CPU shape (measured on the 2-core development machine, XLA:CPU, jax
0.10.2; BENCHMARKS.md): tall, narrow tiles (4096 queries x 128 keys); row
max and sum staged over 32 strided slices (:data:`ROW_GROUPS`); no key mask
when the key blocks divide M; one sample per loop step (:data:`PER_SAMPLE`);
a backward pass that loops over query blocks outside and key blocks inside
and accumulates dK and dV transposed. At the head sizes of DaGAN++'s
256x256 layer (d=8, C=64), forward + backward on a 16384-pixel map went from
1.74 to 0.86 s; at DaGAN's bottleneck (64x64, d=32, C=256) the forward at
batch 16 went from 1.5 to 0.9 s.

Implementations:

``'naive'``      softmax of the full matrix (reference; O(N M) memory).
``'blockwise'``  streaming softmax + recomputing custom VJP (O(N + M) memory).
``'blockwise_checkpoint'``  the same forward, differentiated by JAX autodiff
                 with ``jax.checkpoint`` on the per-block bodies; also
                 memory-linear, slower (it recomputes the forward twice).
``'xla'``        ``jax.nn.dot_product_attention(implementation='xla')`` with an
                 explicit ``scale`` (its default would be 1/sqrt(d)) on the
                 (B, T, 1 head, H) layout; Q and K are zero-padded (or V is) to a
                 common head width, which leaves Q K^T unchanged. XLA's
                 implementation materialises the (N, M) matrix: it is an
                 alternative to 'naive', not a memory saver. It always takes
                 the softmax in float32 (also for float64 inputs).
``'auto'``       'naive' while N * M <= ``AUTO_NAIVE_MAX_ELEMENTS`` (the matrix
                 is at most 8 MB per sample in float32), else 'blockwise'.
                 Measured on XLA:CPU (2 cores, jax 0.10.2; ``benchmarks/``):
                 at N = M = 4096 (DaGAN's 64x64 bottleneck) the blockwise
                 form is 1.45-1.65x faster forward and 1.27x faster forward +
                 backward than the naive one (the 64 MB matrix never goes
                 through memory); at N = M = 1024 they tie.
"""

from __future__ import annotations

import functools
from typing import Literal, Sequence

import jax
import jax.numpy as jnp

Implementation = Literal["auto", "naive", "blockwise", "blockwise_checkpoint",
                         "xla"]

#: 'auto' uses the naive form up to this many entries of the (N, M) matrix.
AUTO_NAIVE_MAX_ELEMENTS = 1 << 21
#: Default (query block, key block) sizes of the blockwise implementation.
DEFAULT_BLOCK_SIZE = (4096, 128)
#: The blockwise implementation loops over the batch (one sample per loop
#: step) instead of carrying it through every tile.
PER_SAMPLE = True


def _check_shapes(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
  if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
    raise ValueError(
        f"attention expects q (B, N, d), k (B, M, d), v (B, M, C); got "
        f"shapes {q.shape}, {k.shape}, {v.shape}")
  if q.shape[0] != k.shape[0] or k.shape[0] != v.shape[0]:
    raise ValueError(f"batch sizes differ: {q.shape}, {k.shape}, {v.shape}")
  if q.shape[2] != k.shape[2]:
    raise ValueError(f"q and k feature sizes differ: {q.shape}, {k.shape}")
  if k.shape[1] != v.shape[1]:
    raise ValueError(f"k and v lengths differ: {k.shape}, {v.shape}")


def naive_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                    scale: float = 1.0, precision=None) -> jax.Array:
  """softmax(scale * q k^T, over keys) v with the full (B, N, M) matrix."""
  s = scale * jnp.einsum("bnd,bmd->bnm", q, k, precision=precision)
  p = jax.nn.softmax(s, axis=-1)  # (B, N, M)
  return jnp.einsum("bnm,bmc->bnc", p, v, precision=precision)


def attention_rows(q: jax.Array, k: jax.Array, rows: jax.Array | Sequence[int],
                   scale: float = 1.0, precision=None) -> jax.Array:
  """Selected rows of the attention matrix softmax(scale * q k^T).

  Args:
    q: (B, N, d) queries; k: (B, M, d) keys.
    rows: (R,) integer query indices.
  Returns:
    (B, R, M): row ``r`` is the distribution over keys of query ``rows[r]``.
    Costs O(R * M) memory, so rows of a 65536-pixel map can be inspected.
  """
  rows = jnp.asarray(rows, dtype=jnp.int32)
  s = scale * jnp.einsum("brd,bmd->brm", q[:, rows], k, precision=precision)
  return jax.nn.softmax(s, axis=-1)


def _block_sizes(block_size: int | tuple[int, int] | None, n: int,
                 m: int) -> tuple[int, int]:
  if block_size is None:
    bq, bk = DEFAULT_BLOCK_SIZE
  elif isinstance(block_size, int):
    bq = bk = block_size
  else:
    bq, bk = block_size
  if bq < 1 or bk < 1:
    raise ValueError(f"block sizes must be positive; got {block_size}")
  return min(bq, n), min(bk, m)


def _to_blocks(x: jax.Array, block: int) -> jax.Array:
  """(B, L, F) -> (ceil(L / block), B, block, F), zero-padded along L."""
  b, length, f = x.shape
  nb = -(-length // block)
  x = jnp.pad(x, ((0, 0), (0, nb * block - length), (0, 0)))
  return x.reshape(b, nb, block, f).transpose(1, 0, 2, 3)


def _from_blocks(x: jax.Array, length: int) -> jax.Array:
  """(nb, B, block, F) -> (B, length, F), dropping the padding."""
  nb, b, block, f = x.shape
  return x.transpose(1, 0, 2, 3).reshape(b, nb * block, f)[:, :length]


def _key_valid(m: int, bk: int) -> jax.Array | None:
  """(nk, bk) booleans: which padded key slots hold real keys; None when
  ``bk`` divides ``m`` (no padding, nothing to mask)."""
  if m % bk == 0:
    return None
  nk = -(-m // bk)
  return (jnp.arange(nk * bk) < m).reshape(nk, bk)


#: Row reductions over a key block are taken in two stages: first across
#: this many strided slices of the block (an elementwise max / sum of
#: contiguous rows of width bk / ROW_GROUPS, which XLA fuses with the
#: producer), then over the remaining bk / ROW_GROUPS entries. A plain
#: ``s.max(-1)`` over more than 32 entries is rewritten by XLA:CPU into an
#: unfused ``reduce-window`` that reads the (bq, bk) tile again; the staged
#: form makes the streaming forward ~20% faster on CPU (BENCHMARKS.md).
ROW_GROUPS = 32


def _row_reduce(x: jax.Array, op: str) -> jax.Array:
  """max or sum of ``x`` (..., bk) over its last axis, staged (ROW_GROUPS)."""
  fn = jnp.max if op == "max" else jnp.sum
  bk = x.shape[-1]
  if bk > ROW_GROUPS and bk % ROW_GROUPS == 0:
    x = fn(x.reshape(x.shape[:-1] + (ROW_GROUPS, bk // ROW_GROUPS)), axis=-2)
  return fn(x, axis=-1)


def _forward_blocks(qb: jax.Array, kb: jax.Array, vb: jax.Array,
                    valid: jax.Array, scale: float, precision,
                    checkpoint: bool) -> tuple[jax.Array, jax.Array]:
  """Streaming-softmax forward over blocked q, k, v.

  Args:
    qb: (nq, B, bq, d); kb: (nk, B, bk, d); vb: (nk, B, bk, C);
    valid: (nk, bk) mask of real keys, or None (no padded keys). Key block 0
      always holds key 0, so the running maximum is finite after the first
      step and masked logits (-inf) contribute exp(-inf) = 0.
  Returns:
    out (nq, B, bq, C) and the row log-sum-exp (nq, B, bq).
  """
  _, b, bq, _ = qb.shape
  c = vb.shape[-1]

  def key_step(qi, carry, xs):
    m_run, l_run, acc = carry  # (B, bq), (B, bq), (B, bq, C)
    kj, vj, valid_j = xs  # (B, bk, d), (B, bk, C), (bk,) or None
    s = scale * jnp.einsum("bqd,bkd->bqk", qi, kj, precision=precision)
    if valid_j is not None:
      s = jnp.where(valid_j[None, None, :], s, -jnp.inf)  # (B, bq, bk)
    # The output does not depend on the running maximum: no gradient through
    # it (exact, and avoids max's subgradient in the checkpointed variant).
    m_new = jax.lax.stop_gradient(jnp.maximum(m_run, _row_reduce(s, "max")))
    p = jnp.exp(s - m_new[..., None])  # (B, bq, bk)
    corr = jnp.exp(m_run - m_new)  # (B, bq); 0 on the first step
    l_new = l_run * corr + _row_reduce(p, "sum")
    acc = acc * corr[..., None] + jnp.einsum("bqk,bkc->bqc", p, vj,
                                             precision=precision)
    return (m_new, l_new, acc), None

  def query_block(qi):
    step = functools.partial(key_step, qi)
    if checkpoint:
      step = jax.checkpoint(step)
    init = (jnp.full((b, bq), -jnp.inf, qi.dtype),
            jnp.zeros((b, bq), qi.dtype),
            jnp.zeros((b, bq, c), qi.dtype))
    (m_run, l_run, acc), _ = jax.lax.scan(step, init, (kb, vb, valid))
    return acc / l_run[..., None], m_run + jnp.log(l_run)

  if checkpoint:
    query_block = jax.checkpoint(query_block)
  return jax.lax.map(query_block, qb)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _flash(q: jax.Array, k: jax.Array, v: jax.Array, scale: float, bq: int,
           bk: int, precision) -> jax.Array:
  out, _ = _flash_fwd(q, k, v, scale, bq, bk, precision)
  return out


def _flash_fwd(q, k, v, scale, bq, bk, precision):
  n, m = q.shape[1], k.shape[1]
  out_b, lse_b = _forward_blocks(_to_blocks(q, bq), _to_blocks(k, bk),
                                 _to_blocks(v, bk), _key_valid(m, bk), scale,
                                 precision, checkpoint=False)
  out = _from_blocks(out_b, n)  # (B, N, C)
  lse = _from_blocks(lse_b[..., None], n)[..., 0]  # (B, N)
  return out, (q, k, v, out, lse)


def _flash_bwd(scale, bq, bk, precision, res, dout):
  """FlashAttention-2's backward over (query block, key block) tiles.

  With P = exp(S - lse) and D = rowsum(dO * O):
    dV = P^T dO,  dS = P * (dO V^T - D),  dQ = scale dS K,  dK = scale dS^T Q.
  The outer scan runs over query blocks, so a query block's Q and dO (and
  their transposes) are sliced once per outer step; the inner scan over key
  blocks carries that block's dQ and emits each key block's contribution to
  dK and dV, which the outer scan adds up (O(M (d + C)) memory). On CPU the
  other loop order (FlashAttention-2's, for GPU parallelism) re-sliced a
  (bq, C) block of dO in every inner step.
  """
  q, k, v, out, lse = res
  n, m = q.shape[1], k.shape[1]
  delta = jnp.sum(dout * out, axis=-1)  # (B, N)
  qb, dob = _to_blocks(q, bq), _to_blocks(dout, bq)  # padded rows: dO = 0
  lseb = _to_blocks(lse[..., None], bq)[..., 0]  # (nq, B, bq)
  deltab = _to_blocks(delta[..., None], bq)[..., 0]
  kb, vb, valid = _to_blocks(k, bk), _to_blocks(v, bk), _key_valid(m, bk)

  def query_block(acc, xs):
    qi, qi_t, doi, doi_t, lsei, di = xs  # (B, bq, d), (B, d, bq), ...

    def key_step(dq_i, ys):
      kj, vj, valid_j = ys  # (B, bk, d), (B, bk, C), (bk,) or None
      s = scale * jnp.einsum("bqd,bkd->bqk", qi, kj, precision=precision)
      p = jnp.exp(s - lsei[..., None])
      if valid_j is not None:
        p = jnp.where(valid_j[None, None, :], p, 0.0)
      # dK and dV come out transposed, (d, bk) and (C, bk): XLA:CPU runs
      # Q^T dS and dO^T P at 150-170 GFLOP/s, the transposed-operand forms
      # dS^T Q and P^T dO at 26-55 and 95-140.
      dv_t = jnp.einsum("bcq,bqk->bck", doi_t, p, precision=precision)
      dp = jnp.einsum("bqc,bkc->bqk", doi, vj, precision=precision)
      ds = p * (dp - di[..., None])  # (B, bq, bk)
      dk_t = scale * jnp.einsum("bdq,bqk->bdk", qi_t, ds, precision=precision)
      dq_i = dq_i + scale * jnp.einsum("bqk,bkd->bqd", ds, kj,
                                       precision=precision)
      return dq_i, (dk_t, dv_t)

    dq_i, (dk_t, dv_t) = jax.lax.scan(key_step, jnp.zeros_like(qi),
                                      (kb, vb, valid))
    return (acc[0] + dk_t, acc[1] + dv_t), dq_i

  init = (jnp.zeros_like(kb.swapaxes(2, 3)), jnp.zeros_like(vb.swapaxes(2, 3)))
  (dk_t, dv_t), dq_b = jax.lax.scan(
      query_block, init, (qb, qb.swapaxes(2, 3), dob, dob.swapaxes(2, 3),
                          lseb, deltab))
  return (_from_blocks(dq_b, n).astype(q.dtype),
          _from_blocks(dk_t.swapaxes(2, 3), m).astype(k.dtype),
          _from_blocks(dv_t.swapaxes(2, 3), m).astype(v.dtype))


_flash.defvjp(_flash_fwd, _flash_bwd)


def blockwise_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                        scale: float = 1.0,
                        block_size: int | tuple[int, int] | None = None,
                        checkpoint: bool = False,
                        precision=None) -> jax.Array:
  """Exact memory-linear attention (see the module docstring).

  ``block_size`` is an int (both) or (query block, key block); N and M need
  not be multiples: queries are zero-padded and dropped, padded keys are
  masked out of the softmax. ``checkpoint=True`` differentiates the loop with
  JAX autodiff under ``jax.checkpoint`` instead of the custom VJP.
  """
  _check_shapes(q, k, v)
  n, m = q.shape[1], k.shape[1]
  bq, bk = _block_sizes(block_size, n, m)
  # Accumulate in at least float32 (bfloat16 inputs are upcast; O(N) copies).
  out_dtype = jnp.result_type(q.dtype, k.dtype, v.dtype)
  acc_dtype = jnp.promote_types(out_dtype, jnp.float32)
  q, k, v = (x.astype(acc_dtype) for x in (q, k, v))
  if checkpoint:
    out_b, _ = _forward_blocks(_to_blocks(q, bq), _to_blocks(k, bk),
                               _to_blocks(v, bk), _key_valid(m, bk), scale,
                               precision, checkpoint=True)
    return _from_blocks(out_b, n).astype(out_dtype)
  def one(q, k, v):
    return _flash(q, k, v, float(scale), bq, bk, precision)

  if q.shape[0] == 1 or not PER_SAMPLE:
    return one(q, k, v).astype(out_dtype)
  # One sample at a time: XLA:CPU runs the batched (B, bq, bk) tile
  # matmuls and reductions of one loop step slower than B steps of one
  # sample each (DaGAN++ at batch 16 was slower per frame than at batch 1).
  out = jax.lax.map(lambda qkv: one(*(x[None] for x in qkv))[0], (q, k, v))
  return out.astype(out_dtype)


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                  scale: float = 1.0) -> jax.Array:
  """``jax.nn.dot_product_attention`` (XLA) with our layout and scale.

  It wants (B, T, heads, H) with one H for q, k and v: we add a 1-sized head
  axis and zero-pad the narrower of (q, k) / v along features, which leaves
  the logits q k^T and the output's first C columns unchanged.
  """
  _check_shapes(q, k, v)
  d, c = q.shape[-1], v.shape[-1]
  h = max(d, c)
  pad = lambda x, w: jnp.pad(x, ((0, 0), (0, 0), (0, h - w)))[:, :, None, :]
  out = jax.nn.dot_product_attention(pad(q, d), pad(k, d), pad(v, c),
                                     scale=scale, implementation="xla")
  return out[:, :, 0, :c]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
              scale: float = 1.0,
              block_size: int | tuple[int, int] | None = None,
              implementation: Implementation = "auto",
              precision=None) -> jax.Array:
  """softmax(scale * q k^T) v, the softmax over keys (DaGAN++ Eq. 13).

  Args:
    q: (B, N, d) queries (one per output pixel, row-major flattened).
    k: (B, M, d) keys.
    v: (B, M, C) values.
    scale: logit multiplier; 1.0 like the official code (no 1/sqrt(d)).
    block_size: blockwise tile sizes, int or (query, key); default
      ``DEFAULT_BLOCK_SIZE`` clipped to (N, M).
    implementation: 'auto', 'naive', 'blockwise', 'blockwise_checkpoint' or
      'xla' (module docstring).
    precision: ``jax.lax.Precision`` for the matmuls (e.g. HIGHEST on GPUs
      where float32 matmuls default to TF32).
  Returns:
    (B, N, C).
  """
  _check_shapes(q, k, v)
  if implementation == "auto":
    small = q.shape[1] * k.shape[1] <= AUTO_NAIVE_MAX_ELEMENTS
    implementation = "naive" if small else "blockwise"
  if implementation == "naive":
    return naive_attention(q, k, v, scale=scale, precision=precision)
  if implementation == "blockwise":
    return blockwise_attention(q, k, v, scale=scale, block_size=block_size,
                               precision=precision)
  if implementation == "blockwise_checkpoint":
    return blockwise_attention(q, k, v, scale=scale, block_size=block_size,
                               checkpoint=True, precision=precision)
  if implementation == "xla":
    return xla_attention(q, k, v, scale=scale)
  raise ValueError(
      f"attention implementation {implementation!r}; expected one of 'auto', "
      "'naive', 'blockwise', 'blockwise_checkpoint', 'xla'")


def attention_memory_bytes(n: int, m: int, d: int, c: int, *, batch: int = 1,
                           implementation: Implementation = "blockwise",
                           block_size: int | tuple[int, int] | None = None,
                           with_grad: bool = True) -> dict[str, int]:
  """Compiled memory of one attention (forward, or forward + backward).

  Compiles (does not run) ``attention`` on float32 shapes and returns XLA's
  ``memory_analysis()``: ``temp`` (scratch), ``argument``, ``output`` and
  their sum ``total`` in bytes. Used by the memory test and benchmarks.
  """
  sds = jax.ShapeDtypeStruct
  args = (sds((batch, n, d), jnp.float32), sds((batch, m, d), jnp.float32),
          sds((batch, m, c), jnp.float32))
  fwd = functools.partial(attention, implementation=implementation,
                          block_size=block_size)
  fn = fwd
  if with_grad:
    def loss(q, k, v):
      return jnp.sum(fwd(q, k, v) ** 2)
    fn = jax.grad(loss, argnums=(0, 1, 2))
  stats = jax.jit(fn).lower(*args).compile().memory_analysis()
  out = {"temp": int(stats.temp_size_in_bytes),
         "argument": int(stats.argument_size_in_bytes),
         "output": int(stats.output_size_in_bytes)}
  out["total"] = out["temp"] + out["argument"] + out["output"]
  return out


__all__ = ["attention", "attention_rows", "naive_attention",
           "blockwise_attention", "xla_attention", "attention_memory_bytes",
           "AUTO_NAIVE_MAX_ELEMENTS", "DEFAULT_BLOCK_SIZE"]
