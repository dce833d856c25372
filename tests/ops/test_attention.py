"""Exact memory-efficient attention (dagan_jax/ops/attention.py).

The reference is softmax(scale * q k^T) v written here in numpy float64; the
blockwise forms must match it (values and gradients) with N, M that are not
multiples of the block sizes, and their compiled memory must grow linearly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax.ops import attention as att

IMPLS = ["naive", "blockwise", "blockwise_checkpoint", "xla"]
EXACT_IMPLS = IMPLS[:3]  # 'xla' takes its softmax in float32 even for float64


def _inputs(rng, b=2, n=300, m=257, d=8, c=16, spread=1.0, dtype=np.float64):
  q = rng.normal(size=(b, n, d)) * spread
  k = rng.normal(size=(b, m, d)) * spread
  v = rng.normal(size=(b, m, c))
  g = rng.normal(size=(b, n, c))  # cotangent: loss = sum(out * g)
  return [x.astype(dtype) for x in (q, k, v, g)]


def _np_attention_and_grads(q, k, v, g, scale):
  """Forward and analytic gradients of sum(attention(q, k, v) * g), numpy."""
  s = scale * np.einsum("bnd,bmd->bnm", q, k)
  s = s - s.max(-1, keepdims=True)
  p = np.exp(s)
  p /= p.sum(-1, keepdims=True)  # (B, N, M)
  out = p @ v
  dv = np.einsum("bnm,bnc->bmc", p, g)
  dp = np.einsum("bnc,bmc->bnm", g, v)
  ds = p * (dp - (dp * p).sum(-1, keepdims=True))
  dq = scale * ds @ k
  dk = scale * np.einsum("bnm,bnd->bmd", ds, q)
  return out, (dq, dk, dv)


def _jax_fwd_grad(impl, scale, block_size):
  def fwd(q, k, v):
    return att.attention(q, k, v, scale=scale, implementation=impl,
                         block_size=block_size)

  def loss(q, k, v, g):
    return jnp.sum(fwd(q, k, v) * g)

  return jax.jit(fwd), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _x64_fwd_grad(impl, scale, block_size, q, k, v, g):
  """Output and (dq, dk, dv) of sum(attention * g), jitted in float64."""
  with jax.enable_x64(True):
    fwd, grad = _jax_fwd_grad(impl, scale, block_size)
    return fwd(q, k, v), grad(q, k, v, g)


@pytest.mark.parametrize("impl", EXACT_IMPLS)
def test_matches_numpy_float64(impl):
  """Exact in float64: forward and d/dq, d/dk, d/dv, ragged blocks, jit."""
  rng = np.random.default_rng(0)
  q, k, v, g = _inputs(rng)
  scale = 0.7
  ref_out, ref_grads = _np_attention_and_grads(q, k, v, g, scale)
  # 300 = 4*64+44, 257 = 5*48+17
  out, grads = _x64_fwd_grad(impl, scale, (64, 48), q, k, v, g)
  assert out.dtype == jnp.float64
  np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-12)
  for name, a, b in zip("qkv", grads, ref_grads):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=f"d{name}")


@pytest.mark.parametrize("impl,block_size", [
    ("blockwise", (64, 48)), ("blockwise", (512, 512)),
    ("blockwise_checkpoint", 100), ("xla", None)])
def test_blockwise_matches_naive_float32(impl, block_size):
  """float32 under jit, several tilings, including one tile > N and > M."""
  rng = np.random.default_rng(1)
  q, k, v, g = _inputs(rng, n=300, m=257, d=8, c=16, spread=0.5,
                       dtype=np.float32)
  fwd_n, grad_n = _jax_fwd_grad("naive", 1.0, None)
  fwd_b, grad_b = _jax_fwd_grad(impl, 1.0, block_size)
  np.testing.assert_allclose(fwd_b(q, k, v), fwd_n(q, k, v), atol=1e-5)
  for name, a, b in zip("qkv", grad_b(q, k, v, g), grad_n(q, k, v, g)):
    np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"d{name}")


def test_large_logits_are_stable():
  """Logits of several hundred: the streaming max keeps exp() finite."""
  rng = np.random.default_rng(2)
  q, k, v, g = _inputs(rng, b=1, n=70, m=90, d=4, c=3, spread=10.0)
  ref_out, ref_grads = _np_attention_and_grads(q, k, v, g, 1.0)
  out, grads = _x64_fwd_grad("blockwise", 1.0, (16, 32), q, k, v, g)
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, ref_out, rtol=1e-9, atol=1e-9)
  for a, b in zip(grads, ref_grads):
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7)


def test_attention_rows_are_softmax_rows():
  rng = np.random.default_rng(3)
  q, k, _, _ = _inputs(rng, n=50, m=40)
  rows = np.array([0, 7, 49])
  with jax.enable_x64(True):
    p = np.asarray(att.attention_rows(q, k, rows, scale=0.5))
  s = 0.5 * np.einsum("bnd,bmd->bnm", q[:, rows], k)
  ref = np.exp(s - s.max(-1, keepdims=True))
  ref /= ref.sum(-1, keepdims=True)
  assert p.shape == (2, 3, 40)
  np.testing.assert_allclose(p, ref, rtol=1e-12)
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)


def test_default_scale_is_one_not_inverse_sqrt_d():
  """The official DepthAwareAttention has no 1/sqrt(d) factor."""
  rng = np.random.default_rng(4)
  q, k, v, _ = _inputs(rng, b=1, n=20, m=30, d=16, c=4)
  ref, _ = _np_attention_and_grads(q, k, v, np.zeros((1, 20, 4)), 1.0)
  for impl in IMPLS:
    out = att.attention(q.astype(np.float32), k.astype(np.float32),
                        v.astype(np.float32), implementation=impl)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5, err_msg=impl)


def test_auto_switches_to_blockwise_for_large_maps():
  small = jax.ShapeDtypeStruct((1, 64, 8), jnp.float32)
  big_q = jax.ShapeDtypeStruct((1, 8192, 8), jnp.float32)
  big_v = jax.ShapeDtypeStruct((1, 8192, 4), jnp.float32)
  small_v = jax.ShapeDtypeStruct((1, 64, 4), jnp.float32)
  jaxpr_small = str(jax.make_jaxpr(att.attention)(small, small, small_v))
  jaxpr_big = str(jax.make_jaxpr(att.attention)(big_q, big_q, big_v))
  assert "scan" not in jaxpr_small and "custom_vjp" not in jaxpr_small
  assert "custom_vjp" in jaxpr_big


def test_bad_shapes_and_implementation_are_rejected():
  x = jnp.zeros((1, 5, 4))
  with pytest.raises(ValueError, match="feature sizes"):
    att.attention(x, jnp.zeros((1, 5, 3)), x)
  with pytest.raises(ValueError, match="implementation"):
    att.attention(x, x, x, implementation="flash")


def test_compiled_memory_linear_vs_quadratic():
  """XLA's compiled scratch memory of forward + backward, N = M, d=8, C=64.

  Quadrupling N multiplies the naive temp by ~16 (the (N, M) matrix) and the
  blockwise temp by at most ~4 (plus a constant tile).
  """
  mem = {}
  for impl in ("naive", "blockwise"):
    for n in (1024, 4096):
      mem[impl, n] = att.attention_memory_bytes(
          n, n, 8, 64, implementation=impl, block_size=(256, 256))["temp"]
  naive_ratio = mem["naive", 4096] / mem["naive", 1024]
  block_ratio = mem["blockwise", 4096] / mem["blockwise", 1024]
  assert naive_ratio > 12, mem
  assert block_ratio < 5, mem
  # The naive backward keeps the full (N, N) float32 probability matrix.
  assert mem["naive", 4096] >= 4096 * 4096 * 4
  assert mem["blockwise", 4096] < 4096 * 4096 * 4 / 10


def test_bfloat16_inputs_accumulate_in_float32():
  """bf16 in, bf16 out, but the streaming sums are float32: the result is
  the float32 attention of the bf16-rounded inputs, rounded once."""
  rng = np.random.default_rng(5)
  q, k, v, _ = _inputs(rng, b=1, n=130, m=300, d=8, c=8, dtype=np.float32)
  q16, k16, v16 = (jnp.asarray(x, jnp.bfloat16) for x in (q, k, v))
  ref = att.naive_attention(*(x.astype(jnp.float32) for x in (q16, k16, v16)))
  out = att.attention(q16, k16, v16, implementation="blockwise", block_size=32)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=1e-2)


@pytest.mark.parametrize("per_sample", [True, False])
def test_unpadded_blocks_staged_reductions_and_batch_loop(monkeypatch,
                                                          per_sample):
  """Blocks that divide N and M (no key mask), key blocks wide enough for
  the staged row max / sum (128 = 32 groups of 4), batch 3 looped one
  sample at a time or carried through the tiles: exact in float64."""
  monkeypatch.setattr(att, "PER_SAMPLE", per_sample)
  rng = np.random.default_rng(6)
  q, k, v, g = _inputs(rng, b=3, n=192, m=256, d=8, c=16, spread=2.0)
  ref_out, ref_grads = _np_attention_and_grads(q, k, v, g, 1.3)
  out, grads = _x64_fwd_grad("blockwise", 1.3, (64, 128), q, k, v, g)
  np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-12)
  for name, a, b in zip("qkv", grads, ref_grads):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=f"d{name}")


def test_row_reduce_is_max_and_sum():
  x = np.random.default_rng(7).normal(size=(2, 3, 256))
  with jax.enable_x64(True):
    np.testing.assert_array_equal(att._row_reduce(x, "max"), x.max(-1))
    np.testing.assert_allclose(att._row_reduce(x, "sum"), x.sum(-1),
                               rtol=1e-13)
    # Widths that are not a multiple of the groups reduce in one stage.
    np.testing.assert_array_equal(att._row_reduce(x[..., :40], "max"),
                                  x[..., :40].max(-1))


def test_streaming_loop_has_no_unfused_row_reductions():
  """The forward loop body takes its row max and sum over the (bq, bk) tile
  in the fused staged form: no reduce-window (XLA:CPU's rewrite of a long
  reduction, which reads the tile again) in the compiled program, and no
  key mask when the key blocks divide M."""
  sds = jax.ShapeDtypeStruct
  fn = jax.jit(lambda q, k, v: att.attention(
      q, k, v, implementation="blockwise", block_size=(256, 128)))
  hlo = fn.lower(sds((1, 1024, 8), jnp.float32), sds((1, 1024, 8), jnp.float32),
                 sds((1, 1024, 16), jnp.float32)).compile().as_text()
  assert "reduce-window" not in hlo
  assert "select(" not in hlo
