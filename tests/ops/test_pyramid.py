"""Anti-alias downsampling and image pyramid vs the official construction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax.ops.pyramid import (anti_alias_downsample, anti_alias_kernel,
                                   image_pyramid)


def nhwc(a):
  return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def official_kernel(scale):
  """The official construction, in float32 like the torch buffer."""
  sigma = (1 / scale - 1) / 2
  size = 2 * round(sigma * 4) + 1
  grid = np.arange(size, dtype=np.float32)
  g = np.exp(-(grid - (size - 1) / 2) ** 2 / (2 * sigma ** 2)).astype(
      np.float32)
  kernel = g[:, None] * g[None, :]
  return kernel / kernel.sum()


@pytest.mark.parametrize('scale,size', [(0.5, 5), (0.25, 13), (0.125, 29)])
def test_anti_alias_kernel(scale, size):
  kernel = np.asarray(anti_alias_kernel(scale))
  assert kernel.shape == (size, size)
  np.testing.assert_allclose(kernel, official_kernel(scale), rtol=1e-6,
                             atol=1e-9)
  np.testing.assert_allclose(kernel.sum(), 1, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(anti_alias_kernel(1)), [[1.0]])
  with pytest.raises(ValueError, match='scale'):
    anti_alias_kernel(1.5)


@pytest.mark.parametrize('scale', [0.5, 0.25, 0.125])
@pytest.mark.parametrize('hw', [(32, 32), (13, 10)])
def test_anti_alias_downsample_matches_padded_conv_then_slice(scale, hw):
  """Reference: zero-pad, full 2-D depthwise correlation, keep [::s, ::s]."""
  x = np.random.default_rng(0).normal(size=(2,) + hw + (3,)).astype(np.float32)
  kernel = official_kernel(scale).astype(np.float64)
  k = kernel.shape[0]
  pad = k // 2
  s = int(1 / scale)
  xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  full = np.zeros(x.shape)
  for i in range(k):
    for j in range(k):
      full += kernel[i, j] * xp[:, i:i + hw[0], j:j + hw[1]]
  want = full[:, ::s, ::s]
  got = jax.jit(anti_alias_downsample, static_argnums=1)(x, scale)
  assert got.shape == want.shape == (2, -(-hw[0] // s), -(-hw[1] // s), 3)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-6)


def test_anti_alias_downsample_matches_torch():
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(1).uniform(size=(2, 3, 40, 24)).astype(np.float32)
  for scale in (0.5, 0.25):
    k = torch.tensor(official_kernel(scale))[None, None].repeat(3, 1, 1, 1)
    pad = k.shape[-1] // 2
    s = int(1 / scale)
    want = torch.nn.functional.conv2d(
        torch.nn.functional.pad(torch.tensor(x), (pad, pad, pad, pad)), k,
        groups=3)[:, :, ::s, ::s].numpy()
    got = anti_alias_downsample(jnp.asarray(nhwc(x)), scale)
    np.testing.assert_allclose(np.asarray(got), nhwc(want), atol=1e-6)


def test_image_pyramid_fixture(fixture_arrays):
  fx = fixture_arrays
  driving = nhwc(fx['input/driving'])
  pyramid = jax.jit(image_pyramid, static_argnums=1)(driving,
                                                     (1, 0.5, 0.25, 0.125))
  assert sorted(pyramid) == ['prediction_0.125', 'prediction_0.25',
                             'prediction_0.5', 'prediction_1']
  np.testing.assert_array_equal(np.asarray(pyramid['prediction_1']), driving)
  for scale in ('0.5', '0.25', '0.125'):
    np.testing.assert_allclose(
        np.asarray(pyramid[f'prediction_{scale}']),
        nhwc(fx[f'pyramid/driving.prediction_{scale}']), atol=1e-5, rtol=0)


def test_detector_and_dense_motion_inputs_fixture(fixture_arrays):
  """The KPDetector's 4-channel RGB+depth input and the dense-motion source,
  both anti-aliased at scale 0.25 (256 -> 64)."""
  fx = fixture_arrays
  down = jax.jit(anti_alias_downsample, static_argnums=1)
  rgbd = np.concatenate([nhwc(fx['input/source']), nhwc(fx['depth/source'])],
                        axis=-1)  # (1, 256, 256, 4)
  np.testing.assert_allclose(np.asarray(down(rgbd, 0.25)),
                             nhwc(fx['kp_source/kp_detector.down_out']),
                             atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(down(nhwc(fx['input/source']), 0.25)),
                             nhwc(fx['gen_relative/dense_motion.down_out']),
                             atol=1e-5, rtol=0)


def test_image_pyramid_keys_follow_str_of_scale():
  x = jnp.zeros((1, 8, 8, 1))
  assert list(image_pyramid(x, [1.0, 0.5])) == ['prediction_1.0',
                                                'prediction_0.5']
