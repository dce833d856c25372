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

  np.testing.assert_allclose(jax.jit(G.lsgan_generator_loss)(fake)["gen_gan"],
                             gen.item(), rtol=1e-6)
  np.testing.assert_allclose(
      jax.jit(G.lsgan_discriminator_loss)(real, fake)["disc_gan"], disc.item(),
      rtol=1e-6)
  fm_loss = lambda r, f: G.feature_matching_loss(r, f, fm_weights)[
      "feature_matching"]
  np.testing.assert_allclose(jax.jit(fm_loss)(real, fake), fm.item(),
                             rtol=1e-6)
  # Gradient reaches the fake maps only.
  g_real, g_fake = jax.jit(jax.grad(fm_loss, argnums=(0, 1)))(real, fake)
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
# Equivariance


def _random_kp(rng, b=2, k=5):
  value = rng.uniform(-0.8, 0.8, size=(b, k, 2))
  jac = np.eye(2) + 0.3 * rng.normal(size=(b, k, 2, 2))
  return {"value": value, "jacobian": jac}


def _torch_warp(params, coords):
  """The official Transform.warp_coordinates from the TPSParams arrays."""
  theta = _t(params.theta).unsqueeze(1)  # (B, 1, 2, 3)
  out = (torch.matmul(theta[:, :, :, :2], coords.unsqueeze(-1))
         + theta[:, :, :, 2:]).squeeze(-1)
  cp = _t(params.control_points).view(1, 1, -1, 2)
  d = torch.abs(coords.view(coords.shape[0], -1, 1, 2) - cp).sum(-1)
  r = d ** 2 * torch.log(d + 1e-6) * _t(params.control_params)
  return out + r.sum(dim=2).view(coords.shape[0], coords.shape[1], 1)


def _torch_equivariance(kp_d, kp_t, params):
  """Official value + jacobian terms, with autograd Jacobian (create_graph)."""
  coords = _t(kp_t["value"]).requires_grad_(True)
  warped = _torch_warp(params, coords)
  value = torch.abs(_t(kp_d["value"]) - warped).mean()
  gx = torch.autograd.grad(warped[..., 0].sum(), coords, create_graph=True)[0]
  gy = torch.autograd.grad(warped[..., 1].sum(), coords, create_graph=True)[0]
  j_tps = torch.cat([gx.unsqueeze(-2), gy.unsqueeze(-2)], dim=-2)
  m = torch.matmul(torch.inverse(_t(kp_d["jacobian"])),
                   torch.matmul(j_tps, _t(kp_t["jacobian"])))
  jac = torch.abs(torch.eye(2, dtype=m.dtype).view(1, 1, 2, 2) - m).mean()
  (grad,) = torch.autograd.grad(value + jac, coords)
  return value.item(), jac.item(), grad.numpy()


def test_equivariance_matches_official_values_and_gradient():
  """Values and d(loss)/d(transformed keypoints), which also flows through
  the TPS Jacobian evaluated at those keypoints (official create_graph)."""
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    params = ops.sample_tps(jax.random.PRNGKey(0), 2, sigma_affine=0.05,
                            sigma_tps=0.05, points_tps=5)
    params = jax.tree_util.tree_map(np.asarray, params)
    kp_d, kp_t = _random_kp(rng), _random_kp(rng)

    def f(v):
      terms = G.equivariance_losses(kp_d, dict(kp_t, value=v), params)
      return terms["equivariance_value"] + terms["equivariance_jacobian"], terms

    (_, terms), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(
        jnp.asarray(kp_t["value"]))
  value, jac, ref_grad = _torch_equivariance(kp_d, kp_t, params)
  np.testing.assert_allclose(terms["equivariance_value"], value, rtol=1e-9)
  np.testing.assert_allclose(terms["equivariance_jacobian"], jac, rtol=1e-9)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-7, atol=1e-10)


def test_equivariance_is_zero_for_consistent_keypoints():
  """kp_d = T(kp_t) and J_d = J_T J_t make both terms vanish."""
  rng = np.random.default_rng(4)
  params = ops.sample_tps(jax.random.PRNGKey(1), 2, sigma_affine=0.05,
                          sigma_tps=0.005, points_tps=5)
  kp_t = {k: jnp.asarray(v, jnp.float32) for k, v in _random_kp(rng).items()}

  @jax.jit
  def consistent_terms(params, kp_t):
    kp_d = {"value": ops.warp_coordinates(params, kp_t["value"]),
            "jacobian": ops.tps_jacobian(params, kp_t["value"])
                        @ kp_t["jacobian"]}
    no_jac = G.equivariance_losses({"value": kp_d["value"]}, kp_t, params)
    return G.equivariance_losses(kp_d, kp_t, params), no_jac

  terms, no_jac = consistent_terms(params, kp_t)
  assert float(terms["equivariance_value"]) < 1e-7
  assert float(terms["equivariance_jacobian"]) < 1e-5
  assert set(no_jac) == {"equivariance_value"}


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
