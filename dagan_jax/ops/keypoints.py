"""Keypoint maths: heatmaps, soft-argmax, Jacobians, sparse motions, relative
motion transfer.

Conventions: keypoints are dicts ``{'value': (B, K, 2), 'jacobian': (B, K, 2,
2)}`` with values ``(x, y)`` in [-1, 1] on FOMM's coordinate grid
(:func:`dagan_jax.ops.grid.make_coordinate_grid`: ``x`` along the width,
pixel centres at ``2 i / (n - 1) - 1``); heatmaps are channels-last
``(B, H, W, K)``.  A Jacobian ``J`` maps offsets ``(dx, dy)`` (column vector,
row 0 = x) near the keypoint: ``J @ [dx, dy]^T``.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax.ops.grid import make_coordinate_grid
from dagan_jax.ops.sampling import _rounded  # blocks FMA contraction

KP = Mapping[str, jnp.ndarray]


def kp_to_gaussian(value: jnp.ndarray, spatial_size: tuple[int, int],
                   kp_variance: float) -> jnp.ndarray:
  """Gaussian blobs centred on keypoints (FOMM's ``kp2gaussian``).

  ``out[..., i, j, k] = exp(-0.5 * |grid[i, j] - value[..., k]|^2 / var)``
  with ``grid`` the (H, W, 2) FOMM coordinate grid (unnormalised Gaussian,
  peak 1, isotropic variance ``kp_variance`` in normalised units).

  Args:
    value: (..., K, 2) keypoints (x, y) in [-1, 1].
    spatial_size: (H, W).
    kp_variance: the variance (official config: 0.01).

  Returns:
    (..., H, W, K) heatmaps, channels last.
  """
  grid = make_coordinate_grid(spatial_size, value.dtype)  # (H, W, 2)
  diff = grid[:, :, None, :] - value[..., None, None, :, :]  # (..., H, W, K, 2)
  return jnp.exp(-0.5 * jnp.sum(diff ** 2, axis=-1) / kp_variance)


def heatmap_to_keypoints(logits: jnp.ndarray, temperature: float
                         ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Soft-argmax of the KPDetector (FOMM Sec. 3.2; DaGAN Sec. 3.2).

  ``heatmap = softmax over the h*w positions of logits / temperature`` per
  keypoint, ``value[b, k] = sum_{i,j} heatmap[b, i, j, k] * grid[i, j]`` with
  the (h, w) FOMM grid: the expected (x, y) location.

  Args:
    logits: (B, h, w, K) raw detector output.
    temperature: softmax temperature (official config: 0.1).

  Returns:
    ``(value (B, K, 2), heatmap (B, h, w, K))``; each heatmap sums to 1.
  """
  b, h, w, k = logits.shape
  flat = logits.reshape(b, h * w, k) / temperature
  heatmap = jax.nn.softmax(flat, axis=1).reshape(b, h, w, k)
  grid = make_coordinate_grid((h, w), heatmap.dtype)  # (h, w, 2)
  # A reduction, not a dot: XLA's CPU dot accumulates these 3364-term sums
  # sequentially (errors ~1e-5); the tree reduction stays at ~1e-7.
  value = jnp.sum(heatmap[..., None] * grid[:, :, None, :], axis=(1, 2))
  return value, heatmap  # (B, K, 2), (B, h, w, K)


def jacobian_from_maps(heatmap: jnp.ndarray,
                       jacobian_map: jnp.ndarray) -> jnp.ndarray:
  """Heatmap-weighted average of the predicted Jacobian maps (FOMM Eq. 5).

  ``jacobian_map`` holds J maps of 4 entries each, channel ``m * 4 + e`` for
  map ``m`` and entry ``e`` in row-major order ``(a, b, c, d) -> [[a, b], [c,
  d]]``, as the official KPDetector reshapes its (B, 4J, h, w) output.  J is
  K (one map per keypoint) or 1 (``single_jacobian_map``, shared by all).

  Args:
    heatmap: (B, h, w, K) softmax heatmaps (each sums to 1).
    jacobian_map: (B, h, w, 4 * J).

  Returns:
    (B, K, 2, 2) Jacobians ``sum_{i,j} heatmap[.., i, j, k] * map[i, j]``.
  """
  b, h, w, k = heatmap.shape
  n_maps = jacobian_map.shape[-1] // 4
  if jacobian_map.shape[-1] != 4 * n_maps or n_maps not in (1, k):
    raise ValueError(f'jacobian_map must have 4 or 4*K={4 * k} channels, got '
                     f'{jacobian_map.shape}')
  maps = jacobian_map.reshape(b, h, w, n_maps, 4)  # J = 1 broadcasts to K
  # Reduction rather than dot for accuracy (see heatmap_to_keypoints).
  jac = jnp.sum(heatmap[..., None] * maps, axis=(1, 2))  # (B, K, 4)
  return jac.reshape(b, k, 2, 2)


def _matmul_2x2(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """(..., 2, 2) @ (..., 2, 2) as ``a[i,0] b[0,j] + a[i,1] b[1,j]`` with each
  product rounded (torch's CPU matmul order, no FMA), so the result is
  bit-equal to torch's; XLA would otherwise fuse one product into the add."""
  p0 = _rounded(a[..., :, 0, None] * b[..., None, 0, :])
  p1 = _rounded(a[..., :, 1, None] * b[..., None, 1, :])
  return p0 + p1


def _matvec_2x2(m: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
  """(..., 2, 2) @ (..., 2) in the same rounding order as ``_matmul_2x2``."""
  p0 = _rounded(m[..., 0] * v[..., None, 0])  # (..., 2): m[i, 0] v[0]
  p1 = _rounded(m[..., 1] * v[..., None, 1])
  return p0 + p1


def inverse_2x2(m: jnp.ndarray) -> jnp.ndarray:
  """Inverse of (..., 2, 2) matrices, bit-equal to ``torch.inverse`` on CPU.

  torch computes ``inv(A)`` as ``solve(A, I)``: LU with partial pivoting
  (rows swapped when ``|A[1,0]| > |A[0,0]|``), multiplier ``l = a1 / a0``,
  ``u11 = b1 - l * b0``, then for each column of the (permuted) identity a
  forward substitution and a back substitution that multiplies by the
  reciprocals of the pivots.  Written out here for 2x2 so that it is exact,
  branch-free (``where``) and cheap on any accelerator.  A singular matrix
  gives inf/nan (torch raises).
  """
  a, b = m[..., 0, 0], m[..., 0, 1]
  c, d = m[..., 1, 0], m[..., 1, 1]
  swap = jnp.abs(c) > jnp.abs(a)  # partial pivoting
  a0, b0 = jnp.where(swap, c, a), jnp.where(swap, d, b)  # pivot row
  a1, b1 = jnp.where(swap, a, c), jnp.where(swap, b, d)
  lower = a1 / a0
  u11 = b1 - _rounded(lower * b0)
  r00, r11 = _rounded(1 / a0), _rounded(1 / u11)
  one, zero = jnp.ones_like(a), jnp.zeros_like(a)
  cols = []
  for j in (0, 1):  # column j of the identity, rows permuted like A
    e0 = jnp.where(swap, one if j == 1 else zero, one if j == 0 else zero)
    e1 = jnp.where(swap, one if j == 0 else zero, one if j == 1 else zero)
    y1 = e1 - _rounded(lower * e0)  # forward substitution (unit L)
    x1 = _rounded(y1 * r11)  # back substitution (U)
    x0 = (e0 - _rounded(x1 * b0)) * r00
    cols.append(jnp.stack([x0, x1], axis=-1))  # (..., 2) column j
  return jnp.stack(cols, axis=-1)  # (..., 2, 2)


def sparse_motions(kp_source: KP, kp_driving: KP,
                   spatial_size: tuple[int, int]) -> jnp.ndarray:
  """First-order (Taylor) backward motions T_{S<-D} per keypoint.

  DaGAN++ Eq. 10 / FOMM Eq. 4: for a driving-frame location ``z``,
  ``T_k(z) = kp_s[k] + J_s[k] J_d[k]^{-1} (z - kp_d[k])``; the Jacobian
  product is skipped when ``kp_driving`` has no 'jacobian' (zeroth order).
  Slot 0 is the identity grid (the background motion).  The result is a
  pull-warp grid for :func:`dagan_jax.ops.sampling.grid_sample`.  The
  arithmetic follows torch's order exactly, so the grids are bit-equal to
  the official ``create_sparse_motions`` on CPU.

  Args:
    kp_source: {'value': (B, K, 2), 'jacobian': (B, K, 2, 2)}.
    kp_driving: same keys.
    spatial_size: (H, W) of the motion field.

  Returns:
    (B, K+1, H, W, 2) sampling grids (x, y) in source-image coordinates.
  """
  v_s, v_d = kp_source['value'], kp_driving['value']  # (B, K, 2)
  b = v_d.shape[0]
  grid = make_coordinate_grid(spatial_size, v_d.dtype)  # (H, W, 2)
  coords = grid[None, None] - v_d[:, :, None, None, :]  # (B, K, H, W, 2)
  if 'jacobian' in kp_driving:
    jac = _matmul_2x2(kp_source['jacobian'],
                      inverse_2x2(kp_driving['jacobian']))  # (B, K, 2, 2)
    coords = _matvec_2x2(jac[:, :, None, None], coords)  # (B, K, H, W, 2)
  motions = coords + v_s[:, :, None, None, :]  # (B, K, H, W, 2)
  identity = jnp.broadcast_to(grid, (b, 1) + grid.shape)  # (B, 1, H, W, 2)
  return jnp.concatenate([identity, motions], axis=1)


def _canonical_triples(n: int):
  """For every ordered triple (i, j, k): its indices sorted, and the sign of
  the sorting permutation (static numpy arrays, flattened)."""
  idx = np.stack(np.meshgrid(np.arange(n), np.arange(n), np.arange(n),
                             indexing='ij'), -1).reshape(-1, 3)
  order = np.argsort(idx, axis=1, kind='stable')
  srt = np.take_along_axis(idx, order, axis=1)
  # parity of the permutation `order` of 3 elements: count inversions
  inv = ((order[:, 0] > order[:, 1]).astype(int)
         + (order[:, 0] > order[:, 2]) + (order[:, 1] > order[:, 2]))
  sign = np.where(inv % 2 == 0, 1.0, -1.0)
  return srt[:, 0], srt[:, 1], srt[:, 2], sign


def convex_hull_area(points: jnp.ndarray) -> jnp.ndarray:
  """Area of the convex hull of N 2-D points, jittable (no Qhull).

  Equals ``scipy.spatial.ConvexHull(points).volume`` (0 for degenerate sets,
  where Qhull raises).  A directed pair ``i -> j`` is a hull edge iff every
  point is strictly left of the line i->j, or on it and within the closed
  segment [p_i, p_j]; among coincident points only the first (lowest index)
  may be an edge end.  So collinear boundary points never split or double an
  edge, and the shoelace sum ``0.5 * sum_edges (x_i y_j - x_j y_i)`` over the
  selected edges is the area.  The orientation of each unordered triple is
  computed once (canonical index order) and shared by its permutations, and
  "within the segment" uses lexicographic (x, y) order, so the predicates
  are consistent for nearly collinear points in floating point.  O(N^3)
  work: trivial for keypoint counts (N = 10-68).

  Args:
    points: (..., N, 2).

  Returns:
    (...) areas, >= 0.
  """
  n = points.shape[-2]
  p = points - jnp.mean(points, axis=-2, keepdims=True)  # better rounding
  x, y = p[..., 0], p[..., 1]  # (..., N)
  same_x = x[..., :, None] == x[..., None, :]  # (..., N, N)
  same = same_x & (y[..., :, None] == y[..., None, :])  # coincident points

  a, b, c, sign = _canonical_triples(n)
  pa, pb, pc = p[..., a, :], p[..., b, :], p[..., c, :]  # (..., n^3, 2)
  u, v = pb - pa, pc - pa
  orient = (u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]) * sign
  # A triple with two coincident points is exactly collinear; say so
  # explicitly (a fused multiply-add can leave a rounding residue there).
  degenerate = same[..., a, b] | same[..., a, c] | same[..., b, c]
  orient = jnp.where(degenerate, 0, orient)
  orient = orient.reshape(p.shape[:-2] + (n, n, n))  # k left of i->j if > 0

  # le[..., s, t]: p_s <= p_t in lexicographic (x, y) order.
  le = (x[..., :, None] < x[..., None, :]) | (
      same_x & (y[..., :, None] <= y[..., None, :]))
  le_t = jnp.swapaxes(le, -1, -2)  # le_t[..., s, t] = p_t <= p_s
  between = ((le[..., :, None, :] & le_t[..., None, :, :])  # p_i<=p_k<=p_j
             | (le[..., None, :, :] & le_t[..., :, None, :]))  # p_j<=p_k<=p_i
  ok = (orient > 0) | ((orient == 0) & between)  # (..., i, j, k)
  earlier = jnp.asarray(np.tril(np.ones((n, n), bool), -1))  # [i, k]: k < i
  first = ~jnp.any(same & earlier, axis=-1)  # (..., N)
  edge = (jnp.all(ok, axis=-1) & ~same & first[..., :, None]
          & first[..., None, :])  # (..., i, j)
  prod = x[..., :, None] * y[..., None, :]  # x_i y_j
  cross = prod - jnp.swapaxes(prod, -1, -2)  # exactly antisymmetric
  return 0.5 * jnp.sum(jnp.where(edge, cross, 0), axis=(-2, -1))


def movement_scale(kp_source: KP, kp_driving_initial: KP) -> jnp.ndarray:
  """``sqrt(hull_area(kp_source)) / sqrt(hull_area(kp_driving_initial))``
  per batch element, (B,), under ``stop_gradient`` (the official code
  computes it with scipy on numpy arrays, so no gradient flows)."""
  area_s = convex_hull_area(kp_source['value'])
  area_d = convex_hull_area(kp_driving_initial['value'])
  return jax.lax.stop_gradient(jnp.sqrt(area_s) / jnp.sqrt(area_d))


def normalize_kp(kp_source: KP, kp_driving: KP, kp_driving_initial: KP, *,
                 adapt_movement_scale: bool = False,
                 use_relative_movement: bool = False,
                 use_relative_jacobian: bool = False,
                 return_scale: bool = False):
  """Relative motion transfer of the official demo (FOMM Sec. 4, Eq. 14-15).

  With relative movement the driving keypoints become
  ``kp_s + scale * (kp_d - kp_d0)`` and, with relative Jacobians,
  ``J_d J_d0^{-1} J_s``; ``scale = sqrt(area(hull(kp_s))) /
  sqrt(area(hull(kp_d0)))`` when ``adapt_movement_scale`` else 1.  Keys other
  than 'value'/'jacobian' are passed through from ``kp_driving``.

  Difference from the official code: it computes the scale from batch
  element 0 and applies it to the whole batch; here each batch element gets
  its own scale (identical for B = 1, the demo's case).

  Args:
    kp_source, kp_driving, kp_driving_initial: keypoint dicts, (B, K, 2)
      values and (B, K, 2, 2) Jacobians.
    adapt_movement_scale, use_relative_movement, use_relative_jacobian: the
      demo's flags (``--adapt_scale``, ``--relative`` for both).
    return_scale: also return the (B,) scale.

  Returns:
    the new keypoint dict, or ``(kp_new, scale)`` if ``return_scale``.
  """
  v_d = kp_driving['value']
  if adapt_movement_scale:
    scale = movement_scale(kp_source, kp_driving_initial)
  else:
    scale = jnp.ones(v_d.shape[:1], v_d.dtype)
  kp_new = dict(kp_driving)
  if use_relative_movement:
    diff = (v_d - kp_driving_initial['value']) * scale[:, None, None]
    kp_new['value'] = diff + kp_source['value']
    if use_relative_jacobian:
      jac_diff = _matmul_2x2(kp_driving['jacobian'],
                             inverse_2x2(kp_driving_initial['jacobian']))
      kp_new['jacobian'] = _matmul_2x2(jac_diff, kp_source['jacobian'])
  if return_scale:
    return kp_new, scale
  return kp_new
