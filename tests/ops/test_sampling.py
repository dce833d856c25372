"""grid_sample / resize against numpy, jax.scipy and torch references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax.ops import sampling
from dagan_jax.ops.sampling import grid_sample, resize_bilinear, resize_nearest
from float32_bounds import assert_within_ulps, warp_scale

MODES = ('zeros', 'border', 'reflection')
CASES = list(itertools.product(MODES, (False, True)))


def np_grid_sample(image, grid, padding_mode, align_corners):
  """float64 numpy reference: bilinear pull warp in torch's conventions."""
  image = np.asarray(image, np.float64)
  grid = np.asarray(grid, np.float64)
  b, h, w, c = image.shape

  def to_pixel(coord, size):
    if align_corners:
      pix = (coord + 1) / 2 * (size - 1)
      low, span = 0.0, size - 1.0
    else:
      pix = ((coord + 1) * size - 1) / 2
      low, span = -0.5, float(size)
    if padding_mode == 'border':
      pix = np.clip(pix, 0, size - 1)
    elif padding_mode == 'reflection':
      t = np.mod(pix - low, 2 * span)  # mirror with period 2 * span
      pix = np.where(t > span, 2 * span - t, t) + low
      pix = np.clip(pix, 0, size - 1)
    return pix

  x = to_pixel(grid[..., 0], w)
  y = to_pixel(grid[..., 1], h)
  x0, y0 = np.floor(x), np.floor(y)
  out = np.zeros(grid.shape[:3] + (c,))
  for dx in (0, 1):
    for dy in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      wgt = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi))
      inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      xc = np.clip(xi, 0, w - 1).astype(int)
      yc = np.clip(yi, 0, h - 1).astype(int)
      vals = image[np.arange(b)[:, None, None], yc, xc]  # (B, h, w, C)
      out += vals * (wgt * inside)[..., None]
  return out


def _random_case(seed, shape=(2, 5, 7, 3), grid_hw=(6, 4), scale=1.5):
  rng = np.random.default_rng(seed)
  image = rng.normal(size=shape).astype(np.float32)
  grid = (rng.uniform(-1, 1, size=(shape[0],) + grid_hw + (2,))
          * scale).astype(np.float32)
  return image, grid


@pytest.mark.parametrize('method', ['gather', 'onehot'])
@pytest.mark.parametrize('padding_mode,align_corners', CASES)
def test_grid_sample_matches_numpy(padding_mode, align_corners, method):
  image, grid = _random_case(0, scale=2.5)  # many points outside the image
  fn = jax.jit(lambda i, g: grid_sample(
      i, g, padding_mode=padding_mode, align_corners=align_corners,
      method=method))
  got = np.asarray(fn(image, grid))
  want = np_grid_sample(image, grid, padding_mode, align_corners)
  assert got.shape == (2, 6, 4, 3)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


@pytest.mark.parametrize('padding_mode,align_corners', CASES)
def test_grid_sample_far_points_exact_and_finite(padding_mode, align_corners):
  """Points many image widths away: reflected the right number of times.

  Coordinates are dyadic so every step is exact in float32 and float64.
  """
  rng = np.random.default_rng(1)
  image = rng.normal(size=(1, 4, 6, 2)).astype(np.float32)
  k = rng.integers(-80000, 80000, size=(1, 8, 8, 2))
  grid = (k / 64.0).astype(np.float32)  # up to ~1250 image widths away
  grid[0, 0, 0] = (1e30, -1e30)  # absurd but finite: must stay finite
  for method in ('gather', 'onehot'):
    got = np.asarray(jax.jit(lambda i, g: grid_sample(
        i, g, padding_mode=padding_mode, align_corners=align_corners,
        method=method))(image, grid))
    assert np.all(np.isfinite(got))
    want = np_grid_sample(image, grid, padding_mode, align_corners)
    np.testing.assert_allclose(got[0, 1:], want[0, 1:], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[0, 0, 1:], want[0, 0, 1:], atol=1e-5)
  grads = jax.jit(jax.grad(lambda i, g: jnp.sum(grid_sample(
      i, g, padding_mode=padding_mode, align_corners=align_corners)),
                           argnums=(0, 1)))(image, grid)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


@pytest.mark.parametrize('padding_mode,align_corners', CASES)
def test_grid_sample_matches_map_coordinates(padding_mode, align_corners):
  """jax.scipy.ndimage.map_coordinates(order=1) in pixel-index coordinates;
  its 'nearest' / 'mirror' / 'reflect' modes are border padding and
  reflection about pixel centres / pixel edges."""
  image, grid = _random_case(2, shape=(1, 6, 9, 2), grid_hw=(5, 5), scale=1.8)
  h, w = image.shape[1:3]
  if align_corners:
    px = (grid[0, ..., 0] + 1) / 2 * (w - 1)
    py = (grid[0, ..., 1] + 1) / 2 * (h - 1)
  else:
    px = ((grid[0, ..., 0] + 1) * w - 1) / 2
    py = ((grid[0, ..., 1] + 1) * h - 1) / 2
  scipy_mode = {'zeros': 'constant', 'border': 'nearest',
                'reflection': 'mirror' if align_corners else 'reflect'}
  want = np.stack([
      jax.scipy.ndimage.map_coordinates(
          jnp.asarray(image[0, ..., ch]), [jnp.asarray(py), jnp.asarray(px)],
          order=1, mode=scipy_mode[padding_mode], cval=0.0)
      for ch in range(image.shape[-1])], axis=-1)
  got = grid_sample(jnp.asarray(image), jnp.asarray(grid),
                    padding_mode=padding_mode, align_corners=align_corners)
  np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want), atol=2e-5)


@pytest.mark.parametrize('padding_mode,align_corners', CASES)
def test_grid_sample_matches_torch_values_and_grads(padding_mode,
                                                    align_corners):
  torch = pytest.importorskip('torch')
  image, grid = _random_case(3, shape=(2, 6, 8, 3), grid_hw=(5, 7), scale=1.6)
  cot = np.random.default_rng(4).normal(size=(2, 5, 7, 3)).astype(np.float32)

  t_img = torch.tensor(image.transpose(0, 3, 1, 2), requires_grad=True)
  t_grid = torch.tensor(grid, requires_grad=True)
  t_out = torch.nn.functional.grid_sample(
      t_img, t_grid, mode='bilinear', padding_mode=padding_mode,
      align_corners=align_corners)
  (t_out * torch.tensor(cot.transpose(0, 3, 1, 2))).sum().backward()
  t_out = t_out.detach().numpy().transpose(0, 2, 3, 1)
  t_gimg = t_img.grad.numpy().transpose(0, 2, 3, 1)
  t_ggrid = t_grid.grad.numpy()

  for method in ('gather', 'onehot'):
    def loss(i, g, method=method):
      out = grid_sample(i, g, padding_mode=padding_mode,
                        align_corners=align_corners, method=method)
      return jnp.sum(out * cot), out
    (_, out), (g_img, g_grid) = jax.jit(jax.value_and_grad(
        loss, argnums=(0, 1), has_aux=True))(image, grid)
    np.testing.assert_allclose(np.asarray(out), t_out, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g_img), t_gimg, atol=1e-5)
    scale = np.abs(t_ggrid).max()
    np.testing.assert_allclose(np.asarray(g_grid), t_ggrid,
                               atol=1e-5 * max(1.0, scale))


@pytest.mark.parametrize('padding_mode,align_corners', CASES)
def test_grid_sample_grads_match_finite_differences(padding_mode,
                                                    align_corners):
  image, grid = _random_case(5, shape=(1, 5, 6, 2), grid_hw=(4, 3), scale=1.7)
  rng = np.random.default_rng(6)
  d_img = rng.normal(size=image.shape)
  d_grid = rng.normal(size=grid.shape)
  with jax.enable_x64(True):
    image64, grid64 = jnp.asarray(image, jnp.float64), jnp.asarray(
        grid, jnp.float64)

    @jax.jit
    def f(i, g):
      return jnp.sum(jnp.sin(grid_sample(
          i, g, padding_mode=padding_mode, align_corners=align_corners)))

    g_img, g_grid = jax.jit(jax.grad(f, argnums=(0, 1)))(image64, grid64)
    eps = 1e-6
    fd_img = (f(image64 + eps * d_img, grid64)
              - f(image64 - eps * d_img, grid64)) / (2 * eps)
    fd_grid = (f(image64, grid64 + eps * d_grid)
               - f(image64, grid64 - eps * d_grid)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.sum(g_img * d_img)), float(fd_img),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(float(jnp.sum(g_grid * d_grid)),
                               float(fd_grid), rtol=1e-6, atol=1e-8)
    # forward mode agrees with reverse mode (no custom rule in the way)
    _, jvp = jax.jit(lambda *a: jax.jvp(f, a[:2], a[2:]))(
        image64, grid64, jnp.asarray(d_img), jnp.asarray(d_grid))
    np.testing.assert_allclose(
        float(jvp), float(jnp.sum(g_img * d_img) + jnp.sum(g_grid * d_grid)),
        rtol=1e-9)


def test_grid_sample_identity_with_align_corners_true():
  """The FOMM coordinate grid hits pixel centres when align_corners=True."""
  from dagan_jax.ops.grid import make_coordinate_grid
  image = np.random.default_rng(7).normal(size=(2, 9, 11, 4)).astype(
      np.float32)
  grid = jnp.broadcast_to(make_coordinate_grid((9, 11)), (2, 9, 11, 2))
  for method in ('gather', 'onehot'):
    out = jax.jit(lambda i, g, m=method: grid_sample(
        i, g, align_corners=True, method=m))(image, grid)
    np.testing.assert_allclose(np.asarray(out), image, atol=1e-6)


def test_onehot_chunking(monkeypatch):
  """The chunked loop of 'onehot' (ragged last chunk) equals 'gather'."""
  monkeypatch.setattr(sampling, '_ONEHOT_MAX_ELEMENTS', 150)  # 4 chunks
  image, grid = _random_case(8, shape=(2, 4, 5, 3), grid_hw=(7, 3), scale=1.3)
  a = jax.jit(lambda i, g: grid_sample(i, g, method='onehot'))(image, grid)
  b = grid_sample(image, grid, padding_mode='zeros', method='gather')
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_grid_sample_rejects_bad_arguments():
  image, grid = _random_case(9)
  with pytest.raises(ValueError, match='padding_mode'):
    grid_sample(image, grid, padding_mode='wrap')
  with pytest.raises(ValueError, match='method'):
    grid_sample(image, grid, method='nearest')
  with pytest.raises(ValueError, match='grid'):
    grid_sample(image, grid[..., :1])


RESIZE_SIZES = [((64, 64), (256, 256)), ((5, 7), (9, 4)), ((8, 6), (3, 5)),
                ((6, 6), (6, 6)), ((4, 5), (8, 10)), ((7, 9), (13, 20))]


@pytest.mark.parametrize('src,dst', RESIZE_SIZES)
def test_resize_bilinear_matches_torch(src, dst):
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(10).normal(size=(2,) + src + (3,)).astype(
      np.float32)
  want = torch.nn.functional.interpolate(
      torch.tensor(x.transpose(0, 3, 1, 2)), size=dst, mode='bilinear',
      align_corners=False).numpy().transpose(0, 2, 3, 1)
  got = np.asarray(jax.jit(lambda a: resize_bilinear(a, dst))(x))
  # A blend of 4 inputs with weights from rounded coordinates: a few ulps of
  # the largest input (not bit for bit: FMA contraction varies by machine).
  assert_within_ulps(got, want, 8, scale=np.abs(x).max())


def test_resize_bilinear_gradient_is_the_transpose():
  """<resize(x), y> == <x, resize^T(y)>: the VJP is the adjoint map."""
  rng = np.random.default_rng(13)
  x = rng.normal(size=(1, 5, 6, 2)).astype(np.float32)
  y = rng.normal(size=(1, 9, 4, 2)).astype(np.float32)
  out, vjp = jax.vjp(lambda a: resize_bilinear(a, (9, 4)), jnp.asarray(x))
  (xt,) = vjp(jnp.asarray(y))
  np.testing.assert_allclose(float(jnp.sum(out * y)), float(jnp.sum(x * xt)),
                             rtol=1e-5)


@pytest.mark.parametrize('src,dst', RESIZE_SIZES + [((3, 3), (5, 7)),
                                                    ((10, 10), (3, 7))])
def test_resize_nearest_matches_torch(src, dst):
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(11).normal(size=(2,) + src + (3,)).astype(
      np.float32)
  want = torch.nn.functional.interpolate(
      torch.tensor(x.transpose(0, 3, 1, 2)), size=dst,
      mode='nearest').numpy().transpose(0, 2, 3, 1)
  got = jax.jit(lambda a: resize_nearest(a, dst))(x)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_resize_nearest_index_rule_many_sizes():
  """torch's floor(d * in / out) rule in float32, for all small sizes."""
  torch = pytest.importorskip('torch')
  for n_in in range(1, 12):
    x = torch.arange(n_in, dtype=torch.float32).view(1, 1, 1, n_in)
    for n_out in range(1, 40):
      want = torch.nn.functional.interpolate(
          x, size=(1, n_out), mode='nearest').numpy()[0, 0, 0]
      np.testing.assert_array_equal(
          sampling._nearest_indices(n_in, n_out), want.astype(int))


@pytest.mark.parametrize('group', ['gen_relative', 'gen_absolute'])
def test_deformed_image_fixture(fixture_arrays, group):
  """Official ``deform_input``: bilinear upsampling of the 64x64 deformation
  to 256x256, then grid_sample of the source image (align_corners=False)."""
  fx = fixture_arrays
  source = np.moveaxis(fx['input/source'], 1, -1)  # (1, 256, 256, 3)
  deformation = fx[f'{group}/deformation']  # (1, 64, 64, 2), already NHWC

  @jax.jit
  def deform(source, deformation):
    grid = resize_bilinear(deformation, source.shape[1:3])
    return grid_sample(source, grid)

  got = np.asarray(deform(source, deformation))
  want = np.moveaxis(fx[f'{group}/deformed'], 1, -1)
  # The warp's rounding: ulps of the upsampled grid move samples
  # (float32_bounds.warp_scale).
  assert_within_ulps(got, want, 8,
                     scale=warp_scale(source, np.abs(deformation).max()))
