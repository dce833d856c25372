"""Camera geometry for self-supervised face depth (DaGAN Sec. 3.1, DaGAN++
Eq. 3-4), in monodepth2's conventions as used by Face-Depth-Network.

* Pixel coordinates ``(u, v)`` are in pixels: ``u`` = column index, ``v`` =
  row index, pixel centres at integers (0 .. W-1, 0 .. H-1).
* ``K`` is the pinhole intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``
  in pixels, given as (B, 3, 3) or padded to (B, 4, 4).
* ``T`` (B, 4, 4) maps homogeneous points of the *target* camera into the
  *source* camera: ``X_s = T X_t``.  View synthesis (DaGAN++ Eq. 3-4) is a
  pull warp: for each target pixel ``p_t``,
  ``p_s ~ K T D_t(p_t) K^{-1} p_t`` and the synthesised target is the source
  image sampled bilinearly at ``p_s``.
* ``project`` returns ``p_s`` normalised for :func:`grid_sample` the way
  monodepth2 does it, ``2 u / (W - 1) - 1`` (the ``align_corners=True``
  placement).  The official code then calls ``grid_sample`` with torch's
  default ``align_corners=False`` (a ~W/(W-1) mismatch that the networks
  absorb); :func:`inverse_warp` defaults to the geometrically exact
  ``align_corners=True`` and takes ``align_corners=False`` to reproduce the
  official sampling.
* Multi-scale intrinsics are the caller's business (Face-Depth-Network
  divides the first two rows of K by ``2**scale`` and truncates them).
"""

from __future__ import annotations

import jax.numpy as jnp

from dagan_jax.ops.sampling import PaddingMode, grid_sample


def rot_from_axisangle(vec: jnp.ndarray) -> jnp.ndarray:
  """Axis-angle (B, 3) -> homogeneous rotation (B, 4, 4) (Rodrigues).

  ``angle = |vec|``, ``axis = vec / (angle + 1e-7)`` as in monodepth2; a
  zero vector gives the identity with a finite (zero-safe) gradient.
  """
  sq = jnp.sum(vec ** 2, axis=-1, keepdims=True)  # (B, 1)
  positive = sq > 0
  angle = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)
  axis = vec / (angle + 1e-7)  # (B, 3)
  ca, sa = jnp.cos(angle)[:, 0], jnp.sin(angle)[:, 0]  # (B,)
  c = 1 - ca
  x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
  rot = jnp.stack([
      jnp.stack([x * x * c + ca, x * y * c - z * sa, z * x * c + y * sa], -1),
      jnp.stack([x * y * c + z * sa, y * y * c + ca, y * z * c - x * sa], -1),
      jnp.stack([z * x * c - y * sa, y * z * c + x * sa, z * z * c + ca], -1),
  ], axis=-2)  # (B, 3, 3)
  return _homogeneous(rot)


def _homogeneous(rot: jnp.ndarray, trans: jnp.ndarray | None = None
                 ) -> jnp.ndarray:
  """[[R, t], [0, 1]] from (B, 3, 3) and optional (B, 3)."""
  b = rot.shape[0]
  if trans is None:
    trans = jnp.zeros((b, 3), rot.dtype)
  top = jnp.concatenate([rot, trans[:, :, None]], axis=-1)  # (B, 3, 4)
  bottom = jnp.broadcast_to(jnp.asarray([0, 0, 0, 1], rot.dtype), (b, 1, 4))
  return jnp.concatenate([top, bottom], axis=1)  # (B, 4, 4)


def transformation_from_parameters(axisangle: jnp.ndarray,
                                   translation: jnp.ndarray,
                                   invert: bool = False) -> jnp.ndarray:
  """Pose network output -> (B, 4, 4) camera transform (monodepth2).

  ``M = [R | t]`` (rotate, then translate); with ``invert`` the inverse
  ``[R^T | -R^T t]`` (monodepth2 uses it for frames before the target).

  Args:
    axisangle: (B, 3).
    translation: (B, 3).
    invert: return the inverse transform.
  """
  rot = rot_from_axisangle(axisangle)[:, :3, :3]  # (B, 3, 3)
  if invert:
    rot_t = jnp.swapaxes(rot, -1, -2)
    return _homogeneous(rot_t, -jnp.einsum('bij,bj->bi', rot_t, translation))
  return _homogeneous(rot, translation)


def disp_to_depth(disp: jnp.ndarray, min_depth: float, max_depth: float
                  ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Sigmoid disparity -> (scaled_disp, depth), monodepth2's mapping.

  ``scaled = 1 / max_depth + (1 / min_depth - 1 / max_depth) * disp`` and
  ``depth = 1 / scaled``, so disp 0 -> max_depth and 1 -> min_depth.
  """
  min_disp, max_disp = 1 / max_depth, 1 / min_depth
  scaled = min_disp + (max_disp - min_disp) * disp
  return scaled, 1 / scaled


def _as_3x3(m: jnp.ndarray) -> jnp.ndarray:
  if m.shape[-2:] not in ((3, 3), (4, 4)):
    raise ValueError(f'intrinsics must be (B, 3, 3) or (B, 4, 4), got '
                     f'{m.shape}')
  return m[..., :3, :3]


def _as_4x4(m: jnp.ndarray) -> jnp.ndarray:
  m3 = _as_3x3(m)
  return _homogeneous(m3)


def pixel_grid(height: int, width: int, dtype=jnp.float32) -> jnp.ndarray:
  """(H, W, 3) homogeneous pixel coordinates ``(u, v, 1)`` (u = column)."""
  v, u = jnp.meshgrid(jnp.arange(height, dtype=dtype),
                      jnp.arange(width, dtype=dtype), indexing='ij')
  return jnp.stack([u, v, jnp.ones_like(u)], axis=-1)


def backproject(depth: jnp.ndarray, inv_k: jnp.ndarray) -> jnp.ndarray:
  """Depth map -> homogeneous camera points ``[D K^{-1} (u, v, 1), 1]``.

  Args:
    depth: (B, H, W, 1) depth along the optical axis (z).
    inv_k: (B, 3, 3) or (B, 4, 4) inverse intrinsics.

  Returns:
    (B, H, W, 4) points ``(X, Y, Z, 1)`` with ``Z == depth``.
  """
  _, h, w, _ = depth.shape
  pix = pixel_grid(h, w, depth.dtype)  # (H, W, 3)
  rays = jnp.einsum('bij,hwj->bhwi', _as_3x3(inv_k), pix)  # (B, H, W, 3)
  points = depth * rays
  return jnp.concatenate([points, jnp.ones_like(depth)], axis=-1)


def project(points: jnp.ndarray, k: jnp.ndarray, t: jnp.ndarray,
            eps: float = 1e-7) -> jnp.ndarray:
  """Camera points -> normalised pixel coordinates in the other view.

  ``[x, y, z] = (K T)[:3] X``, ``(u, v) = (x, y) / (z + eps)``, then
  ``2 u / (W - 1) - 1`` and ``2 v / (H - 1) - 1`` (monodepth2's Project3D;
  pixel centres at +-1 in the ``align_corners=True`` sense).

  Args:
    points: (B, H, W, 4) homogeneous points in the target camera.
    k: (B, 3, 3) or (B, 4, 4) intrinsics of the source camera.
    t: (B, 4, 4) target -> source transform.

  Returns:
    (B, H, W, 2) sampling grid ``(x, y)`` for ``grid_sample``.
  """
  _, h, w, _ = points.shape
  proj = jnp.matmul(_as_4x4(k), t)[:, :3, :]  # (B, 3, 4)
  cam = jnp.einsum('bij,bhwj->bhwi', proj, points)  # (B, H, W, 3)
  pix = cam[..., :2] / (cam[..., 2:3] + eps)  # (B, H, W, 2) in pixels
  size = jnp.asarray([w - 1, h - 1], points.dtype)
  return (pix / size - 0.5) * 2


def inverse_warp(source_image: jnp.ndarray, depth: jnp.ndarray,
                 t: jnp.ndarray, k: jnp.ndarray, *,
                 padding_mode: PaddingMode = 'border',
                 align_corners: bool = True,
                 eps: float = 1e-7) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Synthesises the target view from the source (DaGAN++ Eq. 3-4).

  Each target pixel is lifted with its depth, moved by ``t`` into the source
  camera, projected with ``k`` and the source image is sampled there (pull
  warp, bilinear, monodepth2's border padding by default).

  Args:
    source_image: (B, H, W, C) source view.
    depth: (B, H, W, 1) depth of the *target* view.
    t: (B, 4, 4) target -> source transform.
    k: (B, 3, 3) or (B, 4, 4) intrinsics (shared by both views).
    padding_mode: ``grid_sample`` padding.
    align_corners: True (default) makes the identity pose the exact identity
      warp; False reproduces the official ``grid_sample`` call.
    eps: added to the projected depth before the division.

  Returns:
    ``(warped (B, H, W, C), valid (B, H, W, 1))`` where ``valid`` is 1.0 for
    target pixels whose point lies in front of the source camera and
    projects onto the source image, pixel footprints included
    (``-0.5 <= u <= W - 0.5``, same for v), else 0.0.
  """
  k3 = _as_3x3(k)
  inv_k = jnp.linalg.inv(k3)
  points = backproject(depth, inv_k)  # (B, H, W, 4)
  grid = project(points, k3, t, eps)  # (B, H, W, 2)
  warped = grid_sample(source_image, grid, padding_mode=padding_mode,
                       align_corners=align_corners)
  z = jnp.einsum('bj,bhwj->bhw', jnp.matmul(_as_4x4(k3), t)[:, 2, :],
                 points)[..., None]  # depth in the source camera
  _, h, w, _ = depth.shape
  half_pixel = jnp.asarray([1 / (w - 1), 1 / (h - 1)], grid.dtype)
  inside = jnp.all(jnp.abs(grid) <= 1 + half_pixel, axis=-1, keepdims=True)
  valid = (inside & (z > eps)).astype(source_image.dtype)
  return warped, valid
