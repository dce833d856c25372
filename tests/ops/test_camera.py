"""Camera geometry: rotations, poses, back-projection and view synthesis."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

from dagan_jax.ops import grid_sample, make_coordinate_grid
from dagan_jax.ops.camera import (backproject, disp_to_depth, inverse_warp,
                                  project, rot_from_axisangle,
                                  transformation_from_parameters)


def intrinsics(b, fx, fy, cx, cy):
  k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float32)
  return jnp.asarray(np.broadcast_to(k, (b, 3, 3)))


def test_rot_from_axisangle_matches_scipy_and_round_trips():
  vec = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
  rot = np.asarray(jax.jit(rot_from_axisangle)(vec))
  assert rot.shape == (6, 4, 4)
  np.testing.assert_allclose(rot[:, :3, :3],
                             Rotation.from_rotvec(vec).as_matrix(), atol=1e-5)
  np.testing.assert_array_equal(rot[:, 3], np.broadcast_to([0, 0, 0, 1],
                                                           (6, 4)))
  np.testing.assert_array_equal(rot[:, :3, 3], 0)
  back = np.asarray(jax.jit(rot_from_axisangle)(-vec))
  np.testing.assert_allclose(rot @ back, np.broadcast_to(np.eye(4), rot.shape),
                             atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(rot[:, :3, :3]), 1, atol=1e-5)


def test_rot_from_axisangle_zero_is_identity_with_finite_gradient():
  zero = jnp.zeros((2, 3))
  np.testing.assert_allclose(np.asarray(rot_from_axisangle(zero)),
                             np.broadcast_to(np.eye(4), (2, 4, 4)), atol=1e-7)
  grad = jax.jit(jax.grad(lambda v: jnp.sum(rot_from_axisangle(v) ** 3)))(
      zero)
  assert np.all(np.isfinite(np.asarray(grad)))


def test_transformation_from_parameters_and_inverse():
  rng = np.random.default_rng(1)
  axisangle = (0.3 * rng.normal(size=(4, 3))).astype(np.float32)
  translation = rng.normal(size=(4, 3)).astype(np.float32)
  fwd = np.asarray(jax.jit(transformation_from_parameters,
                           static_argnums=2)(axisangle, translation, False))
  inv = np.asarray(jax.jit(transformation_from_parameters, static_argnums=2)(
      axisangle, translation, True))
  np.testing.assert_allclose(fwd[:, :3, :3],
                             Rotation.from_rotvec(axisangle).as_matrix(),
                             atol=1e-5)
  np.testing.assert_allclose(fwd[:, :3, 3], translation, atol=1e-6)
  np.testing.assert_allclose(fwd @ inv, np.broadcast_to(np.eye(4), fwd.shape),
                             atol=1e-5)


def test_disp_to_depth():
  disp = jnp.asarray([0.0, 0.5, 1.0])
  scaled, depth = jax.jit(disp_to_depth, static_argnums=(1, 2))(disp, 0.1,
                                                                100.0)
  np.testing.assert_allclose(np.asarray(depth)[[0, 2]], [100.0, 0.1],
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(scaled), 0.01 + 9.99 * np.asarray(disp),
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(scaled * depth), 1, rtol=1e-6)


def test_backproject_then_project_is_identity():
  b, h, w = 2, 6, 8
  k = intrinsics(b, 5.0, 6.0, 3.5, 2.5)
  depth = jnp.asarray(np.random.default_rng(2).uniform(1, 3, (b, h, w, 1)),
                      jnp.float32)
  points = jax.jit(backproject)(depth, jnp.linalg.inv(k))
  assert points.shape == (b, h, w, 4)
  np.testing.assert_allclose(np.asarray(points[..., 2:3]), np.asarray(depth),
                             rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(points[..., 3]), 1)
  # X = (u - cx) Z / fx
  np.testing.assert_allclose(
      np.asarray(points[0, 1, 4, 0]),
      (4 - 3.5) * float(depth[0, 1, 4, 0]) / 5.0, rtol=1e-5)
  grid = jax.jit(project)(points, k, jnp.broadcast_to(jnp.eye(4), (b, 4, 4)))
  xs, ys = np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h))
  np.testing.assert_allclose(np.asarray(grid),
                             np.broadcast_to(np.stack([xs, ys], -1),
                                             (b, h, w, 2)), atol=1e-5)


def test_inverse_warp_identity_pose():
  b, h, w = 2, 12, 16
  rng = np.random.default_rng(3)
  source = jnp.asarray(rng.uniform(size=(b, h, w, 3)), jnp.float32)
  depth = jnp.asarray(rng.uniform(1, 5, (b, h, w, 1)), jnp.float32)
  k = intrinsics(b, 10.0, 10.0, 7.5, 5.5)
  eye = jnp.broadcast_to(jnp.eye(4), (b, 4, 4))
  warped, valid = jax.jit(inverse_warp)(source, depth, eye, k)
  np.testing.assert_allclose(np.asarray(warped), np.asarray(source),
                             atol=1e-5)
  assert np.all(np.asarray(valid) == 1)


def test_inverse_warp_translation_of_fronto_parallel_plane():
  """A plane at depth Z seen after a camera shift t_x: image moves by
  fx * t_x / Z pixels (here 32 * 0.5 / 4 = 4)."""
  b, h, w = 1, 10, 24
  fx, z, tx = 32.0, 4.0, 0.5
  shift = int(fx * tx / z)
  source = jnp.asarray(np.random.default_rng(4).uniform(size=(b, h, w, 2)),
                       jnp.float32)
  depth = jnp.full((b, h, w, 1), z)
  k = intrinsics(b, fx, fx, (w - 1) / 2, (h - 1) / 2)
  t = jnp.asarray(np.eye(4, dtype=np.float32)[None])
  t = t.at[:, 0, 3].set(tx)  # X_s = X_t + t
  warped, valid = jax.jit(inverse_warp)(source, depth, t, k)
  np.testing.assert_allclose(np.asarray(warped[:, :, :w - shift]),
                             np.asarray(source[:, :, shift:]), atol=1e-5)
  valid = np.asarray(valid)[0, :, :, 0]
  assert np.all(valid[:, :w - shift] == 1) and np.all(valid[:, w - shift:] == 0)
  # a point behind the source camera is never valid
  _, valid_behind = jax.jit(inverse_warp)(source, depth,
                                          t.at[:, 2, 3].set(-10.0), k)
  assert np.all(np.asarray(valid_behind) == 0)


def test_inverse_warp_official_sampling_option():
  """align_corners=False reproduces the official (slightly scaled) sampling."""
  b, h, w = 1, 8, 8
  source = jnp.asarray(np.random.default_rng(5).uniform(size=(b, h, w, 1)),
                       jnp.float32)
  k = intrinsics(b, 8.0, 8.0, 3.5, 3.5)
  eye = jnp.eye(4)[None]
  warped, _ = jax.jit(lambda *a: inverse_warp(*a, align_corners=False))(
      source, jnp.ones((b, h, w, 1)), eye, k)
  want = jax.jit(lambda s: grid_sample(
      s, make_coordinate_grid((h, w))[None], padding_mode='border'))(source)
  np.testing.assert_allclose(np.asarray(warped), np.asarray(want), atol=1e-5)
