"""conv_narrow_out equals XLA's convolution, forward and both gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax import compute
from dagan_jax.backends.xla_cpu import conv as cpu_conv
from dagan_jax.models import layers
from dagan_jax.backends.xla_cpu.narrow_conv import conv_narrow_out


def _lax(x, k, pad):
  return jax.lax.conv_general_dilated(x, k, (1, 1), ((pad[0],) * 2, (pad[1],) * 2),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("kh,kw,cin,cout,pad", [
    (7, 7, 16, 3, (3, 3)),    # matmul forward (<= 4 outputs), the generator's final conv
    (7, 7, 12, 1, (3, 3)),    # occlusion head
    (3, 3, 8, 16, (1, 1)),    # XLA forward, matmul weight gradient
    (5, 3, 6, 2, (2, 1)),     # non-square kernel
    (7, 7, 8, 5, (0, 0)),     # valid padding (also allowed)
])
def test_values_and_gradients_match_xla_conv(kh, kw, cin, cout, pad):
  rng = np.random.default_rng(kh * 100 + cout)
  x = jnp.asarray(rng.standard_normal((2, 13, 11, cin)).astype(np.float32))
  k = jnp.asarray(rng.standard_normal((kh, kw, cin, cout)).astype(np.float32))
  want = _lax(x, k, pad)
  got = conv_narrow_out(x, k, pad)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  ct = jnp.asarray(rng.standard_normal(want.shape).astype(np.float32))
  gw = jax.vjp(lambda a, b: _lax(a, b, pad), x, k)[1](ct)
  gg = jax.vjp(lambda a, b: conv_narrow_out(a, b, pad), x, k)[1](ct)
  for a, b in zip(gg, gw):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 * float(jnp.abs(b).max()))


@compute.use("cpu")
def test_conv2d_routes_narrow_same_convs_and_keeps_values():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((1, 16, 16, 8)).astype(np.float32))
  k = jnp.asarray(rng.standard_normal((7, 7, 8, 3)).astype(np.float32))
  b = jnp.asarray(rng.standard_normal((3,)).astype(np.float32))
  got = layers.conv2d(x, k, b, padding=3)
  np.testing.assert_allclose(got, _lax(x, k, (3, 3)) + b, rtol=1e-5, atol=1e-4)
  # A matmul, not a convolution, in the forward program.
  assert "convolution" not in jax.jit(lambda a: layers.conv2d(a, k, b, padding=3)
                                      ).lower(x).as_text()
  # Wide outputs keep XLA's convolution.
  k2 = jnp.asarray(rng.standard_normal((3, 3, 8, 32)).astype(np.float32))
  assert "convolution" in jax.jit(lambda a: layers.conv2d(a, k2, padding=1)).lower(x).as_text()
  # So do stems with few input channels (RGB, depth): below NARROW_MIN_IN.
  k3 = jnp.asarray(rng.standard_normal((7, 7, 3, 4)).astype(np.float32))
  x3 = x[..., :3]
  assert cpu_conv.NARROW_MIN_IN > 3
  assert "convolution" in jax.jit(lambda a: layers.conv2d(a, k3, padding=3)).lower(x3).as_text()
  np.testing.assert_allclose(layers.conv2d(x3, k3, padding=3), _lax(x3, k3, (3, 3)),
                             rtol=1e-5, atol=1e-4)


def test_padding_beyond_kernel_is_refused():
  x = jnp.zeros((1, 8, 8, 4))
  k = jnp.zeros((3, 3, 4, 2))
  with pytest.raises(ValueError, match="exceeds kernel"):
    jax.grad(lambda kk: conv_narrow_out(x, kk, (3, 3)).sum())(k)
