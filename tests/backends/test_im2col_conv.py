"""conv_im2col equals XLA's convolution, forward and both gradients, and
the CPU kernel set's router sends it only tiny maps with wide kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax import compute
from dagan_jax.backends.xla_cpu import conv as cpu_conv
from dagan_jax.models import layers
from dagan_jax.backends.xla_cpu.im2col_conv import conv_im2col


def _lax(x, k, pad):
  return jax.lax.conv_general_dilated(x, k, (1, 1), ((pad[0],) * 2, (pad[1],) * 2),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape,kh,kw,cout,pad", [
    ((2, 4, 4, 24), 3, 3, 40, (1, 1)),    # hourglass bottom: "same" 3x3
    ((3, 2, 2, 16), 3, 3, 8, (1, 1)),     # 2x2 map: most taps read padding
    ((1, 5, 4, 6), 3, 1, 7, (1, 0)),      # non-square kernel and padding
    ((2, 6, 6, 5), 3, 3, 4, (0, 0)),      # valid padding
    ((2, 3, 3, 4), 1, 1, 9, (0, 0)),      # 1x1
])
def test_values_and_gradients_match_xla_conv(shape, kh, kw, cout, pad):
  rng = np.random.default_rng(sum(shape) + cout)
  x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  k = jnp.asarray(rng.standard_normal((kh, kw, shape[-1], cout)).astype(np.float32))
  want = _lax(x, k, pad)
  got = conv_im2col(x, k, pad)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  ct = jnp.asarray(rng.standard_normal(want.shape).astype(np.float32))
  gw = jax.vjp(lambda a, b: _lax(a, b, pad), x, k)[1](ct)
  gg = jax.vjp(lambda a, b: conv_im2col(a, b, pad), x, k)[1](ct)
  for a, b in zip(gg, gw):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 * float(jnp.abs(b).max()))


def test_no_convolution_and_no_kernel_transpose_in_the_gradient():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 4, 4, 64)).astype(np.float32))
  k = jnp.asarray(rng.standard_normal((3, 3, 64, 96)).astype(np.float32))
  loss = lambda a, b: (conv_im2col(a, b, (1, 1)) ** 2).sum()
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, k).compile().as_text()
  assert "convolution(" not in hlo
  # XLA's own input gradient swaps the kernel's channel axes in a copy of
  # the whole kernel; none of that here.
  assert "f32[3,3,96,64]" not in hlo


@compute.use("cpu")
def test_conv2d_routes_tiny_wide_convs_only():
  rng = np.random.default_rng(1)
  def lowered(x, k):
    return jax.jit(lambda a: layers.conv2d(a, k, padding=1)).lower(x).as_text()
  # A 2x2 map with a 256 -> 256 kernel (VGG's conv5_1 on the smallest
  # pyramid level, narrower): patch matmul, same values.
  k = jnp.asarray(rng.standard_normal((3, 3, 256, 256)).astype(np.float32) * 0.05)
  b = jnp.asarray(rng.standard_normal((256,)).astype(np.float32))
  x2 = jnp.asarray(rng.standard_normal((2, 2, 2, 256)).astype(np.float32))
  np.testing.assert_allclose(layers.conv2d(x2, k, b, padding=1),
                             _lax(x2, k, (1, 1)) + b, rtol=1e-5, atol=1e-4)
  assert "convolution" not in lowered(x2, k)
  # 4x4 maps: only the widest kernels (the hourglass bottoms), and only
  # while the batch has at most IM2COL_MAX_ROWS output pixels.
  assert "convolution" in lowered(jnp.zeros((2, 4, 4, 256)), k)
  wide = jnp.zeros((3, 3, 512, 1024))
  assert 9 * 512 * 1024 >= cpu_conv.IM2COL_WIDE_WEIGHTS
  assert "convolution" not in lowered(jnp.zeros((2, 4, 4, 512)), wide)
  assert "convolution" in lowered(jnp.zeros((8, 4, 4, 512)), wide)
  # Small kernels keep XLA's convolution even on a 2x2 map.
  assert "convolution" in lowered(jnp.zeros((2, 2, 2, 32)), jnp.zeros((3, 3, 32, 32)))


def test_mismatched_kernel_is_refused():
  with pytest.raises(ValueError, match="does not match kernel"):
    conv_im2col(jnp.zeros((1, 4, 4, 8)), jnp.zeros((3, 3, 4, 2)), (1, 1))
  with pytest.raises(ValueError, match="does not fit"):
    conv_im2col(jnp.zeros((1, 2, 2, 4)), jnp.zeros((5, 5, 4, 2)), (0, 0))
