"""conv_tiled_dw equals XLA's convolution, forward and both gradients, and
the CPU kernel set's conv2d sends it the stride-1 convs of small batches only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax import compute
from dagan_jax.backends.xla_cpu import conv as cpu_conv
from dagan_jax.models import layers
from dagan_jax.backends.xla_cpu.tiled_dw_conv import conv_tiled_dw, tile_images


def _lax(x, k, pad):
  return jax.lax.conv_general_dilated(x, k, (1, 1), ((pad[0],) * 2, (pad[1],) * 2),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape,kh,kw,cout,pad,tiles", [
    ((2, 8, 8, 5), 3, 3, 6, (1, 1), 2),      # "same" 3x3, the ResBlock case
    ((1, 12, 12, 3), 7, 7, 4, (3, 3), 2),    # 7x7 first layer
    ((2, 12, 10, 4), 3, 5, 3, (1, 2), 2),    # non-square kernel and map
    ((2, 10, 10, 3), 3, 3, 2, (0, 0), 2),    # valid padding: 8x8 output
    ((3, 12, 12, 2), 3, 3, 3, (1, 1), 3),    # 3x3 tiles
    ((2, 9, 9, 3), 4, 4, 2, (0, 0), 3),      # even kernel (discriminator-like)
    ((2, 12, 12, 3), 4, 4, 5, (0, 0), 2),    # odd 9x9 output: zero-padded tiles
    ((1, 11, 8, 2), 3, 3, 3, (1, 1), 2),     # odd height only
])
def test_values_and_gradients_match_xla_conv(shape, kh, kw, cout, pad, tiles):
  rng = np.random.default_rng(sum(shape) + kh + cout)
  x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  k = jnp.asarray(rng.standard_normal((kh, kw, shape[-1], cout)).astype(np.float32))
  want = _lax(x, k, pad)
  got = conv_tiled_dw(x, k, pad, tiles)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  ct = jnp.asarray(rng.standard_normal(want.shape).astype(np.float32))
  gw = jax.vjp(lambda a, b: _lax(a, b, pad), x, k)[1](ct)
  gg = jax.vjp(lambda a, b: conv_tiled_dw(a, b, pad, tiles), x, k)[1](ct)
  for a, b in zip(gg, gw):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 * float(jnp.abs(b).max()))


def test_tiles_carry_their_halo():
  x = jnp.arange(2 * 6 * 6, dtype=jnp.float32).reshape(2, 6, 6, 1)
  t = tile_images(x, 2, 4, 4, 2, 2)   # 2x2 tiles of 4x4 every 2 pixels
  assert t.shape == (8, 4, 4, 1)
  np.testing.assert_array_equal(t[0], x[0, 0:4, 0:4])
  np.testing.assert_array_equal(t[3], x[0, 2:6, 2:6])
  np.testing.assert_array_equal(t[5], x[1, 0:4, 2:6])


def test_weight_gradient_runs_on_the_tiles():
  x = jnp.zeros((2, 32, 32, 8))
  k = jnp.zeros((3, 3, 8, 8))
  loss = lambda kk: conv_tiled_dw(x, kk, (1, 1), 2).sum()
  text = jax.jit(jax.grad(loss)).lower(k).as_text()
  # The weight-gradient convolution reads a batch of 2 * 2x2 = 8 tiles of
  # 16x16 (+ 2 pixels of halo).
  assert "tensor<8x18x18x8xf32>" in text


@compute.use("cpu")
def test_conv2d_routes_small_batches_of_big_convs(monkeypatch):
  # The Winograd route takes wide 3x3 "same" convs first: not these.
  monkeypatch.setattr(cpu_conv, "WINOGRAD_MIN_CHANNELS", 10 ** 9)
  rng = np.random.default_rng(2)
  k = jnp.asarray(rng.standard_normal((3, 3, 64, 64)).astype(np.float32) * 0.05)
  b = jnp.asarray(rng.standard_normal((64,)).astype(np.float32))
  x = jnp.asarray(rng.standard_normal((2, 64, 64, 64)).astype(np.float32))
  macs = 2 * 64 * 64 * 9 * 64 * 64
  assert macs >= cpu_conv.TILED_DW_MIN_MACS
  np.testing.assert_allclose(layers.conv2d(x, k, b, padding=1),
                             _lax(x, k, (1, 1)) + b, rtol=1e-5, atol=1e-4)
  grad_text = lambda xx, kk: jax.jit(jax.grad(
      lambda v: layers.conv2d(xx, v, padding=1).sum())).lower(kk).as_text()
  assert "tensor<8x34x34x64xf32>" in grad_text(x, k)
  # A large batch, or a small conv, keeps XLA's weight gradient.
  big_batch = jnp.zeros((cpu_conv.TILED_DW_MAX_BATCH + 1, 64, 64, 64))
  assert "34x34" not in grad_text(big_batch, k)
  small = jnp.zeros((2, 16, 16, 8))
  assert "tensor<8x10x10x8xf32>" not in grad_text(small, jnp.zeros((3, 3, 8, 8)))


def test_more_tiles_than_pixels_are_refused():
  with pytest.raises(ValueError, match="tiles"):
    conv_tiled_dw(jnp.zeros((1, 3, 3, 2)), jnp.zeros((3, 3, 2, 2)), (0, 0), 2)
  with pytest.raises(ValueError, match="does not match kernel"):
    conv_tiled_dw(jnp.zeros((1, 8, 8, 2)), jnp.zeros((3, 3, 4, 2)), (1, 1), 2)
