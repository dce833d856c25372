"""Parity with the official IP_LAP renderer and pix2pixHD discriminator.

The fixture folder (``DAGAN_IPLAP_FIXTURE``, default
``../shared/fixtures/ip_lap_small``) holds the official ``Renderer`` and
``MultiscaleDiscriminator`` checkpoints and ``fixture.npz``, the arrays the
official code computed from them (NCHW, BGR images). Both networks are built
from the checkpoints' shapes (the discriminator's width, depth and number of
scales from its keys), converted with :mod:`dagan_jax.convert.ip_lap_renderer`
and run on the fixture's inputs with the kernels a user gets on this backend;
every array of the ``renderer/`` and ``disc/`` groups that is not an input is
compared (``_first<k>ch`` arrays on their first ``k`` channels, per-reference
maps on the references stored) with a max abs error of at most
``RTOL * max(1, max |official|)``.

One compile per network (module-scoped fixtures): the renderer with the
fixture's 25 references is about 0.6 TFLOP, so its program is built once.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax import compute
from dagan_jax.convert import ip_lap_renderer as conv
from dagan_jax.errors import CheckpointMismatchError
from dagan_jax.models import ip_lap_discriminator as disc_lib
from dagan_jax.models import ip_lap_renderer as lib
from dagan_jax.models.layers import BatchNorm, Conv2d

torch = pytest.importorskip("torch")

#: Max abs error allowed, relative to max(1, max |official array|).
RTOL = 1e-4
#: Translation intermediates sown under a suffixed name (a sown name may not
#: equal a submodule's).
_BLOCKS = ("spade_1", "adain_1", "spade_2", "adain_2", "spade_4")


def _load_sd(path):
  return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _nhwc(a):
  return np.moveaxis(np.asarray(a), -3, -1)


def _check(name: str, got, want) -> float:
  got = np.asarray(got, np.float64)
  want = np.asarray(want, np.float64)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  err = float(np.max(np.abs(got - want)))
  bound = RTOL * max(1.0, float(np.max(np.abs(want))))
  assert err <= bound, f"{name}: max abs error {err:.3g} > {bound:.3g}"
  return err


# --------------------------------------------------------------------------
# Renderer

@pytest.fixture(scope="module")
def renderer_sd(iplap_dir):
  return _load_sd(iplap_dir / "renderer_checkpoint.pth")


@pytest.fixture(scope="module")
def renderer_abstract():
  return conv.renderer_abstract()


@pytest.fixture(scope="module")
def renderer_weights(renderer_sd, renderer_abstract):
  return conv.convert_renderer(renderer_sd, renderer_abstract,
                               source="renderer_checkpoint.pth")


@pytest.fixture(scope="module")
def renderer_out(renderer_weights, iplap_npz):
  """Our renderer on the fixture's inputs: outputs and intermediates."""
  fx = iplap_npz
  face = _nhwc(fx["renderer/in_face_uint8"].astype(np.float32) / 255)
  refs = _nhwc(fx["renderer/in_ref_imgs_uint8"].astype(np.float32) / 255)
  target = _nhwc(fx["renderer/in_target_sketches"])
  ref_sketches = _nhwc(fx["renderer/in_ref_sketches"])
  mel = fx["renderer/in_mel"]  # (B, 1, 1, 80, 16): singleton axes allowed
  model = lib.Renderer()
  apply = compute.jit(lambda v, *a: model.apply(v, *a,
                                                mutable=["intermediates"]))
  (generated, wrapped_ref), state = apply(renderer_weights.variables, face,
                                          target, refs, ref_sketches, mel)
  inter = jax.tree_util.tree_map(np.asarray, state["intermediates"])
  return {"generated": np.asarray(generated),
          "wrapped_ref": np.asarray(wrapped_ref), "inter": inter}


def _renderer_array(out, key: str, want: np.ndarray) -> np.ndarray:
  """Ours for fixture array ``renderer/<key>`` in the fixture's layout
  (NCHW; first channels / references as many as the fixture stores)."""
  inter = out["inter"]
  flow, trans = inter["flow_module"], inter["translation"]
  name = re.sub(r"_first\d+ch$", "", key)
  if name == "out_generated_face":
    ours = out["generated"]
  elif name == "wrapped_ref":
    ours = out["wrapped_ref"]
    np.testing.assert_array_equal(ours, flow["wrapped_ref"][0])
  elif name == "gt_mask_face":
    ours = inter["gt_mask_face"][0]
  elif name in ("flow_per_ref", "weight_per_ref"):
    per_ref = flow["flow" if name == "flow_per_ref" else "weight"][0]
    ours = per_ref[0, :want.shape[0]]  # (K, H, W, C), sample 0
  elif name in ("weight_sum", "wrapped_h1", "wrapped_h2"):
    ours = flow[name][0]
  elif name.startswith("translation."):
    sub = name[len("translation."):]
    ours = trans[sub + "_out" if sub in _BLOCKS else sub][0]
  elif name == "audio_feature":
    return trans["audio_feature"][0]
  else:
    raise KeyError(f"no rule for fixture array renderer/{key}")
  ours = np.moveaxis(ours, -1, -3)
  return ours[..., :want.shape[-3], :, :]


def test_renderer_parity(renderer_out, iplap_npz):
  keys = [k for k in iplap_npz.files
          if k.startswith("renderer/") and not k.startswith("renderer/in_")]
  assert "renderer/out_generated_face" in keys
  errors = {}
  for key in keys:
    want = iplap_npz[key]
    got = _renderer_array(renderer_out, key.split("/", 1)[1], want)
    errors[key] = _check(key, got, want)
  print({k: f"{v:.2g}" for k, v in errors.items()})


def test_renderer_conversion(renderer_weights, renderer_sd):
  variables, perceptual, report, notes = renderer_weights
  assert report.ok and perceptual is None
  assert "absent" in notes[0]
  # Every checkpoint tensor was converted, upcast to float32.
  leaves = jax.tree_util.tree_leaves(variables)
  assert all(np.asarray(x).dtype == np.float32 for x in leaves)
  n_converted = sum(int(np.size(x)) for x in leaves)
  n_checkpoint = sum(int(v.numel()) for k, v in renderer_sd.items()
                     if not k.endswith("num_batches_tracked"))
  assert n_converted == n_checkpoint
  # A Linear weight is transposed, a conv weight OIHW -> HWIO.
  lin = renderer_sd["module.translation.adain_1.adain_layer_1.mlp_gamma.weight"]
  np.testing.assert_array_equal(
      variables["params"]["translation"]["adain_1"]["adain_layer_1"]
      ["mlp_gamma"]["kernel"], lin.float().numpy().T)
  w = renderer_sd["module.translation.audio_encoder.3.conv_block.0.weight"]
  np.testing.assert_array_equal(
      variables["params"]["translation"]["audio_encoder_3"]["conv_block_0"]
      ["kernel"], w.float().numpy().transpose(2, 3, 1, 0))


def test_renderer_checkpoint_file(iplap_dir):
  sd = conv.load_ip_lap_checkpoint(iplap_dir / "renderer_checkpoint.pth")
  assert all(k.startswith("module.") for k in sd)
  assert sd["module.flow_module.conv1.weight"].dtype == np.float32


def test_renderer_mismatch_names_keys(renderer_sd, renderer_abstract):
  sd = dict(renderer_sd)
  del sd["module.translation.audio_encoder.7.conv_block.1.running_var"]
  sd["module.flow_module.conv_5.2.weight"] = torch.zeros(1, 16, 7, 7)
  sd["module.translation.extra.weight"] = torch.zeros(3)
  with pytest.raises(CheckpointMismatchError) as e:
    conv.convert_renderer(sd, renderer_abstract)
  msg = str(e.value)
  for key in ("translation.audio_encoder.7.conv_block.1.running_var",
              "flow_module.conv_5.2.weight", "translation.extra.weight"):
    assert key in msg, msg
  # A transposed Linear weight is mis-shaped, named by its official key.
  sd = dict(renderer_sd)
  key = "module.translation.adain_2.adain_layer_2.mlp_shared.0.weight"
  sd[key] = sd[key].T
  with pytest.raises(CheckpointMismatchError, match=re.escape(key[7:])):
    conv.convert_renderer(sd, renderer_abstract)


def _vgg19_state_dict():
  from dagan_jax.convert.dagan import VGG19_CHANNELS, VGG19_CONV_INDICES
  sd, cin = {}, 3
  for idx, cout in zip(VGG19_CONV_INDICES, VGG19_CHANNELS):
    sd[f"module.perceptual.model.network.{idx}.weight"] = np.full(
        (cout, cin, 3, 3), idx, np.float16)
    sd[f"module.perceptual.model.network.{idx}.bias"] = np.zeros(cout,
                                                                 np.float16)
    cin = cout
  return sd


def test_renderer_with_perceptual_vgg(renderer_sd, renderer_abstract):
  """The full official checkpoint holds the perceptual VGG19: converted to
  our VGG19 params; an incomplete one is named."""
  vgg = _vgg19_state_dict()
  weights = conv.convert_renderer({**renderer_sd, **vgg}, renderer_abstract)
  assert weights.perceptual is not None and "present" in weights.notes[0]
  assert weights.perceptual["features_34"]["kernel"].shape == (3, 3, 512, 512)
  assert float(weights.perceptual["features_5"]["kernel"][0, 0, 0, 0]) == 5.0
  del vgg["module.perceptual.model.network.10.bias"]
  with pytest.raises(CheckpointMismatchError, match=r"features\.10\.bias"):
    conv.convert_renderer({**renderer_sd, **vgg}, renderer_abstract)


def test_pixel_shuffle_torch_order():
  x = np.arange(2 * 3 * 4 * 12, dtype=np.float32).reshape(2, 12, 3, 4)
  want = torch.nn.functional.pixel_shuffle(torch.from_numpy(x), 2).numpy()
  got = lib.pixel_shuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), 2)
  np.testing.assert_array_equal(np.asarray(got), want.transpose(0, 2, 3, 1))


class _PerRefNorm(nn.Module):
  refs: int

  @nn.compact
  def __call__(self, x):
    return lib._per_reference_conv_bn(  # pylint: disable=protected-access
        self, x, Conv2d(4, 3, padding=1, name="conv"), BatchNorm(name="bn"),
        self.refs)


def test_flow_batchnorm_is_per_reference_in_training():
  """Train mode: each reference normalised by its own batch statistics and
  the running averages updated once per reference, as the official loop."""
  b, n = 2, 3
  x = jax.random.normal(jax.random.PRNGKey(0), (b * n, 5, 5, 3))
  m = _PerRefNorm(n)
  v = m.init(jax.random.PRNGKey(1), x)
  v = {"params": v["params"], "batch_stats": jax.tree_util.tree_map(
      lambda a: a + 0.5, v["batch_stats"])}
  out, new = m.apply(v, x, mutable=["batch_stats"])
  y = np.asarray(Conv2d(4, 3, padding=1).apply(
      {"params": v["params"]["conv"]}, x)).reshape(b, n, 5, 5, 4)
  scale = np.asarray(v["params"]["bn"]["scale"])
  bias = np.asarray(v["params"]["bn"]["bias"])
  mean = np.asarray(v["batch_stats"]["bn"]["mean"], np.float64)
  var = np.asarray(v["batch_stats"]["bn"]["var"], np.float64)
  want = np.empty_like(y)
  for r in range(n):
    yr = y[:, r].astype(np.float64)
    mu, sig = yr.mean(axis=(0, 1, 2)), yr.var(axis=(0, 1, 2))
    want[:, r] = (yr - mu) / np.sqrt(sig + 1e-5) * scale + bias
    count = yr.size // yr.shape[-1]
    mean = 0.9 * mean + 0.1 * mu
    var = 0.9 * var + 0.1 * sig * count / (count - 1)
  np.testing.assert_allclose(np.asarray(out).reshape(want.shape), want,
                             atol=1e-5)
  np.testing.assert_allclose(new["batch_stats"]["bn"]["mean"], mean,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new["batch_stats"]["bn"]["var"], var, rtol=1e-5)


# --------------------------------------------------------------------------
# Discriminator

@pytest.fixture(scope="module")
def disc_sd(iplap_dir):
  return _load_sd(iplap_dir / "discriminator_checkpoint.pth")


@pytest.fixture(scope="module")
def disc_out(disc_sd, iplap_npz):
  cfg = conv.discriminator_config(disc_sd)
  cfg.pop("input_nc")
  model = disc_lib.MultiscaleDiscriminator(**cfg)
  variables, report = conv.convert_discriminator(disc_sd, model)
  assert report.ok
  x = _nhwc(iplap_npz["renderer/out_generated_face"])  # the official face
  return cfg, compute.jit(model.apply)(variables, x)


def test_discriminator_parity(disc_out, iplap_npz):
  cfg, out = disc_out
  assert len(out) == cfg["num_D"]
  keys = [k for k in iplap_npz.files if k.startswith("disc/")]
  assert len(keys) == cfg["num_D"] * (cfg["n_layers"] + 2)
  for key in keys:
    m = re.fullmatch(r"disc/scale(\d+)_layer(\d+)(?:_first\d+ch)?", key)
    assert m, key
    want = iplap_npz[key]
    got = np.moveaxis(np.asarray(out[int(m.group(1))][int(m.group(2))]),
                      -1, -3)[:, :want.shape[1]]
    _check(key, got, want)


def test_discriminator_mismatch_names_keys(disc_sd):
  sd = dict(disc_sd)
  del sd["module.scale1_layer2.0.bias"]
  sd["module.scale0_layer3.0.weight"] = torch.zeros(64, 32, 3, 3)
  model = disc_lib.MultiscaleDiscriminator(
      **{k: v for k, v in conv.discriminator_config(disc_sd).items()
         if k != "input_nc"})
  with pytest.raises(CheckpointMismatchError) as e:
    conv.convert_discriminator(sd, model)
  assert "scale1_layer2.0.bias" in str(e.value)
  assert "scale0_layer3.0.weight" in str(e.value)
  with pytest.raises(CheckpointMismatchError, match="scale0_layer0"):
    conv.discriminator_config({"foo.weight": np.zeros(3)})
