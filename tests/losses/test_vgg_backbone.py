"""Perceptual backbones (dagan_jax/models/vgg.py) against torch re-computations
written here (torchvision's layer lists, typed out by hand)."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax.errors import CheckpointMismatchError
from dagan_jax.convert import dagan as convert_dagan
from dagan_jax.models import vgg

torch = pytest.importorskip("torch")
F = torch.nn.functional

# torchvision vgg19().features[:30] and vgg16().features[:26]:
# ('c', out) conv3x3 pad 1, 'r' relu, 'm' maxpool 2x2.
VGG19_30 = [("c", 64), "r", ("c", 64), "r", "m", ("c", 128), "r", ("c", 128),
            "r", "m", ("c", 256), "r", ("c", 256), "r", ("c", 256), "r",
            ("c", 256), "r", "m", ("c", 512), "r", ("c", 512), "r",
            ("c", 512), "r", ("c", 512), "r", "m", ("c", 512), "r"]
VGG16_26 = [("c", 64), "r", ("c", 64), "r", "m", ("c", 128), "r", ("c", 128),
            "r", "m", ("c", 256), "r", ("c", 256), "r", ("c", 256), "r", "m",
            ("c", 512), "r", ("c", 512), "r", ("c", 512), "r", "m",
            ("c", 512), "r"]
OFFICIAL_SLICE_ENDS = {"vgg19": [2, 7, 12, 21, 30], "vgg16": [2, 7, 12, 19, 26]}


def torch_slices(params, x_nhwc, layers, ends):
  """The official Vgg19.forward: normalise, run features, keep slice ends."""
  x = torch.tensor(np.asarray(x_nhwc)).permute(0, 3, 1, 2).double()
  mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).double()
  std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1).double()
  x = (x - mean) / std
  outs = []
  for idx, layer in enumerate(layers):
    if layer == "r":
      x = F.relu(x)
    elif layer == "m":
      x = F.max_pool2d(x, 2, 2)
    else:
      p = params[f"features_{idx}"]
      w = torch.tensor(np.asarray(p["kernel"])).permute(3, 2, 0, 1).double()
      x = F.conv2d(x, w, torch.tensor(np.asarray(p["bias"])).double(),
                   padding=1)
    if idx + 1 in ends:
      outs.append(x.permute(0, 2, 3, 1).numpy())
  return outs


@pytest.fixture(scope="module")
def vgg19_params():
  """He-normal weights in the shapes the module declares (traced, not
  compiled: jax.eval_shape of its init), small random biases."""
  shapes = jax.eval_shape(vgg.VGGFeatures().init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 32, 32, 3)))["params"]
  rng = np.random.default_rng(0)
  out = {}
  for name, leaves in shapes.items():
    k = leaves["kernel"].shape
    out[name] = {
        "kernel": (rng.normal(size=k) * np.sqrt(2.0 / np.prod(k[:3]))
                   ).astype(np.float32),
        "bias": (0.01 * rng.normal(size=leaves["bias"].shape)).astype(np.float32)}
  return out


def test_vgg19_names_shapes_and_torch_parity(vgg19_params):
  convs = [i for i, l in enumerate(VGG19_30) if l not in ("r", "m")]
  assert sorted(vgg19_params, key=lambda s: int(s[9:])) == [
      f"features_{i}" for i in convs]
  assert vgg19_params["features_0"]["kernel"].shape == (3, 3, 3, 64)
  x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  ours = jax.jit(vgg.VGGFeatures().apply)({"params": vgg19_params}, x)
  ref = torch_slices(vgg19_params, x, VGG19_30, OFFICIAL_SLICE_ENDS["vgg19"])
  assert [o.shape for o in ours] == [(2, 32, 32, 64), (2, 16, 16, 128),
                                      (2, 8, 8, 256), (2, 4, 4, 512),
                                      (2, 2, 2, 512)]
  for a, b in zip(ours, ref):
    scale = np.abs(b).max()
    assert scale > 0
    np.testing.assert_allclose(a, b, atol=1e-5 * scale, rtol=1e-4)


def test_load_vgg19_npz_and_pth(tmp_path, vgg19_params):
  npz = tmp_path / "vgg19.npz"
  vgg.save_vgg_npz(vgg19_params, npz)
  loaded = convert_dagan.load_vgg19(npz)
  for name in vgg19_params:
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(loaded[name][leaf], vgg19_params[name][leaf])

  pytest.importorskip("dagan_jax.convert.dagan")
  # A torchvision-style state_dict: all 16 convs of vgg19.features (OIHW)
  # plus a classifier entry, which the loader drops.
  sd, cin, rng = {}, 3, np.random.default_rng(1)
  for idx, cout in zip((0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32,
                        34), (64, 64, 128, 128, 256, 256, 256, 256, 512, 512,
                              512, 512, 512, 512, 512, 512)):
    name = f"features_{idx}"
    if name in vgg19_params:
      w = np.transpose(vgg19_params[name]["kernel"], (3, 2, 0, 1))
      b = vgg19_params[name]["bias"]
    else:
      w = rng.normal(size=(cout, cin, 3, 3)).astype(np.float32)
      b = np.zeros(cout, np.float32)
    sd[f"features.{idx}.weight"] = torch.tensor(np.ascontiguousarray(w))
    sd[f"features.{idx}.bias"] = torch.tensor(b)
    cin = cout
  sd["classifier.6.bias"] = torch.zeros(1000)
  pth = tmp_path / "vgg19.pth"
  torch.save(sd, pth)
  from_pth = convert_dagan.load_vgg19(pth)
  assert set(from_pth) == set(vgg19_params)
  for name in vgg19_params:
    np.testing.assert_array_equal(from_pth[name]["kernel"],
                                  vgg19_params[name]["kernel"])
  _, variables, line = convert_dagan.load_perceptual_backbone(pth)
  assert "vgg19" in line and "NOT" not in line
  assert set(variables["params"]) == set(vgg19_params)


def test_select_params_names_missing_and_misshaped(vgg19_params):
  broken = dict(vgg19_params)
  del broken["features_21"]
  broken["features_0"] = {"kernel": np.zeros((3, 3, 4, 64)),
                          "bias": np.zeros(64)}
  with pytest.raises(CheckpointMismatchError) as err:
    vgg.select_params(broken, "vgg19")
  assert "missing features_21" in str(err.value)
  assert "features_0/kernel: shape [3, 3, 4, 64]" in str(err.value)
  extra = dict(vgg19_params, features_30={"kernel": np.zeros((3, 3, 512, 512)),
                                          "bias": np.zeros(512)})
  assert "features_30" not in vgg.select_params(extra, "vgg19")


def test_lpips_vgg16_backbone_matches_its_own_pickle():
  module, variables, line = convert_dagan.load_perceptual_backbone(None)
  assert module.arch == "vgg16"
  assert "vgg16" in line and "lpips" in line and "NOT the official" in line
  params = variables["params"]
  convs = [i for i, l in enumerate(VGG16_26) if l not in ("r", "m")]
  assert sorted(params, key=lambda s: int(s[9:])) == [f"features_{i}"
                                                       for i in convs]
  # Rename the wheel's own file independently and compare through torch.
  with open(vgg.lpips_vgg16_path(), "rb") as f:
    raw = pickle.load(f)["VGG16_0"]
  renamed = {f"features_{idx}": {k: np.asarray(v) for k, v in
                                 raw[f"Conv_{n}"].items()}
             for n, idx in enumerate(convs)}
  x = np.random.default_rng(2).uniform(size=(1, 32, 32, 3)).astype(np.float32)
  ours = jax.jit(module.apply)(variables, x)
  ref = torch_slices(renamed, x, VGG16_26, OFFICIAL_SLICE_ENDS["vgg16"])
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(b).max(), rtol=1e-3)


def test_vgg19_requires_a_file():
  from dagan_jax.errors import DataError
  with pytest.raises(DataError, match="VGG19"):
    convert_dagan.load_perceptual_backbone(None, arch="vgg19")
  with pytest.raises(DataError, match="not found"):
    convert_dagan.load_vgg19("/nonexistent/vgg19.pth")
