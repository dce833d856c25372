"""Random TPS warps (FOMM's Transform) against numpy and the parity fixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax.ops import grid_sample, make_coordinate_grid
from dagan_jax.ops.tps import (TPSParams, sample_tps, tps_jacobian,
                               warp_coordinates, warp_frame)
from float32_bounds import assert_within_ulps, warp_scale


def nhwc(a):
  return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def np_warp(theta, points, weights, coords):
  """float64 reference of the official warp_coordinates."""
  theta, points, weights, coords = (np.asarray(a, np.float64) for a in
                                    (theta, points, weights, coords))
  out = np.einsum('bij,bnj->bni', theta[:, :, :2], coords) + theta[:, None, :,
                                                                   2]
  if points.shape[0]:
    dist = np.abs(coords[:, :, None, :] - points[None, None]).sum(-1)
    out = out + ((dist ** 2) * np.log(dist + 1e-6) * weights).sum(
        -1, keepdims=True)
  return out


def random_params(seed=0, b=3):
  return sample_tps(jax.random.PRNGKey(seed), b, sigma_affine=0.05,
                    sigma_tps=0.005, points_tps=5)


def test_sample_tps_shapes_and_statistics():
  params = sample_tps(jax.random.PRNGKey(0), 4000, sigma_affine=0.05,
                      sigma_tps=0.005, points_tps=5)
  assert params.theta.shape == (4000, 2, 3)
  assert params.control_points.shape == (25, 2)
  assert params.control_params.shape == (4000, 1, 25)
  np.testing.assert_allclose(np.asarray(params.control_points),
                             np.asarray(make_coordinate_grid((5, 5))).reshape(
                                 25, 2))
  noise = np.asarray(params.theta) - np.eye(2, 3)
  np.testing.assert_allclose(noise.mean(0), 0, atol=0.004)
  np.testing.assert_allclose(noise.std(0), 0.05, rtol=0.05)
  np.testing.assert_allclose(np.asarray(params.control_params).std(), 0.005,
                             rtol=0.05)
  jitted = jax.jit(sample_tps, static_argnums=1,
                   static_argnames=('sigma_affine', 'sigma_tps', 'points_tps'))
  again = jitted(jax.random.PRNGKey(0), 4000, sigma_affine=0.05,
                 sigma_tps=0.005, points_tps=5)
  np.testing.assert_allclose(np.asarray(again.theta), np.asarray(params.theta),
                             rtol=0, atol=1e-6)  # same draw (jit may fuse)
  affine = sample_tps(jax.random.PRNGKey(1), 2, sigma_affine=0.1)
  assert affine.control_points.shape == (0, 2)
  assert affine.control_params.shape == (2, 1, 0)


def test_warp_coordinates_matches_numpy():
  params = random_params(1, b=3)
  coords = np.random.default_rng(2).uniform(-1.2, 1.2, (3, 50, 2)).astype(
      np.float32)
  coords[0, 0] = params.control_points[7]  # exactly on a control point
  got = jax.jit(warp_coordinates)(params, coords)
  want = np_warp(params.theta, params.control_points, params.control_params,
                 coords)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
  # (1, N, 2) coordinates broadcast over the batch of warps
  got1 = warp_coordinates(params, coords[:1])
  want1 = np_warp(params.theta, params.control_points, params.control_params,
                  np.broadcast_to(coords[:1], (3, 50, 2)))
  np.testing.assert_allclose(np.asarray(got1), want1, atol=1e-6)
  # affine only
  affine = sample_tps(jax.random.PRNGKey(3), 3, sigma_affine=0.1)
  np.testing.assert_allclose(
      np.asarray(warp_coordinates(affine, coords)),
      np_warp(affine.theta, np.zeros((0, 2)), None, coords), atol=1e-6)


def test_tps_jacobian_matches_finite_differences():
  params = random_params(4, b=2)
  coords = np.random.default_rng(5).uniform(-1, 1, (2, 6, 2))
  jac = np.asarray(jax.jit(tps_jacobian)(params, coords.astype(np.float32)))
  assert jac.shape == (2, 6, 2, 2)
  eps = 1e-6
  fd = np.zeros((2, 6, 2, 2))
  for j in range(2):
    step = np.zeros(2)
    step[j] = eps
    plus = np_warp(params.theta, params.control_points, params.control_params,
                   coords + step)
    minus = np_warp(params.theta, params.control_points,
                    params.control_params, coords - step)
    fd[..., j] = (plus - minus) / (2 * eps)  # column j: d/dz_j
  np.testing.assert_allclose(jac, fd, atol=2e-5)
  # an affine warp's Jacobian is A everywhere
  affine = sample_tps(jax.random.PRNGKey(6), 2, sigma_affine=0.1)
  np.testing.assert_allclose(
      np.asarray(tps_jacobian(affine, coords.astype(np.float32))),
      np.broadcast_to(np.asarray(affine.theta)[:, None, :, :2], (2, 6, 2, 2)),
      atol=1e-6)


def test_warp_frame_is_grid_sample_of_warped_grid():
  params = random_params(7, b=2)
  frame = np.random.default_rng(8).uniform(size=(2, 9, 11, 3)).astype(
      np.float32)
  got = jax.jit(warp_frame)(params, frame)
  grid = np.asarray(make_coordinate_grid((9, 11))).reshape(1, 99, 2)
  warped = np_warp(params.theta, params.control_points, params.control_params,
                   np.broadcast_to(grid, (2, 99, 2))).reshape(2, 9, 11, 2)
  want = grid_sample(jnp.asarray(frame), jnp.asarray(warped, jnp.float32),
                     padding_mode='reflection')
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.fixture(scope='module')
def fixture_tps(fixture_arrays):
  fx = fixture_arrays
  return TPSParams(jnp.asarray(fx['transform/theta']),
                   jnp.asarray(fx['transform/control_points'].reshape(-1, 2)),
                   jnp.asarray(fx['transform/control_params']))


def test_transform_fixture(fixture_arrays, fixture_tps):
  fx = fixture_arrays
  kp = jnp.asarray(fx['kp_driving/value'])  # (1, 10, 2)
  np.testing.assert_allclose(
      np.asarray(jax.jit(warp_coordinates)(fixture_tps, kp)),
      fx['transform/warp_kp_driving'], atol=1e-5, rtol=0)
  np.testing.assert_allclose(
      np.asarray(jax.jit(tps_jacobian)(fixture_tps, kp)),
      fx['transform/jacobian_at_kp_driving'], atol=1e-5, rtol=0)
  # The warped frame: the warp's rounding (float32_bounds.warp_scale) with
  # warped coordinates up to about 1.3 in magnitude.
  frame = nhwc(fx['input/driving'])
  assert_within_ulps(np.asarray(jax.jit(warp_frame)(fixture_tps, frame)),
                     nhwc(fx['transform/transformed_driving']), 16,
                     scale=warp_scale(frame, 1.5))
