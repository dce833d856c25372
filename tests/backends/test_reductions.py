"""Staged sums (dagan_jax.backends.xla_cpu.reductions): values, gradients, and that the
compiled training-mode norms hold no XLA:CPU reduce-window."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax import compute
from dagan_jax.models.layers import BatchNorm, InstanceNorm, conv2d
from dagan_jax.backends.xla_cpu import reductions


@pytest.fixture(autouse=True)
def _always_staged(monkeypatch):
  # The shapes below are small; stage them anyway (the threshold has its
  # own test).
  monkeypatch.setattr(reductions, "STAGED_MIN_ELEMENTS", 0)


def test_small_arrays_take_the_plain_sum(monkeypatch):
  monkeypatch.setattr(reductions, "STAGED_MIN_ELEMENTS", 1 << 16)
  small = jnp.ones((2, 30, 30, 8))
  big = jnp.ones((2, 64, 64, 8))
  def ops(x):
    return str(jax.make_jaxpr(lambda v: reductions.block_sum(v, 0, 3))(x))
  assert "optimization_barrier" not in ops(small)
  assert "optimization_barrier" in ops(big)
  np.testing.assert_allclose(reductions.block_sum(small, 0, 3), 1800.0)


@pytest.mark.parametrize("shape,start,stop", [
    ((2, 58, 58, 7), 0, 3),     # BatchNorm: all but channels, 6728 = 8 * 29^2
    ((2, 58, 58, 7), 1, 3),     # InstanceNorm: H, W per sample
    ((37,), 0, 1),              # prime length: padded stage
    ((3, 1000, 5), 1, 2),       # middle axis, not a multiple of 32
    ((4, 20, 3), 1, 2),         # one stage only (<= 32)
    ((2, 3), 0, 0),             # empty block: identity
])
def test_block_sum_matches_float64(shape, start, stop):
  x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  axes = tuple(range(start, stop))
  want = x.astype(np.float64).sum(axis=axes)
  got = np.asarray(jax.jit(lambda v: reductions.block_sum(v, start, stop))(x))
  assert got.shape == want.shape
  # As accurate as numpy's own float32 pairwise sum.
  tol = max(np.abs(x.sum(axis=axes) - want).max(), 1e-6) * 4
  np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@compute.use("cpu")
def test_mean_all_and_block_mean():
  """compute's means over the staged sums."""
  x = np.random.default_rng(1).standard_normal((2, 64, 64, 3)).astype(np.float32)
  np.testing.assert_allclose(float(compute.mean_all(x)), x.astype(np.float64).mean(),
                             atol=1e-7)
  np.testing.assert_allclose(np.asarray(compute.block_mean(x, 1, 3)),
                             x.astype(np.float64).mean(axis=(1, 2)), atol=1e-6)


def test_block_broadcast_value_and_gradient():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 40, 40, 5)).astype(np.float32)
  v = rng.standard_normal((2, 5)).astype(np.float32)
  out = reductions.block_broadcast(v, x.shape, 1, 3)
  np.testing.assert_array_equal(np.asarray(out), np.broadcast_to(v[:, None, None], x.shape))
  grad = jax.grad(lambda w: jnp.sum(reductions.block_broadcast(w, x.shape, 1, 3) * x))(v)
  np.testing.assert_allclose(np.asarray(grad), x.astype(np.float64).sum(axis=(1, 2)),
                             atol=2e-4)
  with pytest.raises(ValueError, match="does not broadcast"):
    reductions.block_broadcast(v, x.shape, 0, 3)
  with pytest.raises(ValueError, match="not a block"):
    reductions.block_sum(x, 3, 1)


def _norm_vjp(module, x, extra=None):
  variables = module.init(jax.random.key(0), x)

  def f(params, x, ct):
    def fwd(p, xx):
      vs = {**variables, "params": p}
      if "batch_stats" in variables:
        return module.apply(vs, xx, mutable=["batch_stats"])[0]
      return module.apply(vs, xx)
    y, pull = jax.vjp(fwd, params, x)
    return y, pull(ct)
  return f, variables["params"]


@pytest.mark.parametrize("module", [BatchNorm(), InstanceNorm(use_scale=True, use_bias=True)],
                         ids=["batchnorm", "instancenorm"])
def test_train_norms_match_float64_and_compile_without_reduce_window(module):
  rng = np.random.default_rng(3)
  x = (rng.standard_normal((2, 64, 64, 8)) * 3 + 1).astype(np.float32)
  ct = rng.standard_normal(x.shape).astype(np.float32)
  f, params = _norm_vjp(module, x)
  params = jax.tree.map(lambda p: p + rng.standard_normal(p.shape).astype(np.float32), params)
  compiled = compute.jit(f, kernels="cpu").lower(params, x, ct).compile()
  assert "reduce-window(" not in compiled.as_text()
  got = compiled(params, x, ct)
  axes = (0, 1, 2) if isinstance(module, BatchNorm) else (1, 2)

  def ref(params, x):  # the textbook norm, float64
    mean = jnp.mean(x, axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axes, keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * params["scale"] + params["bias"]
  with jax.enable_x64(True):
    p64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), params)
    x64, ct64 = jnp.asarray(x, jnp.float64), jnp.asarray(ct, jnp.float64)
    y64, pull = jax.vjp(ref, p64, x64)
    want = (np.asarray(y64), jax.tree.map(np.asarray, pull(ct64)))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g), w, rtol=0, atol=2e-5 * max(1, np.abs(w).max()))


def test_conv_bias_gradient_is_staged():
  rng = np.random.default_rng(4)
  x = rng.standard_normal((2, 64, 64, 4)).astype(np.float32)
  k = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
  b = rng.standard_normal((8,)).astype(np.float32)
  f = lambda b: jnp.sum(jnp.sin(conv2d(x, k, b, padding=1)))  # noqa: E731
  compiled = compute.jit(jax.grad(f), kernels="cpu").lower(b).compile()
  assert "reduce-window(" not in compiled.as_text()
  y = conv2d(x, k, None, padding=1)
  np.testing.assert_allclose(np.asarray(compiled(b)),
                             np.cos(np.asarray(y, np.float64) + b).sum(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-3)

