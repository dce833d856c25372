"""Keypoint maths against numpy, scipy and the official parity fixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import ConvexHull, QhullError

from dagan_jax.ops import grid_sample
from dagan_jax.ops.keypoints import (convex_hull_area, heatmap_to_keypoints,
                                     inverse_2x2, jacobian_from_maps,
                                     kp_to_gaussian, movement_scale,
                                     normalize_kp, sparse_motions)
from float32_bounds import assert_within_ulps, warp_scale

KP_SETS = ('kp_source', 'kp_driving', 'kp_driving_initial')


def nhwc(a):
  return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def fixture_kp(fx, name):
  return {'value': jnp.asarray(fx[f'{name}/value']),
          'jacobian': jnp.asarray(fx[f'{name}/jacobian'])}


# ----------------------------------------------------------------- heatmaps


def test_kp_to_gaussian_formula_and_leading_dims():
  rng = np.random.default_rng(0)
  value = rng.uniform(-1, 1, size=(2, 3, 4, 2)).astype(np.float32)
  out = np.asarray(jax.jit(kp_to_gaussian, static_argnums=(1, 2))(
      value, (5, 6), 0.01))
  assert out.shape == (2, 3, 5, 6, 4)
  ys, xs = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 6),
                       indexing='ij')
  d2 = ((xs[..., None] - value[:, :, None, None, :, 0]) ** 2
        + (ys[..., None] - value[:, :, None, None, :, 1]) ** 2)
  np.testing.assert_allclose(out, np.exp(-0.5 * d2 / 0.01), atol=1e-6)


@pytest.mark.parametrize('name', KP_SETS)
def test_heatmap_to_keypoints_fixture(fixture_arrays, name):
  fx = fixture_arrays
  logits = nhwc(fx[f'{name}/kp_detector.kp_logits'])  # (1, 58, 58, 10)
  value, heatmap = jax.jit(heatmap_to_keypoints, static_argnums=1)(logits, 0.1)
  np.testing.assert_allclose(np.asarray(value), fx[f'{name}/value'],
                             atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(heatmap).sum(axis=(1, 2)), 1,
                             atol=1e-5)
  if f'{name}/kp_detector.jacobian_map' in fx:
    jmap = nhwc(fx[f'{name}/kp_detector.jacobian_map'])  # (1, 58, 58, 40)
    jac = jax.jit(jacobian_from_maps)(heatmap, jmap)
    np.testing.assert_allclose(np.asarray(jac), fx[f'{name}/jacobian'],
                               atol=1e-5, rtol=0)


def test_jacobian_from_maps_single_map_and_layout():
  """Channel m*4+e, entries row-major; one shared map broadcasts to all K."""
  rng = np.random.default_rng(1)
  b, h, w, k = 2, 4, 5, 3
  heat = rng.uniform(size=(b, h, w, k)).astype(np.float32)
  heat /= heat.sum(axis=(1, 2), keepdims=True)
  maps = rng.normal(size=(b, h, w, 4 * k)).astype(np.float32)
  want = np.einsum('bhwk,bhwke->bke', heat,
                   maps.reshape(b, h, w, k, 4)).reshape(b, k, 2, 2)
  np.testing.assert_allclose(np.asarray(jacobian_from_maps(heat, maps)), want,
                             atol=1e-6)
  single = maps[..., :4]
  want1 = np.einsum('bhwk,bhwe->bke', heat, single).reshape(b, k, 2, 2)
  np.testing.assert_allclose(np.asarray(jacobian_from_maps(heat, single)),
                             want1, atol=1e-6)
  # A constant map [a, b, c, d] gives exactly [[a, b], [c, d]].
  const = np.broadcast_to(np.array([1., 2., 3., 4.], np.float32),
                          (b, h, w, 4))
  np.testing.assert_allclose(np.asarray(jacobian_from_maps(heat, const)),
                             np.broadcast_to([[1., 2.], [3., 4.]],
                                             (b, k, 2, 2)), atol=1e-6)
  with pytest.raises(ValueError, match='jacobian_map'):
    jacobian_from_maps(heat, maps[..., :8])


# ---------------------------------------------------------- sparse motions


def test_inverse_2x2_matches_float64_and_torch():
  """Within a few ulps of the float64 inverse, scaled by the condition number
  (the backward error of LU with partial pivoting is a few ulps; the forward
  error multiplies it by cond(m)); torch's LAPACK result obeys the same bound,
  so the two agree to twice it. Not bit for bit: FMA contraction and the
  library kernel differ between machines."""
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(2)
  m = rng.normal(size=(50, 40, 2, 2)).astype(np.float32)
  m[:10] += np.eye(2, dtype=np.float32)  # some without pivoting
  got = np.asarray(jax.jit(inverse_2x2)(m))
  want = np.linalg.inv(m.astype(np.float64))
  scale = (np.linalg.cond(m.astype(np.float64))
           * np.abs(want).max(axis=(-2, -1)))[..., None, None]
  assert_within_ulps(got, want, 8, scale=scale)
  assert_within_ulps(got, torch.inverse(torch.tensor(m)).numpy(), 16,
                     scale=scale)


def test_sparse_motions_formula():
  rng = np.random.default_rng(3)
  b, k, h, w = 2, 3, 4, 5
  kp_s = {'value': rng.uniform(-1, 1, (b, k, 2)).astype(np.float32),
          'jacobian': (np.eye(2) + 0.3 * rng.normal(size=(b, k, 2, 2))
                       ).astype(np.float32)}
  kp_d = {'value': rng.uniform(-1, 1, (b, k, 2)).astype(np.float32),
          'jacobian': (np.eye(2) + 0.3 * rng.normal(size=(b, k, 2, 2))
                       ).astype(np.float32)}
  out = np.asarray(jax.jit(sparse_motions, static_argnums=2)(kp_s, kp_d,
                                                              (h, w)))
  assert out.shape == (b, k + 1, h, w, 2)
  ys, xs = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w),
                       indexing='ij')
  z = np.stack([xs, ys], -1)  # (h, w, 2)
  np.testing.assert_allclose(out[:, 0], np.broadcast_to(z, (b, h, w, 2)),
                             atol=1e-7)
  for bi in range(b):
    for ki in range(k):
      jac = kp_s['jacobian'][bi, ki] @ np.linalg.inv(kp_d['jacobian'][bi, ki])
      want = (z - kp_d['value'][bi, ki]) @ jac.T + kp_s['value'][bi, ki]
      np.testing.assert_allclose(out[bi, ki + 1], want, atol=2e-5)
  # Without Jacobians: a pure translation by kp_s - kp_d.
  out0 = np.asarray(sparse_motions({'value': kp_s['value']},
                                   {'value': kp_d['value']}, (h, w)))
  shift = (kp_s['value'] - kp_d['value'])[:, :, None, None, :]
  np.testing.assert_allclose(out0[:, 1:], z + shift, atol=1e-6)


def test_sparse_motions_match_official_formula_in_float64():
  """The official create_sparse_motions (J_s inv(J_d) (z - kp_d) + kp_s),
  evaluated in float64 with torch as the reference: every coordinate within
  a few ulps of the terms it sums (|J| |z - kp_d| + |kp_s|), times cond(J_d)
  for the inverse."""
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(12)
  b, k, h, w = 2, 5, 6, 7
  kp_s = {'value': rng.uniform(-1, 1, (b, k, 2)).astype(np.float32),
          'jacobian': (np.eye(2) + 0.4 * rng.normal(size=(b, k, 2, 2))
                       ).astype(np.float32)}
  kp_d = {'value': rng.uniform(-1, 1, (b, k, 2)).astype(np.float32),
          'jacobian': (np.eye(2) + 0.4 * rng.normal(size=(b, k, 2, 2))
                       ).astype(np.float32)}
  t = {n: {key: torch.tensor(v, dtype=torch.float64) for key, v in kp.items()}
       for n, kp in (('s', kp_s), ('d', kp_d))}
  xs = 2 * (torch.arange(w, dtype=torch.float64) / (w - 1)) - 1
  ys = 2 * (torch.arange(h, dtype=torch.float64) / (h - 1)) - 1
  ident = torch.stack([xs.view(1, -1).repeat(h, 1),
                       ys.view(-1, 1).repeat(1, w)], 2).view(1, 1, h, w, 2)
  rel = ident - t['d']['value'].view(b, k, 1, 1, 2)
  jac = torch.matmul(t['s']['jacobian'], torch.inverse(t['d']['jacobian']))
  jac = jac.view(b, k, 1, 1, 2, 2).repeat(1, 1, h, w, 1, 1)
  moved = torch.matmul(jac, rel.unsqueeze(-1)).squeeze(-1)
  moved = moved + t['s']['value'].view(b, k, 1, 1, 2)
  want = torch.cat([ident.repeat(b, 1, 1, 1, 1), moved], 1).numpy()
  got = np.asarray(jax.jit(sparse_motions, static_argnums=2)(kp_s, kp_d, (h, w)))
  # Size of the terms each coordinate sums, and the inverse's conditioning.
  cond = np.linalg.cond(kp_d['jacobian'].astype(np.float64))  # (b, k)
  terms = (np.abs(jac.numpy()) @ np.abs(rel.numpy())[..., None])[..., 0]
  terms = terms + np.abs(kp_s['value'])[:, :, None, None, :] + 1
  scale = np.concatenate([np.ones((b, 1, h, w, 2)),
                          terms * cond[:, :, None, None, None]], axis=1)
  assert_within_ulps(got, want, 16, scale=scale)


@pytest.mark.parametrize('group,driving', [('gen_relative', 'kp_norm'),
                                           ('gen_absolute', 'kp_driving')])
def test_sparse_deformed_fixture(fixture_arrays, group, driving):
  """The dense-motion network's K+1 warped 64x64 sources (DaGAN Eq. 7)."""
  fx = fixture_arrays
  source = nhwc(fx['gen_relative/dense_motion.down_out'])  # (1, 64, 64, 3)
  kp_s, kp_d = fixture_kp(fx, 'kp_source'), fixture_kp(fx, driving)

  @jax.jit
  def deform(source, kp_s, kp_d):
    b, h, w, c = source.shape
    motions = sparse_motions(kp_s, kp_d, (h, w))  # (B, K+1, h, w, 2)
    n = motions.shape[1]
    # Warp the one source by all K+1 grids at once (no repeated copies).
    out = grid_sample(source, motions.reshape(b, n * h, w, 2))
    return out.reshape(b, n, h, w, c)

  got = np.asarray(deform(source, kp_s, kp_d))
  want = np.moveaxis(fx[f'{group}/sparse_deformed'], 2, -1)  # (1, 11, 64, 64, 3)
  # The warp's rounding (float32_bounds.warp_scale), the grid's ulps
  # amplified by the inverse of J_d (its condition number).
  grid = np.asarray(sparse_motions(kp_s, kp_d, source.shape[1:3]))
  cond = np.linalg.cond(np.asarray(kp_d['jacobian'], np.float64)).max()
  assert_within_ulps(got, want, 16,
                     scale=warp_scale(source, cond * np.abs(grid).max()))


# ------------------------------------------------------- relative motion


def test_normalize_kp_fixture(fixture_arrays):
  fx = fixture_arrays
  kps = [fixture_kp(fx, n) for n in ('kp_source', 'kp_driving',
                                     'kp_driving_initial')]
  fn = jax.jit(lambda s, d, d0: normalize_kp(
      s, d, d0, adapt_movement_scale=True, use_relative_movement=True,
      use_relative_jacobian=True, return_scale=True))
  kp_new, scale = fn(*kps)
  assert scale.shape == (1,)
  np.testing.assert_allclose(float(scale[0]),
                             float(fx['kp_norm/adapt_movement_scale']),
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(kp_new['value']), fx['kp_norm/value'],
                             atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(kp_new['jacobian']),
                             fx['kp_norm/jacobian'], atol=1e-5, rtol=0)


def test_normalize_kp_flags():
  rng = np.random.default_rng(4)
  mk = lambda: {'value': jnp.asarray(rng.uniform(-1, 1, (2, 5, 2)),
                                     jnp.float32),
                'jacobian': jnp.asarray(np.eye(2) + 0.2 * rng.normal(
                    size=(2, 5, 2, 2)), jnp.float32)}
  kp_s, kp_d, kp_d0 = mk(), mk(), mk()
  same = normalize_kp(kp_s, kp_d, kp_d0)
  assert same['value'] is kp_d['value'] and same['jacobian'] is kp_d['jacobian']
  rel = normalize_kp(kp_s, kp_d, kp_d0, use_relative_movement=True)
  np.testing.assert_allclose(
      np.asarray(rel['value']),
      np.asarray(kp_d['value'] - kp_d0['value'] + kp_s['value']), atol=1e-6)
  assert rel['jacobian'] is kp_d['jacobian']
  # Per-batch-element scale: element b uses its own hulls.
  _, scale = jax.jit(lambda s, d, d0: normalize_kp(
      s, d, d0, adapt_movement_scale=True, use_relative_movement=True,
      return_scale=True))(kp_s, kp_d, kp_d0)
  for b in range(2):
    want = np.sqrt(ConvexHull(np.asarray(kp_s['value'][b])).volume
                   / ConvexHull(np.asarray(kp_d0['value'][b])).volume)
    np.testing.assert_allclose(float(scale[b]), want, rtol=1e-5)
  # The scale carries no gradient, like the official numpy computation.
  g = jax.jit(jax.grad(lambda v: jnp.sum(movement_scale({'value': v},
                                                         kp_d0))))(
      kp_s['value'])
  assert np.all(np.asarray(g) == 0)


def _scipy_area(points):
  try:
    return ConvexHull(points).volume
  except (QhullError, ValueError):
    return 0.0  # degenerate (collinear / coincident / too few points)


def test_convex_hull_area_random_sets():
  rng = np.random.default_rng(5)
  area = jax.jit(convex_hull_area)
  for n in (3, 4, 7, 10, 15, 30):
    pts = rng.normal(size=(20, n, 2)).astype(np.float32)
    got = np.asarray(area(pts))
    want = np.array([_scipy_area(p) for p in pts])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_convex_hull_area_degenerate_sets():
  rng = np.random.default_rng(6)
  line = np.linspace(-1, 1, 7)
  cases = {
      'single point': np.zeros((1, 2)),
      'two points': np.array([[0., 0.], [1., 2.]]),
      'all coincident': np.ones((5, 2)),
      'collinear': np.stack([line, 0.5 * line + 0.1], -1),
      'collinear shuffled + duplicates': np.stack(
          [line, -line], -1)[[3, 0, 6, 6, 2, 0, 5, 1, 4]],
      'vertical line': np.stack([np.zeros(5), np.arange(5.)], -1),
      'lattice 4x4 (collinear edges)': np.stack(np.meshgrid(
          np.arange(4.), np.arange(4.)), -1).reshape(-1, 2),
      'square with midpoints': np.array(
          [[0, 0], [1, 0], [2, 0], [2, 1], [2, 2], [1, 2], [0, 2], [0, 1],
           [1, 1]], float),
      'triangle with duplicate vertices': np.array(
          [[0, 0], [3, 0], [0, 4], [0, 0], [3, 0], [1, 1]], float),
      'near duplicates': np.array(
          [[0, 0], [1e-7, 0], [1, 0], [1, 1 + 1e-7], [1, 1], [0, 1]], float),
      'nearly collinear midpoint': np.array(
          [[0, 0], [0.5, 1e-7], [1, 0], [0.5, 1]], float),
      'random with repeats': rng.normal(size=(6, 2))[[0, 1, 2, 3, 4, 5, 2, 4]],
  }
  area = jax.jit(convex_hull_area)
  for name, pts in cases.items():
    pts = pts.astype(np.float32)
    got = float(area(pts))
    want = _scipy_area(pts.astype(np.float64))
    assert abs(got - want) <= 1e-5 * max(1.0, want), (name, got, want)
    # permutation invariance
    perm = rng.permutation(len(pts))
    assert abs(float(area(pts[perm])) - got) <= 1e-5 * max(1.0, want), name
