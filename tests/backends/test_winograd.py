"""Winograd F(2x2, 3x3) convolutions equal the direct convolution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax.backends import xla as plain
from dagan_jax.backends.xla_cpu import winograd


def conv2d(x, k, b=None, padding=1):
  """XLA's own convolution (the plain kernel set), plus bias."""
  y = plain.conv2d(x, k, stride=(1, 1), padding=(padding, padding),
                   dilation=(1, 1), groups=1, precision=None)
  return y if b is None else y + b


def _direct64(x, k, b):
  """float64 numpy reference of a 3x3, padding 1 convolution."""
  x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
  _, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = sum(np.einsum("bhwc,co->bhwo", xp[:, i:i + h, j:j + w], k[i, j])
          for i in range(3) for j in range(3))
  return y + np.asarray(b, np.float64)


@pytest.mark.parametrize("shape", [(2, 13, 11, 5, 7), (1, 8, 8, 16, 16),
                                   (3, 1, 1, 4, 2), (1, 2, 9, 3, 3)])
def test_equals_direct_convolution(shape):
  b, h, w, c, o = shape
  rng = np.random.default_rng(1)
  x = rng.normal(size=(b, h, w, c)).astype(np.float32)
  k = (rng.normal(size=(3, 3, c, o)) / np.sqrt(9 * c)).astype(np.float32)
  bias = rng.normal(size=o).astype(np.float32)
  got = jax.jit(lambda x, k, b: winograd.conv3x3_f23(x, k, b))(x, k, bias)
  want = _direct64(x, k, bias)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=2e-6)
  direct = conv2d(jnp.asarray(x), jnp.asarray(k), jnp.asarray(bias), padding=1)
  assert np.abs(np.asarray(direct, np.float64) - want).max() < 2e-6


def test_f23_rounding_is_that_of_the_direct_conv():
  """At the bottleneck's width (256 channels) F(2x2, 3x3)'s float32 error
  is of the order of the direct convolution's (within 2x)."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(1, 16, 16, 256)).astype(np.float32)
  k = (rng.normal(size=(3, 3, 256, 256)) / np.sqrt(9 * 256)).astype(np.float32)
  want = _direct64(x, k, np.zeros(256))
  wino = np.abs(np.asarray(winograd.conv3x3_f23(x, k), np.float64) - want).max()
  direct = np.abs(np.asarray(conv2d(jnp.asarray(x), jnp.asarray(k), padding=1),
                             np.float64) - want).max()
  assert wino <= 2 * direct + 1e-7, (wino, direct)


def test_accumulation_type():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 6, 6, 8)).astype(np.float32)
  k = rng.normal(size=(3, 3, 8, 4)).astype(np.float32)
  a = winograd.conv3x3_f23(x, k)
  y = winograd.conv3x3_f23(jnp.asarray(x, jnp.bfloat16), jnp.asarray(k),
                           preferred_element_type=jnp.float32)
  assert y.dtype == jnp.float32
  rel = np.linalg.norm(np.asarray(y) - np.asarray(a)) / np.linalg.norm(np.asarray(a))
  assert rel < 2e-2, rel  # bfloat16 operands: ~3 significant digits


def test_gradients_equal_those_of_the_direct_conv():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)).astype(np.float32))
  k = jnp.asarray(rng.normal(size=(3, 3, 3, 5)).astype(np.float32))
  t = jnp.asarray(rng.normal(size=(2, 7, 6, 5)).astype(np.float32))

  def loss(conv):
    return lambda x, k: jnp.sum(conv(x, k) * t)

  gw = jax.grad(loss(lambda x, k: winograd.conv3x3_f23(x, k)), (0, 1))(x, k)
  gd = jax.grad(loss(lambda x, k: conv2d(x, k, padding=1)), (0, 1))(x, k)
  for a, b in zip(gw, gd):
    np.testing.assert_allclose(a, b, atol=2e-5)


def _grads64(x, k, t):
  """float64 numpy gradients of sum(conv3x3(x, k) * t) (padding 1)."""
  x, k, t = (np.asarray(a, np.float64) for a in (x, k, t))
  _, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dk = np.stack([np.stack([np.einsum("bhwc,bhwo->co", xp[:, i:i + h, j:j + w], t)
                           for j in range(3)]) for i in range(3)])
  tp = np.pad(t, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dx = sum(np.einsum("bhwo,co->bhwc", tp[:, 2 - i:2 - i + h, 2 - j:2 - j + w], k[i, j])
           for i in range(3) for j in range(3))
  return dx, dk


@pytest.mark.parametrize("shape", [(2, 16, 12, 8, 6), (1, 7, 9, 5, 4),
                                   (3, 1, 2, 3, 2), (1, 2, 2, 4, 4)])
def test_f23_gradients_equal_float64(shape):
  """conv3x3_f23's written-out backward pass (input and kernel gradients,
  odd sizes included) equals the float64 gradients of the convolution."""
  b, h, w, c, o = shape
  rng = np.random.default_rng(5)
  x = rng.normal(size=(b, h, w, c)).astype(np.float32)
  k = (rng.normal(size=(3, 3, c, o)) / np.sqrt(9 * c)).astype(np.float32)
  t = rng.normal(size=(b, h, w, o)).astype(np.float32)
  gx, gk = jax.jit(jax.grad(
      lambda x, k: jnp.sum(winograd.conv3x3_f23(x, k) * t), (0, 1)))(x, k)
  wx, wk = _grads64(x, k, t)
  np.testing.assert_allclose(np.asarray(gx, np.float64), wx,
                             atol=3e-6 * max(1.0, np.abs(wx).max()))
  np.testing.assert_allclose(np.asarray(gk, np.float64), wk,
                             atol=3e-6 * max(1.0, np.abs(wk).max()))


def test_f23_gradient_rounding_is_that_of_the_direct_conv():
  """At 256 channels on a 16x16 map the Winograd gradients' float32 error
  is of the order of XLA's convolution gradients' (within 2x)."""
  rng = np.random.default_rng(6)
  x = rng.normal(size=(2, 16, 16, 256)).astype(np.float32)
  k = (rng.normal(size=(3, 3, 256, 256)) / np.sqrt(9 * 256)).astype(np.float32)
  t = rng.normal(size=(2, 16, 16, 256)).astype(np.float32)
  want = _grads64(x, k, t)

  def grads(conv):
    return jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) * t), (0, 1)))(x, k)

  wino = grads(winograd.conv3x3_f23)
  direct = grads(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")))
  for got, ref, w in zip(wino, direct, want):
    err = np.abs(np.asarray(got, np.float64) - w).max()
    err_ref = np.abs(np.asarray(ref, np.float64) - w).max()
    assert err <= 2 * err_ref + 1e-7, (err, err_ref)


def test_f23_is_sixteen_matmuls_forward_and_backward():
  """The compiled forward + backward holds no convolution: 16 matmuls for
  the forward, 32 for the two gradients."""
  x = jnp.ones((2, 8, 8, 16))
  k = jnp.ones((3, 3, 16, 16))
  fwd = jax.jit(winograd.conv3x3_f23).lower(x, k).compile().as_text()
  assert "convolution(" not in fwd and fwd.count(" dot(") == 16
  both = jax.jit(jax.value_and_grad(
      lambda x, k: jnp.sum(winograd.conv3x3_f23(x, k) ** 2), (0, 1))
  ).lower(x, k).compile().as_text()
  assert "convolution(" not in both and both.count(" dot(") == 48


def test_f23_keeps_the_dtype():
  x = jnp.ones((1, 4, 4, 8), jnp.bfloat16)
  k = jnp.ones((3, 3, 8, 8), jnp.bfloat16)
  y, pull = jax.vjp(winograd.conv3x3_f23, x, k)
  dx, dk = pull(jnp.ones_like(y))
  assert y.dtype == dx.dtype == dk.dtype == jnp.bfloat16


def test_rejects_other_kernels():
  with pytest.raises(ValueError, match="3, 3, Cin, Cout"):
    winograd.conv3x3_f23(jnp.zeros((1, 4, 4, 2)), jnp.zeros((5, 5, 2, 2)))
  with pytest.raises(ValueError, match="3, 3, Cin, Cout"):
    winograd.conv3x3_f23(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 3, 2)))
