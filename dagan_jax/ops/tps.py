"""Random thin-plate-spline warps for the equivariance loss (FOMM Sec. 3.3).

FOMM's ``Transform``, split into an explicit random draw
(:func:`sample_tps`, key first) and pure functions of its parameters.  A
warp maps normalised coordinates ``z = (x, y)`` in [-1, 1] (FOMM grid
convention) to

  T(z) = A [x, y]^T + t  +  sum_p w_p U(|z - c_p|_1) [1, 1]^T,
  U(d) = d^2 log(d + 1e-6),

with the affine part ``theta = [A | t]`` (B, 2, 3), control points ``c_p``
on a P x P FOMM grid, and one weight ``w_p`` per control point shared by both
output coordinates (as in the official code; the distance is the L1 norm
``|dx| + |dy|``, not the Euclidean one).

``warp_frame`` is a pull warp: output pixel z reads the frame at T(z), with
reflection padding and ``align_corners=False`` (the official
``F.grid_sample(frame, grid, padding_mode='reflection')``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dagan_jax.ops.grid import make_coordinate_grid
from dagan_jax.ops.sampling import _rounded, grid_sample


class TPSParams(NamedTuple):
  """Parameters of a batch of random TPS warps.

  Attributes:
    theta: (B, 2, 3) affine part ``[A | t]``.
    control_points: (P*P, 2) control points (x, y), the P x P FOMM grid in
      row-major order; (0, 2) when the warp is affine only.
    control_params: (B, 1, P*P) TPS weights; (B, 1, 0) when affine only.
  """
  theta: jnp.ndarray
  control_points: jnp.ndarray
  control_params: jnp.ndarray


def sample_tps(key: jax.Array, batch_size: int, *, sigma_affine: float,
               sigma_tps: float | None = None,
               points_tps: int | None = None) -> TPSParams:
  """Draws ``batch_size`` random warps (the official ``Transform.__init__``).

  ``theta = I_{2x3} + sigma_affine * N(0, 1)``, ``control_params =
  sigma_tps * N(0, 1)`` on a ``points_tps x points_tps`` grid.  Leave
  ``sigma_tps``/``points_tps`` as None for an affine-only warp.
  Official config (vox-adv-256): sigma_affine 0.05, sigma_tps 0.005,
  points_tps 5.
  """
  key_affine, key_tps = jax.random.split(key)
  noise = sigma_affine * jax.random.normal(key_affine, (batch_size, 2, 3))
  theta = noise + jnp.eye(2, 3)[None]
  if sigma_tps is None or points_tps is None:
    return TPSParams(theta, jnp.zeros((0, 2)), jnp.zeros((batch_size, 1, 0)))
  control_points = make_coordinate_grid((points_tps, points_tps)).reshape(
      points_tps * points_tps, 2)
  control_params = sigma_tps * jax.random.normal(
      key_tps, (batch_size, 1, points_tps * points_tps))
  return TPSParams(theta, control_points, control_params)


def warp_coordinates(params: TPSParams, coords: jnp.ndarray) -> jnp.ndarray:
  """Applies the warps: (B or 1, N, 2) normalised (x, y) -> (B, N, 2).

  The arithmetic follows the official ``warp_coordinates`` step by step
  (products rounded before they are summed, as torch's CPU matmul does).
  """
  theta = params.theta.astype(coords.dtype)  # (B, 2, 3)
  a = theta[:, None, :, :2]  # (B, 1, 2, 2)
  x, y = coords[..., None, 0], coords[..., None, 1]  # (B|1, N, 1)
  affine = (_rounded(a[..., 0] * x) + _rounded(a[..., 1] * y)
            + theta[:, None, :, 2])  # (B, N, 2)
  points = params.control_points.astype(coords.dtype)  # (P2, 2)
  weights = params.control_params.astype(coords.dtype)  # (B, 1, P2)
  if points.shape[0] == 0:
    return affine
  diff = coords[:, :, None, :] - points[None, None]  # (B|1, N, P2, 2)
  dist = jnp.abs(diff[..., 0]) + jnp.abs(diff[..., 1])  # L1, (B|1, N, P2)
  radial = _rounded(dist * dist) * jnp.log(dist + 1e-6)  # U(d)
  bend = jnp.sum(radial * weights, axis=-1, keepdims=True)  # (B, N, 1)
  return affine + bend


def tps_jacobian(params: TPSParams, coords: jnp.ndarray) -> jnp.ndarray:
  """d warp / d coords at each point: (B, N, 2) -> (B, N, 2, 2).

  Row i is the gradient of output coordinate i (x then y) w.r.t. (x, y),
  i.e. ``J[..., i, j] = d T_i / d z_j`` (the official ``Transform.jacobian``
  stacks grad_x then grad_y the same way).  Forward-mode autodiff of the
  per-point map, vmapped over batch and points.  At a control point the
  L1 distance has no derivative; like torch, ``|0|`` differentiates to 0.
  """
  b = params.theta.shape[0]
  coords = jnp.broadcast_to(coords, (b,) + coords.shape[1:])  # (B, N, 2)

  def warp_point(theta, weights, z):  # (2, 3), (1, P2), (2,) -> (2,)
    one = TPSParams(theta[None], params.control_points, weights[None])
    return warp_coordinates(one, z[None, None])[0, 0]

  point_jacobian = jax.jacfwd(warp_point, argnums=2)  # -> (2, 2)
  per_sample = jax.vmap(point_jacobian, in_axes=(None, None, 0))
  return jax.vmap(per_sample)(params.theta, params.control_params, coords)


def warp_frame(params: TPSParams, frame: jnp.ndarray) -> jnp.ndarray:
  """Warps a (B, H, W, C) frame: ``out(z) = frame(T(z))`` (pull warp).

  Reflection padding, ``align_corners=False``, the identity grid of the
  FOMM convention (the official ``transform_frame``).
  """
  b, h, w, _ = frame.shape
  grid = make_coordinate_grid((h, w), frame.dtype).reshape(1, h * w, 2)
  warped = warp_coordinates(params, grid).reshape(b, h, w, 2)
  return grid_sample(frame, warped, padding_mode='reflection')
