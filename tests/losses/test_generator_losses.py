"""Generator / discriminator / keypoint losses (dagan_jax/losses/generator.py)
against torch re-computations of the official GeneratorFullModel and
DiscriminatorFullModel formulas, written out here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax import ops
from dagan_jax.losses import generator as G
from dagan_jax.losses import weights as W

torch = pytest.importorskip("torch")


def _t(x):
  return torch.tensor(np.asarray(x), dtype=torch.float64)


# --------------------------------------------------------------------------
# Perceptual pyramid loss


def _tiny_features(params):
  """A small per-sample 'VGG': 3 conv+relu stages, stride-2 in between."""
  def apply(x):
    outs = []
    for i, w in enumerate(params):
      if i:
        x = x[:, ::2, ::2]
      x = jax.nn.relu(jax.lax.conv_general_dilated(
          x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
      outs.append(x)
    return outs
  return apply


def _torch_tiny_features(params, x):
  """Same network in torch; x is an NHWC float64 tensor."""
  x = x.permute(0, 3, 1, 2)
  outs = []
  for i, w in enumerate(params):
    if i:
      x = x[:, :, ::2, ::2]
    x = torch.relu(torch.nn.functional.conv2d(x, _t(w).permute(3, 2, 0, 1),
                                              padding=1))
    outs.append(x)
  return outs


def test_perceptual_pyramid_loss_matches_official_and_detaches_real():
  rng = np.random.default_rng(0)
  params = [rng.normal(size=(3, 3, 3, 4)), rng.normal(size=(3, 3, 4, 5)),
            rng.normal(size=(3, 3, 5, 6))]
  params = [p.astype(np.float32) for p in params]
  real = {"prediction_1": rng.uniform(size=(2, 16, 16, 3)),
          "prediction_0.5": rng.uniform(size=(2, 8, 8, 3))}
  fake = {k: np.clip(v + 0.1 * rng.normal(size=v.shape), 0, 1)
          for k, v in real.items()}
  real = {k: v.astype(np.float32) for k, v in real.items()}
  fake = {k: v.astype(np.float32) for k, v in fake.items()}
  weights = [10.0, 5.0, 0.0]

  # Official: for scale: x_vgg(fake), y_vgg(real); sum_i w_i |x - y.detach()|.mean()
  fake_t = {k: _t(v).requires_grad_(True) for k, v in fake.items()}
  real_t = {k: _t(v).requires_grad_(True) for k, v in real.items()}
  total = 0
  for key in ("prediction_1", "prediction_0.5"):
    xv = _torch_tiny_features(params, fake_t[key])
    yv = _torch_tiny_features(params, real_t[key])
    for i, w in enumerate(weights):
      total = total + w * torch.abs(xv[i] - yv[i].detach()).mean()
  total.backward()

  vgg_apply = _tiny_features(params)
  for shared in (True, False):
    fn = lambda f, r: G.perceptual_pyramid_loss(vgg_apply, r, f, weights,
                                                shared_batch=shared)["perceptual"]
    val, (g_fake, g_real) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(
        fake, real)
    np.testing.assert_allclose(val, total.item(), rtol=1e-5)
    for k in fake:
      np.testing.assert_allclose(g_fake[k], fake_t[k].grad.numpy(), rtol=1e-4,
                                 atol=1e-7)
      assert float(jnp.abs(g_real[k]).max()) == 0.0  # real under stop_gradient


# --------------------------------------------------------------------------
# LSGAN and feature matching


def _disc_outputs(rng, scales=("1", "0.5")):
  out = {}
  for i, s in enumerate(scales):
    h = 12 // (i + 1)
    out[f"prediction_map_{s}"] = rng.normal(size=(2, h, h, 1)).astype(np.float32)
    out[f"feature_maps_{s}"] = [
        rng.normal(size=(2, h, h, c)).astype(np.float32) for c in (4, 6, 8, 3)]
  return out


def test_lsgan_and_feature_matching_match_official():
  rng = np.random.default_rng(1)
  real, fake = _disc_outputs(rng), _disc_outputs(rng)
  fm_weights = [10.0, 0.0, 2.5, 1.0]
  gen_w, disc_w = 1.0, 1.0

  gen = sum(gen_w * ((1 - _t(fake[f"prediction_map_{s}"])) ** 2).mean()
            for s in ("1", "0.5"))
  disc = sum(disc_w * ((1 - _t(real[f"prediction_map_{s}"])) ** 2
                       + _t(fake[f"prediction_map_{s}"]) ** 2).mean()
             for s in ("1", "0.5"))
  fm = 0
  for s in ("1", "0.5"):
    for i, (a, b) in enumerate(zip(real[f"feature_maps_{s}"],
                                   fake[f"feature_maps_{s}"])):
      if fm_weights[i] == 0:
        continue
      fm = fm + fm_weights[i] * torch.abs(_t(a) - _t(b)).mean()

  np.testing.assert_allclose(G.lsgan_generator_loss(fake)["gen_gan"],
                             gen.item(), rtol=1e-6)
  np.testing.assert_allclose(
      G.lsgan_discriminator_loss(real, fake)["disc_gan"], disc.item(),
      rtol=1e-6)
  np.testing.assert_allclose(
      G.feature_matching_loss(real, fake, fm_weights)["feature_matching"],
      fm.item(), rtol=1e-6)
  # Gradient reaches the fake maps only.
  g_real, g_fake = jax.grad(
      lambda r, f: G.feature_matching_loss(r, f, fm_weights)["feature_matching"],
      argnums=(0, 1))(real, fake)
  assert all(float(jnp.abs(x).max()) == 0
             for x in jax.tree_util.tree_leaves(g_real))
  assert float(jnp.abs(g_fake["feature_maps_1"][0]).max()) > 0
  assert float(jnp.abs(g_fake["feature_maps_1"][1]).max()) == 0  # weight 0
  with pytest.raises(ValueError, match="feature_matching weights"):
    G.feature_matching_loss(real, fake, [1.0, 1.0])


# --------------------------------------------------------------------------
# Keypoint distance


def _torch_official_kp_distance(kp):
  """Official: (-sign(sqrt(|d|^2 + 1e-8) + eye * 0.2 - 0.2) + 1).mean()."""
  v = _t(kp)
  k = v.shape[1]
  d = v.unsqueeze(2) - v.unsqueeze(1)
  return (-torch.sign(torch.sqrt((d * d).sum(-1) + 1e-8)
                      + torch.eye(k, dtype=v.dtype) * 0.2 - 0.2) + 1).mean()


def test_keypoint_distance_sign_matches_official_and_has_zero_gradient():
  rng = np.random.default_rng(2)
  src = rng.uniform(-1, 1, size=(3, 10, 2)).astype(np.float32)
  drv = rng.uniform(-0.3, 0.3, size=(3, 10, 2)).astype(np.float32)  # clustered
  ref = _torch_official_kp_distance(src) + _torch_official_kp_distance(drv)
  got = G.keypoint_distance_terms({"value": src}, {"value": drv})["kp_distance"]
  np.testing.assert_allclose(got, ref.item(), rtol=1e-6)
  assert float(got) > 0
  g = jax.grad(lambda v: G.keypoint_distance_loss(v))(drv)
  assert float(jnp.abs(g).max()) == 0.0


def test_keypoint_distance_hinge():
  kp = np.array([[[0.0, 0.0], [0.05, 0.0], [0.9, 0.9]]], np.float32)
  d01 = np.sqrt(0.05 ** 2 + 1e-8)
  expected = 2 * (0.2 - d01) / 9  # pairs (0,1), (1,0); far pairs 0; /B*K*K
  got = G.keypoint_distance_loss(kp, form="hinge")
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  g = np.asarray(jax.grad(lambda v: G.keypoint_distance_loss(
      v, form="hinge"))(kp))
  assert g[0, 0, 0] > 0 and g[0, 1, 0] < 0  # pushes 0 left and 1 right
  np.testing.assert_array_equal(g[0, 2], 0.0)  # far point untouched
  with pytest.raises(ValueError, match="form"):
    G.keypoint_distance_loss(kp, form="l1")


# --------------------------------------------------------------------------
# Equivariance (needs ops.sample_tps / warp_coordinates / tps_jacobian)

needs_tps = pytest.mark.skipif(
    not all(hasattr(ops, n) for n in ("sample_tps", "warp_coordinates",
                                      "tps_jacobian")),
    reason="dagan_jax.ops TPS functions have not landed yet")


def _random_kp(rng, b=2, k=5):
  value = rng.uniform(-0.8, 0.8, size=(b, k, 2))
  jac = np.eye(2) + 0.3 * rng.normal(size=(b, k, 2, 2))
  return {"value": value, "jacobian": jac}


@needs_tps
def test_equivariance_matches_official_formula():
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    params = ops.sample_tps(jax.random.PRNGKey(0), 2, sigma_affine=0.05,
                            sigma_tps=0.005, points_tps=5)
    kp_d, kp_t = _random_kp(rng), _random_kp(rng)
    got = G.equivariance_losses(kp_d, kp_t, params)
    warped = np.asarray(ops.warp_coordinates(params, jnp.asarray(kp_t["value"])))
    # J_T by autodiff of the warp itself (independent of ops.tps_jacobian):
    # the full (B, K, 2, B, K, 2) Jacobian, keeping each point's own block.
    full = np.asarray(jax.jacfwd(lambda c: ops.warp_coordinates(params, c))(
        jnp.asarray(kp_t["value"])))
    b, k = kp_t["value"].shape[:2]
    j_tps = np.stack([np.stack([full[i, j, :, i, j, :] for j in range(k)])
                      for i in range(b)])  # (B, K, 2, 2): d out_r / d in_c
  value = torch.abs(_t(kp_d["value"]) - _t(warped)).mean()
  jac_t = torch.matmul(_t(j_tps), _t(kp_t["jacobian"]))
  m = torch.matmul(torch.inverse(_t(kp_d["jacobian"])), jac_t)
  jac = torch.abs(torch.eye(2, dtype=m.dtype).view(1, 1, 2, 2) - m).mean()
  np.testing.assert_allclose(got["equivariance_value"], value.item(), rtol=1e-9)
  np.testing.assert_allclose(got["equivariance_jacobian"], jac.item(),
                             rtol=1e-9)


@needs_tps
def test_equivariance_gradient_matches_finite_differences():
  """Gradients reach both keypoint sets, including through J_T(kp_t)."""
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    params = ops.sample_tps(jax.random.PRNGKey(1), 2, sigma_affine=0.05,
                            sigma_tps=0.05, points_tps=5)
    kp_d, kp_t = _random_kp(rng), _random_kp(rng)

    def f(v):
      terms = G.equivariance_losses(kp_d, dict(kp_t, value=v), params)
      return terms["equivariance_value"] + terms["equivariance_jacobian"]

    v = jnp.asarray(kp_t["value"])
    g = np.asarray(jax.grad(f)(v))
    direction = rng.normal(size=v.shape)
    eps = 1e-6
    fd = (f(v + eps * direction) - f(v - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(np.sum(g * direction), fd, rtol=1e-5)


def test_inverse_2x2():
  m = np.random.default_rng(5).normal(size=(3, 4, 2, 2)) + 2 * np.eye(2)
  np.testing.assert_allclose(G.inverse_2x2(jnp.asarray(m)), np.linalg.inv(m),
                             rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Weights


def test_apply_loss_weights_uses_the_config_table():
  lw = {"generator_gan": 2, "discriminator_gan": 3, "equivariance_value": 10,
        "equivariance_jacobian": 5, "kp_distance": 7,
        "perceptual": [10] * 5, "feature_matching": [10] * 4}
  terms = {"perceptual": jnp.array(1.5), "gen_gan": jnp.array(1.0),
           "feature_matching": jnp.array(2.0),
           "equivariance_value": jnp.array(0.1),
           "equivariance_jacobian": jnp.array(0.2),
           "kp_distance": jnp.array(0.3)}
  out = W.apply_loss_weights(terms, lw)
  np.testing.assert_allclose(
      [out[k] for k in terms], [1.5, 2.0, 2.0, 1.0, 1.0, 2.1], rtol=1e-6)
  np.testing.assert_allclose(W.total_loss(out), 9.6, rtol=1e-6)
  with pytest.raises(KeyError, match="bogus"):
    W.apply_loss_weights({"bogus": jnp.array(1.0)}, lw)
