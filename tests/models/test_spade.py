"""SPADEDepthAwareGenerator against an independent torch re-implementation.

No official SPADE fixture ships in ``shared/``, so the SPADE decoder is
checked against a torch module written here from the released architecture
(Park et al. 2019 SPADE blocks, ``torch.nn.utils.spectral_norm`` convs,
``'spadespectralinstance'``), converted with our converter; the rest of the
SPADE generator (encoder, dense motion, attention) is the DaGAN generator's,
checked by test_parity.py, and its wiring is checked on the fixture weights.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax.config import apply_overrides, load_config
from dagan_jax.convert.torch_to_flax import (load_torch_file, match_state_dict,
                                             strip_prefix)
from dagan_jax.models import build
from dagan_jax.models.generator import SPADEDecoder
from float32_bounds import assert_within_ulps

torch = pytest.importorskip("torch")
tnn = torch.nn
F = torch.nn.functional
sn = torch.nn.utils.spectral_norm


class RefSPADE(tnn.Module):
  def __init__(self, norm_nc, label_nc, nhidden=128):
    super().__init__()
    self.param_free_norm = tnn.InstanceNorm2d(norm_nc, affine=False)
    self.mlp_shared = tnn.Sequential(tnn.Conv2d(label_nc, nhidden, 3, padding=1),
                                     tnn.ReLU())
    self.mlp_gamma = tnn.Conv2d(nhidden, norm_nc, 3, padding=1)
    self.mlp_beta = tnn.Conv2d(nhidden, norm_nc, 3, padding=1)

  def forward(self, x, seg):
    seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
    h = self.mlp_shared(seg)
    return self.param_free_norm(x) * (1 + self.mlp_gamma(h)) + self.mlp_beta(h)


class RefBlock(tnn.Module):
  def __init__(self, fin, fout, label_nc):
    super().__init__()
    mid = min(fin, fout)
    self.learned = fin != fout
    self.conv_0 = sn(tnn.Conv2d(fin, mid, 3, padding=1))
    self.conv_1 = sn(tnn.Conv2d(mid, fout, 3, padding=1))
    if self.learned:
      self.conv_s = sn(tnn.Conv2d(fin, fout, 1, bias=False))
      self.norm_s = RefSPADE(fin, label_nc)
    self.norm_0 = RefSPADE(fin, label_nc)
    self.norm_1 = RefSPADE(mid, label_nc)

  def forward(self, x, seg):
    xs = self.conv_s(self.norm_s(x, seg)) if self.learned else x
    dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
    dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
    return xs + dx


class RefDecoder(tnn.Module):
  def __init__(self, ic, cc=4, oc=64):
    super().__init__()
    self.compress = tnn.Conv2d(ic, cc, 3, padding=1)
    self.fc = tnn.Conv2d(ic, 2 * ic, 3, padding=1)
    for i in range(3):
      setattr(self, f"G_middle_{i}", RefBlock(2 * ic, 2 * ic, cc + 3))
    self.up_0 = RefBlock(2 * ic, ic, cc + 3)
    self.up_1 = RefBlock(ic, oc, cc + 3)
    self.conv_img = tnn.Conv2d(oc, 3, 3, padding=1)

  def forward(self, feature, image):
    seg = torch.cat([F.interpolate(self.compress(feature), size=image.shape[2:]),
                     image], 1)
    x = self.fc(feature)
    for i in range(3):
      x = getattr(self, f"G_middle_{i}")(x, seg)
    x = self.up_0(F.interpolate(x, scale_factor=2), seg)
    x = self.up_1(F.interpolate(x, scale_factor=2), seg)
    return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


def _numpy_sd(module):
  return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _ref_decoder(ic, feature, image, seed=0):
  torch.manual_seed(seed)
  ref = RefDecoder(ic)
  ref.train()
  with torch.no_grad():  # a few power iterations: u, v away from their init
    for _ in range(2):
      ref(feature, image)
  return ref.eval()


def test_spade_decoder_matches_torch_reference():
  ic, h = 16, 8
  rng = np.random.default_rng(0)
  feature = rng.normal(size=(2, h, h, ic)).astype(np.float32)
  image = rng.uniform(size=(2, 4 * h, 4 * h, 3)).astype(np.float32)
  tf = torch.tensor(feature.transpose(0, 3, 1, 2))
  ti = torch.tensor(image.transpose(0, 3, 1, 2))
  ref = _ref_decoder(ic, tf, ti)
  with torch.no_grad():
    want = ref(tf, ti).numpy().transpose(0, 2, 3, 1)

  module = SPADEDecoder(ic=ic)
  abstract = jax.eval_shape(module.init, jax.random.key(0), jnp.asarray(feature),
                            jnp.asarray(image))
  variables, report = match_state_dict(_numpy_sd(ref), abstract, network="decoder",
                                       source="torch reference")
  assert report.ok, report.format()
  assert "weight_u" in " ".join(_numpy_sd(ref))  # spectral-norm keys converted
  got = module.apply(variables, jnp.asarray(feature), jnp.asarray(image))
  np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.fixture(scope="module")
def small_config(fixture_dir):
  return load_config(pathlib.Path(fixture_dir) / "config.yaml")


def test_spade_generator_wiring_on_fixture_weights(fixture_dir, small_config):
  """SPADE generator = DaGAN encoder/motion/attention + SPADE decoder fed the
  attended features and the occlusion-masked deformed image."""
  fixture_dir = pathlib.Path(fixture_dir)
  ckpt = load_torch_file(str(fixture_dir / "dagan.pth.tar"))
  plain_sd = strip_prefix(ckpt["generator"])
  shared = {k: v for k, v in plain_sd.items()
            if not k.startswith(("bottleneck.", "up_blocks.", "final."))}
  cfg = apply_overrides(small_config,
                        ["model_params.generator_type=SPADEDepthAwareGenerator"])
  models = build.build_models(cfg)
  plain_models = build.build_models(small_config)
  ic = small_config.model_params.generator_params.max_features  # 32 here
  ic = min(ic, small_config.model_params.generator_params.block_expansion * 4)
  with np.load(fixture_dir / "fixture.npz") as z:
    nhwc = lambda a: jnp.asarray(a.transpose(0, 2, 3, 1))  # noqa: E731
    # Half resolution (128x128) keeps the test cheap; any size works.
    source = nhwc(z["input/source"])[:, ::2, ::2]
    depth = nhwc(z["depth/source"])[:, ::2, ::2]
    kp_s = {"value": jnp.asarray(z["kp_source/value"]),
            "jacobian": jnp.asarray(z["kp_source/jacobian"])}
    kp_d = {"value": jnp.asarray(z["kp_driving/value"]),
            "jacobian": jnp.asarray(z["kp_driving/jacobian"])}
  tf = torch.zeros(1, ic, 32, 32)
  ref = _ref_decoder(ic, tf, torch.zeros(1, 3, 128, 128), seed=1)
  spade_sd = {**shared, **{f"decoder.{k}": v for k, v in _numpy_sd(ref).items()}}

  abstract = build.abstract_variables(models, ("generator",))["generator"]
  variables, report = match_state_dict(spade_sd, abstract, network="generator",
                                       source="SPADE", buffers={
                                           "dense_motion_network.down.weight":
                                               plain_sd["dense_motion_network.down.weight"]})
  assert report.ok, report.format()
  run = lambda m, v: jax.jit(lambda *a: m.generator.apply(  # noqa: E731
      v, *a, mutable=["intermediates"]))(source, kp_d, kp_s, depth)
  out, inter = run(models, variables)
  plain_abs = build.abstract_variables(plain_models, ("generator",))["generator"]
  plain_vars, rep = match_state_dict(plain_sd, plain_abs, network="generator",
                                     source="plain", buffers={
                                         "dense_motion_network.down.weight":
                                             plain_sd["dense_motion_network.down.weight"]})
  assert rep.ok, rep.format()
  plain_out, plain_inter = run(plain_models, plain_vars)
  attn = plain_inter["intermediates"]["attn_out"][0]
  # The same function as the plain generator's up to here, compiled as
  # another program: equal up to float32 rounding through the warp, held to
  # the parity tests' bound (1e-4 of the largest value, about 840 ulps).
  same = lambda a, b: assert_within_ulps(  # noqa: E731
      a, b, 840, scale=max(1.0, float(np.abs(b).max())))
  same(inter["intermediates"]["attn_out"][0], attn)
  # The occlusion map is resized bilinearly (not nearest) to the image.
  from dagan_jax.ops import resize_bilinear
  # The reference decoder gets this program's own decoder inputs, so that
  # only the decoder's rounding is compared.
  attn = inter["intermediates"]["attn_out"][0]
  masked = out["deformed"] * resize_bilinear(out["occlusion_map"], (128, 128))
  with torch.no_grad():
    want = ref(torch.tensor(np.asarray(attn).transpose(0, 3, 1, 2)),
               torch.tensor(np.asarray(masked).transpose(0, 3, 1, 2)))
  np.testing.assert_allclose(out["prediction"], want.numpy().transpose(0, 2, 3, 1),
                             atol=2e-5)
  for k in ("mask", "occlusion_map", "deformation", "deformed", "sparse_deformed"):
    same(out[k], plain_out[k])
