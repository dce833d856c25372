"""Depth-learning losses (dagan_jax/losses/depth.py) against numpy written
here and against the behaviour DaGAN++ Eq. 5-8 / monodepth2 prescribe."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax.losses import depth as D

# One compiled program per option set instead of op-by-op dispatch.
depth_losses = jax.jit(D.depth_losses, static_argnames=(
    "use_automask", "alpha", "ssim_halved", "mask_regularizer"))


def _reflect_index(i, n):
  """PyTorch ReflectionPad2d index map for padding 1 (no edge repeat)."""
  if i < 0:
    return -i
  if i >= n:
    return 2 * (n - 1) - i
  return i


def _np_ssim(x, y, c1=0.01 ** 2, c2=0.03 ** 2):
  """Direct loops: 3x3 windows over the reflection-padded images."""
  b, h, w, c = x.shape
  out = np.zeros_like(x, dtype=np.float64)
  for bi in range(b):
    for i in range(h):
      for j in range(w):
        rows = [_reflect_index(i + di, h) for di in (-1, 0, 1)]
        cols = [_reflect_index(j + dj, w) for dj in (-1, 0, 1)]
        px = x[bi][np.ix_(rows, cols)].reshape(9, c).astype(np.float64)
        py = y[bi][np.ix_(rows, cols)].reshape(9, c).astype(np.float64)
        mx, my = px.mean(0), py.mean(0)
        vx = (px ** 2).mean(0) - mx ** 2
        vy = (py ** 2).mean(0) - my ** 2
        cxy = (px * py).mean(0) - mx * my
        out[bi, i, j] = ((2 * mx * my + c1) * (2 * cxy + c2) /
                         ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
  return out


def test_ssim_matches_direct_numpy_and_is_one_on_itself():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(2, 7, 9, 3)).astype(np.float32)
  y = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
  got = np.asarray(jax.jit(D.ssim_map)(x, y))
  np.testing.assert_allclose(got, _np_ssim(x, y), rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(D.ssim_map(x, x), 1.0, atol=1e-5)
  assert np.all(got < 1.0)


def test_photometric_error_forms():
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(1, 6, 5, 3)).astype(np.float32)
  y = rng.uniform(size=(1, 6, 5, 3)).astype(np.float32)
  ssim = _np_ssim(x, y)
  l1 = np.abs(x - y).mean(-1, keepdims=True)
  mono = 0.85 * np.clip((1 - ssim) / 2, 0, 1).mean(-1, keepdims=True) + 0.15 * l1
  paper = 0.8 * (1 - ssim).mean(-1, keepdims=True) + 0.2 * l1
  np.testing.assert_allclose(D.photometric_error(x, y), mono, rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(
      D.photometric_error(x, y, 0.8, ssim_halved=False), paper, rtol=1e-4,
      atol=1e-5)
  np.testing.assert_allclose(D.photometric_error(x, y, 0.0), l1, rtol=1e-6)
  assert D.photometric_error(x, x).shape == (1, 6, 5, 1)
  np.testing.assert_allclose(D.photometric_error(x, x), 0.0, atol=1e-6)


def test_smoothness_zero_for_constant_and_matches_numpy():
  rng = np.random.default_rng(2)
  img = rng.uniform(size=(2, 8, 10, 3)).astype(np.float32)
  const = np.full((2, 8, 10, 1), 0.3, np.float32)
  assert float(D.edge_aware_smoothness(const, img)) == 0.0
  disp = rng.uniform(0.1, 1.0, size=(2, 8, 10, 1)).astype(np.float32)
  n = disp / (disp.mean(axis=(1, 2), keepdims=True) + 1e-7)
  gx = np.abs(np.diff(n, axis=2)) * np.exp(-np.abs(np.diff(img, axis=2)).mean(-1, keepdims=True))
  gy = np.abs(np.diff(n, axis=1)) * np.exp(-np.abs(np.diff(img, axis=1)).mean(-1, keepdims=True))
  np.testing.assert_allclose(D.edge_aware_smoothness(disp, img),
                             gx.mean() + gy.mean(), rtol=1e-5)
  # Mean normalisation: scaling the disparity changes nothing.
  np.testing.assert_allclose(D.edge_aware_smoothness(7.0 * disp, img),
                             D.edge_aware_smoothness(disp, img), rtol=1e-5)
  # An image edge where the disparity jumps discounts the penalty.
  step = np.zeros((1, 4, 6, 1), np.float32)
  step[:, :, 3:] = 1.0
  flat_img = np.zeros((1, 4, 6, 3), np.float32)
  edge_img = np.repeat(step, 3, axis=-1)
  assert (float(D.edge_aware_smoothness(step + 1, edge_img))
          < float(D.edge_aware_smoothness(step + 1, flat_img)))


def test_min_over_sources_picks_the_better_source():
  rng = np.random.default_rng(3)
  target = rng.uniform(size=(1, 6, 6, 3)).astype(np.float32)
  good = target.copy()
  good[:, :, :3] = rng.uniform(size=(1, 6, 3, 3))  # left half wrong
  other = target.copy()
  other[:, :, 3:] = rng.uniform(size=(1, 6, 3, 3))  # right half wrong
  warped = np.stack([good, other])
  errors = jax.vmap(lambda p: D.photometric_error(p, target, 0.0))(warped)
  m, idx = D.min_over_sources(errors)
  np.testing.assert_array_equal(idx[0, :, 3:, 0], 0)  # source 0 is right here
  np.testing.assert_array_equal(idx[0, :, :3, 0], 1)
  np.testing.assert_allclose(m, np.minimum(errors[0], errors[1]))
  # Through depth_losses (no automask): only the min enters the loss.
  terms, _ = depth_losses(target, warped, warped, np.ones((1, 6, 6, 1)),
                            use_automask=False, alpha=0.0)
  np.testing.assert_allclose(terms["photometric"], float(m.mean()), rtol=1e-6)


def test_automask_excludes_pixels_where_identity_is_better():
  rng = np.random.default_rng(4)
  target = rng.uniform(size=(1, 5, 8, 3)).astype(np.float32)
  source = target.copy()
  source[:, :, 4:] = rng.uniform(size=(1, 5, 4, 3))  # moving right half
  warped = target.copy()  # warping fixes the right half ...
  warped[:, :, :4] = rng.uniform(size=(1, 5, 4, 3))  # ... and breaks the left
  pe = lambda p: D.photometric_error(p, target, 0.0)
  rep, ident = pe(warped)[None], pe(source)[None]
  am = D.automask(rep, ident, key=jax.random.PRNGKey(0))
  mask = np.asarray(am["mask"])[0, ..., 0]
  assert np.all(mask[:, 4:] == 1) and np.all(mask[:, :4] == 0)
  expected = (np.asarray(rep) < np.asarray(ident)).astype(np.float32)[0]
  np.testing.assert_array_equal(np.asarray(am["mask"]), expected)
  # Without noise, exact ties (identical source and warped) go to identity.
  tie = D.automask(rep, rep)
  assert float(tie["mask"].sum()) == 0.0
  # monodepth2's value: min(identity, reprojection) everywhere.
  terms, aux = depth_losses(target, warped[None], source[None],
                              np.ones((1, 5, 8, 1), np.float32), alpha=0.0)
  np.testing.assert_allclose(
      terms["photometric"], np.minimum(rep, ident).mean(), rtol=1e-6)
  np.testing.assert_allclose(aux["automask_fraction"], 0.5)


def test_automask_blocks_gradient_of_masked_pixels():
  """Only kept pixels carry gradient to the warped image."""
  rng = np.random.default_rng(5)
  target = rng.uniform(size=(1, 4, 6, 3)).astype(np.float32)
  source = target.copy()
  source[:, :, 3:] += 0.3
  warped = target + 0.05 * rng.normal(size=target.shape).astype(np.float32)
  warped[:, :, :3] += 0.5  # left: identity is better -> masked

  def loss(w):
    terms, _ = depth_losses(target, w[None], source[None],
                              np.ones((1, 4, 6, 1), np.float32), alpha=0.0)
    return terms["photometric"]

  g = np.asarray(jax.grad(loss)(warped))
  assert np.all(g[:, :, :3] == 0)
  assert np.any(g[:, :, 3:] != 0)


def test_uncertainty_optimum_is_lambda1_pe_over_lambda3():
  """Eq. 7 per pixel: lambda1 pe / U + lambda3 log U is minimal at
  U* = lambda1 pe / lambda3; larger error -> larger optimal uncertainty."""
  pe = jnp.array([0.05, 0.2, 0.4, 0.1]).reshape(1, 2, 2, 1)
  mask = jnp.array([1.0, 1.0, 1.0, 0.0]).reshape(1, 2, 2, 1)
  lam1, lam3 = 1.0, 2.0
  w = {"photometric": lam1, "uncertainty": lam3, "smoothness": 0.0}

  def objective(u):
    terms = D.uncertainty_weighted_loss(pe, u, mask)
    return sum(D.weighted_depth_terms(terms, w).values())

  u_star = lam1 * pe / lam3
  g = jax.grad(objective)(u_star)
  # Each of the two cancelling parts is lambda3 / (4 U*) ~ 20 here.
  np.testing.assert_allclose(g, 0.0, atol=1e-5)
  g_lo = np.asarray(jax.grad(objective)(0.5 * u_star)).ravel()
  g_hi = np.asarray(jax.grad(objective)(1.5 * u_star)).ravel()
  assert np.all(g_lo[:3] < 0) and np.all(g_hi[:3] > 0)  # a minimum
  assert g_lo[3] == 0 and g_hi[3] == 0  # masked pixel: no pull on U
  # Exact value, against the formula written out.
  u = jnp.full((1, 2, 2, 1), 0.3)
  terms = D.uncertainty_weighted_loss(pe, u, mask)
  np.testing.assert_allclose(terms["photometric"],
                             float(jnp.mean(mask * pe / 0.3)), rtol=1e-6)
  np.testing.assert_allclose(terms["uncertainty"],
                             float(jnp.mean(mask * jnp.log(0.3))), rtol=1e-6)
  # The paper-literal form keeps log U on masked pixels too.
  lit = D.uncertainty_weighted_loss(pe, u, mask, mask_regularizer=False)
  np.testing.assert_allclose(lit["uncertainty"], np.log(0.3), rtol=1e-6)


def test_uncertainty_gradient_descent_reaches_optimum():
  """Gradient descent on the sigmoid logit of U (Eq. 8) converges to U*."""
  pe = jnp.array([0.1, 0.3]).reshape(1, 1, 2, 1)

  def objective(z):
    return sum(D.uncertainty_weighted_loss(pe, jax.nn.sigmoid(z)).values())

  z = jnp.zeros_like(pe)
  step = jax.jit(lambda z: z - 0.5 * jax.grad(objective)(z))
  for _ in range(3000):
    z = step(z)
  np.testing.assert_allclose(jax.nn.sigmoid(z), pe, rtol=1e-3)


def test_depth_losses_with_per_source_uncertainty():
  rng = np.random.default_rng(6)
  target = rng.uniform(size=(1, 4, 4, 3)).astype(np.float32)
  warped = np.stack([target + 0.01, target + 0.2]).astype(np.float32)
  sources = np.stack([target + 0.3, target + 0.3]).astype(np.float32)
  u = np.stack([np.full((1, 4, 4, 1), 0.5), np.full((1, 4, 4, 1), 0.1)])
  terms, aux = depth_losses(target, warped, sources,
                              np.ones((1, 4, 4, 1), np.float32),
                              uncertainty=u.astype(np.float32), alpha=0.0)
  # Source 0 wins everywhere (error 0.01), so its U = 0.5 is used.
  np.testing.assert_allclose(aux["automask"], 1.0)
  np.testing.assert_allclose(terms["photometric"], 0.01 / 0.5, rtol=1e-4)
  np.testing.assert_allclose(terms["uncertainty"], np.log(0.5), rtol=1e-6)
  weighted = D.weighted_depth_terms(terms, scale=2)
  np.testing.assert_allclose(weighted["smoothness"], 0.0)
  with pytest.raises(KeyError):
    D.weighted_depth_terms({"bogus": 1.0})


def test_smoothness_weight_halves_per_scale():
  terms = {"photometric": jnp.array(1.0), "smoothness": jnp.array(1.0)}
  for s in range(4):
    w = D.weighted_depth_terms(terms, scale=s)
    np.testing.assert_allclose(w["smoothness"], 1e-3 / 2 ** s)


def _torch_photometric(torch, target, warped, sources):
  """monodepth2's ``compute_losses`` photometric part, written here in torch:
  SSIM (reflection pad 1, 3x3 mean), 0.85 clamp((1 - SSIM) / 2) + 0.15 L1,
  then the min over ``cat(identity, reprojection)`` (no tie-breaking noise)."""
  nn = torch.nn

  def ssim(x, y):
    pool, pad = nn.AvgPool2d(3, 1), nn.ReflectionPad2d(1)
    x, y = pad(x), pad(y)
    mu_x, mu_y = pool(x), pool(y)
    s_x = pool(x ** 2) - mu_x ** 2
    s_y = pool(y ** 2) - mu_y ** 2
    s_xy = pool(x * y) - mu_x * mu_y
    n = (2 * mu_x * mu_y + 0.01 ** 2) * (2 * s_xy + 0.03 ** 2)
    d = (mu_x ** 2 + mu_y ** 2 + 0.01 ** 2) * (s_x + s_y + 0.03 ** 2)
    return torch.clamp((1 - n / d) / 2, 0, 1)

  def reprojection(pred, tgt):
    l1 = (tgt - pred).abs().mean(1, True)
    return 0.85 * ssim(pred, tgt).mean(1, True) + 0.15 * l1

  rep = torch.cat([reprojection(w, target) for w in warped], 1)
  ident = torch.cat([reprojection(s, target) for s in sources], 1)
  return torch.min(torch.cat([ident, rep], 1), dim=1)[0].mean()


def test_photometric_gradient_equals_monodepth2_with_ties():
  """Value and gradient w.r.t. the warped views equal torch's, including
  pixels where the two sources tie (torch.min sends the gradient to the
  first) and where a warped view equals the unwarped one (ties go to the
  identity: no gradient)."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(11)
  target = rng.uniform(size=(2, 8, 10, 3)).astype(np.float32)
  sources = rng.uniform(size=(2, 2, 8, 10, 3)).astype(np.float32)
  warped = (target[None] + 0.1 * rng.normal(size=sources.shape)).astype(np.float32)
  warped[1, :, :, :5] = warped[0, :, :, :5]  # the two sources tie on the left
  warped[0, 1] = sources[0, 1]  # sample 1: warping gains nothing from source 0

  def loss(w):
    terms, _ = D.depth_losses(jnp.asarray(target), w, jnp.asarray(sources),
                              jnp.ones((2, 8, 10, 1)), key=None)
    return terms["photometric"]

  value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(warped))
  nchw = lambda a: torch.tensor(np.moveaxis(a, -1, -3).copy())  # noqa: E731
  w_t = nchw(warped).requires_grad_(True)
  want = _torch_photometric(torch, nchw(target), w_t, nchw(sources))
  want.backward()
  np.testing.assert_allclose(float(value), want.item(), rtol=1e-5)
  want_grad = np.moveaxis(w_t.grad.numpy(), -3, -1)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-7)
  grad = np.asarray(grad)
  # Sample 0, columns 0-2 reach only errors of pixels where the sources tie
  # (3x3 SSIM windows): the first source takes the whole gradient.
  assert np.all(grad[1, 0, :, :3] == 0) and np.any(grad[0, 0, :, :3] != 0)
  # Sample 1: source 0's reprojection ties with its identity error
  # everywhere, and ties go to the identity.
  assert np.all(grad[0, 1] == 0) and np.any(grad[1, 1] != 0)


def test_depth_loss_gradient_finite_when_compiled_at_llvm_o0():
  """Regression: with ``jnp.min`` over the sources, XLA recomputed the
  photometric error inside two fusions that LLVM -O0 rounds differently,
  the operand no longer matched its own minimum and the gradient was 0/0
  (NaN at thousands of pixels for these inputs). The argmin-based minimum
  does not compare floats again, so any compilation gives the same finite
  gradient."""
  from dagan_jax import ops
  rng = np.random.default_rng(0)
  b, h, w = 1, 32, 32
  target = jnp.asarray(rng.uniform(size=(b, h, w, 3)), jnp.float32)
  sources = jnp.asarray(rng.uniform(size=(2, b, h, w, 3)), jnp.float32)
  k = jnp.asarray([[[w * 0.8, 0, w / 2], [0, h * 0.8, h / 2], [0, 0, 1]]],
                  jnp.float32)

  def loss(disp, pose):
    _, depth = ops.disp_to_depth(jax.nn.sigmoid(disp), 0.1, 100.0)
    warped = jnp.stack([ops.inverse_warp(
        sources[s], depth,
        ops.transformation_from_parameters(pose[s, :, :3], pose[s, :, 3:]),
        k)[0] for s in range(2)])
    terms, _ = D.depth_losses(target, warped, sources, jax.nn.sigmoid(disp),
                              key=jax.random.key(0))
    return terms["photometric"]

  grad = jax.grad(loss, argnums=(0, 1))
  o0 = jax.jit(grad, compiler_options={"xla_backend_optimization_level": 0})
  default = jax.jit(grad)
  for seed in range(3):
    r = np.random.default_rng(seed)
    disp = jnp.asarray(r.normal(size=(b, h, w, 1)), jnp.float32)
    pose = jnp.asarray(0.01 * r.normal(size=(2, b, 6)), jnp.float32)
    got, want = o0(disp, pose), default(disp, pose)
    for g, ref in zip(got, want):
      assert np.all(np.isfinite(np.asarray(g)))
      np.testing.assert_allclose(np.asarray(g), np.asarray(ref), rtol=1e-3,
                                 atol=1e-6)
