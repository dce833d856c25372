"""FID as pytorch-fid computes it, against an independent torch oracle.

The oracle below is pytorch-fid's FID InceptionV3 rewritten in plain torch
from its published structure (torchvision's Inception3 blocks with the FID
patches: valid-only average pools in A / C / E_1, a max pool in E_2, BatchNorm
eps 0.001; bilinear resize to 299 without anti-aliasing; ``2 x - 1``). Its
random weights are saved as a state dict in the layout of
``pt_inception-2015-12-05-6726825d.pth`` (with the 1008-way ``fc``) and read by
our loader. Inception at 299 is slow on 2 cores: three real frames only.
"""

from __future__ import annotations

import importlib.util
import logging
import math

import numpy as np
import pytest

from dagan_jax.convert.inception_fid import convert_state_dict
from dagan_jax.errors import CheckpointMismatchError, DataError
from dagan_jax.evaluation import fid
from dagan_jax.input import media
from dagan_jax.ops import resize_bilinear

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn

CLIPS = (("data/av_mini/test/st_feifeili#clip1.mp4", [0, 40]),
         ("data/av_mini/test/pcavs_m104#00104.mp4", [5]))


class _Basic(nn.Module):
  def __init__(self, cin, cout, kernel, stride=1, padding=0):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
    self.bn = nn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _valid_avg(x):
  return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class _A(nn.Module):
  def __init__(self, cin, pool):
    super().__init__()
    self.branch1x1 = _Basic(cin, 64, 1)
    self.branch5x5_1 = _Basic(cin, 48, 1)
    self.branch5x5_2 = _Basic(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = _Basic(cin, 64, 1)
    self.branch3x3dbl_2 = _Basic(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = _Basic(96, 96, 3, padding=1)
    self.branch_pool = _Basic(cin, pool, 1)

  def forward(self, x):
    return torch.cat([
        self.branch1x1(x),
        self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(_valid_avg(x))], 1)


class _B(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = _Basic(cin, 384, 3, stride=2)
    self.branch3x3dbl_1 = _Basic(cin, 64, 1)
    self.branch3x3dbl_2 = _Basic(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = _Basic(96, 96, 3, stride=2)

  def forward(self, x):
    return torch.cat([
        self.branch3x3(x),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        F.max_pool2d(x, 3, 2)], 1)


class _C(nn.Module):
  def __init__(self, cin, c7):
    super().__init__()
    w, h = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    self.branch1x1 = _Basic(cin, 192, 1)
    self.branch7x7_1 = _Basic(cin, c7, 1)
    self.branch7x7_2 = _Basic(c7, c7, **w)
    self.branch7x7_3 = _Basic(c7, 192, **h)
    self.branch7x7dbl_1 = _Basic(cin, c7, 1)
    self.branch7x7dbl_2 = _Basic(c7, c7, **h)
    self.branch7x7dbl_3 = _Basic(c7, c7, **w)
    self.branch7x7dbl_4 = _Basic(c7, c7, **h)
    self.branch7x7dbl_5 = _Basic(c7, 192, **w)
    self.branch_pool = _Basic(cin, 192, 1)

  def forward(self, x):
    d = x
    for i in range(1, 6):
      d = getattr(self, f"branch7x7dbl_{i}")(d)
    return torch.cat([
        self.branch1x1(x),
        self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
        d,
        self.branch_pool(_valid_avg(x))], 1)


class _D(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1 = _Basic(cin, 192, 1)
    self.branch3x3_2 = _Basic(192, 320, 3, stride=2)
    self.branch7x7x3_1 = _Basic(cin, 192, 1)
    self.branch7x7x3_2 = _Basic(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = _Basic(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = _Basic(192, 192, 3, stride=2)

  def forward(self, x):
    b = x
    for i in range(1, 5):
      b = getattr(self, f"branch7x7x3_{i}")(b)
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b,
                      F.max_pool2d(x, 3, 2)], 1)


class _E(nn.Module):
  def __init__(self, cin, max_pool):
    super().__init__()
    self.max_pool = max_pool
    self.branch1x1 = _Basic(cin, 320, 1)
    self.branch3x3_1 = _Basic(cin, 384, 1)
    self.branch3x3_2a = _Basic(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = _Basic(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = _Basic(cin, 448, 1)
    self.branch3x3dbl_2 = _Basic(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = _Basic(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = _Basic(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = _Basic(cin, 192, 1)

  def forward(self, x):
    a = self.branch3x3_1(x)
    b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _valid_avg(x)
    return torch.cat([self.branch1x1(x),
                      self.branch3x3_2a(a), self.branch3x3_2b(a),
                      self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
                      self.branch_pool(pooled)], 1)


class _FIDInception(nn.Module):
  """Keys as pytorch-fid's weights file (fc included, no AuxLogits)."""

  def __init__(self):
    super().__init__()
    self.Conv2d_1a_3x3 = _Basic(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = _Basic(32, 32, 3)
    self.Conv2d_2b_3x3 = _Basic(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = _Basic(64, 80, 1)
    self.Conv2d_4a_3x3 = _Basic(80, 192, 3)
    self.Mixed_5b = _A(192, 32)
    self.Mixed_5c = _A(256, 64)
    self.Mixed_5d = _A(288, 64)
    self.Mixed_6a = _B(288)
    self.Mixed_6b = _C(768, 128)
    self.Mixed_6c = _C(768, 160)
    self.Mixed_6d = _C(768, 160)
    self.Mixed_6e = _C(768, 192)
    self.Mixed_7a = _D(768)
    self.Mixed_7b = _E(1280, max_pool=False)
    self.Mixed_7c = _E(2048, max_pool=True)
    self.fc = nn.Linear(2048, 1008)

  def forward(self, x):  # NCHW in [0, 1] -> (N, 2048)
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    x = 2 * x - 1
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, 3, 2)
    x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
      x = getattr(self, f"Mixed_{name}")(x)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _randomise(model: nn.Module, seed: int) -> None:
  """He-scaled convs and spread-out BatchNorm statistics, so activations stay
  O(1) through the 94 layers and every parameter matters."""
  rng = np.random.default_rng(seed)  # numpy: 10x faster than torch's here
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if name.endswith("num_batches_tracked"):
        continue
      if name.endswith("conv.weight"):
        v = rng.standard_normal(t.shape, np.float32) * math.sqrt(2 / t[0].numel())
      elif name.endswith("running_var") or name.endswith("bn.weight"):
        v = 0.5 + rng.random(t.shape, np.float32)
      else:  # bn bias, running_mean, fc
        v = 0.1 * rng.standard_normal(t.shape, np.float32)
      t.copy_(torch.from_numpy(v.astype(np.float32)))


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
  torch.manual_seed(0)
  model = _FIDInception().eval()
  _randomise(model, seed=0)
  path = tmp_path_factory.mktemp("fid") / "pt_inception-random.pth"
  state = {k: v for k, v in model.state_dict().items()
           if not k.endswith("num_batches_tracked")}  # as in the real file
  torch.save(state, path)
  return model, path, state


@pytest.fixture(scope="module")
def frames(shared_dir):
  return np.concatenate([media.read_frames(shared_dir / clip, idx)
                         for clip, idx in CLIPS])


def test_features_match_pytorch_fid_structure(oracle, frames):
  """Our converted network on 3 real frames (batches of 2: the last one
  padded) = the torch oracle, to 1e-4 of the largest feature."""
  model_t, path, _ = oracle
  model = fid.load(path, batch_size=2)
  got = model.features(frames)
  # One torch thread: beside XLA's on 2 shared cores, two run ~10x slower.
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    with torch.no_grad():
      want = model_t(torch.from_numpy(frames).permute(0, 3, 1, 2)).numpy()
  finally:
    torch.set_num_threads(threads)
  assert got.shape == (3, 2048) and got.dtype == np.float32
  scale = float(np.abs(want).max())
  assert scale > 1e-2 and np.std(want) > 1e-3 * scale  # not a dead network
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)
  # Features distinguish the frames (so FID below sees real differences).
  assert np.abs(got[0] - got[2]).max() > 100 * 1e-4 * scale
  # Input checks come before the network runs; uint8 is divided by 255
  # (ToTensor).
  u8 = np.round(frames[:2] * 255).astype(np.uint8)
  np.testing.assert_array_equal(fid._check_frames(u8, "u8"),
                                u8.astype(np.float32) / np.float32(255))
  with pytest.raises(DataError, match=r"\[0, 1\]"):
    model.features(frames * 255)
  with pytest.raises(DataError, match=r"\(N, H, W, 3\)"):
    model.features(frames[0])


def test_resize_is_pytorch_fids_interpolate():
  """pytorch-fid calls F.interpolate(bilinear, align_corners=False) with no
  antialias argument: torch's default is off, also when shrinking."""
  rng = np.random.default_rng(1)
  for hw in ((256, 256), (320, 412)):
    x = rng.random((1, *hw, 3), dtype=np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    want = F.interpolate(xt, size=(299, 299), mode="bilinear",
                         align_corners=False).permute(0, 2, 3, 1).numpy()
    got = np.asarray(resize_bilinear(x, (299, 299)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  aa = F.interpolate(xt, size=(299, 299), mode="bilinear", align_corners=False,
                     antialias=True).permute(0, 2, 3, 1).numpy()
  assert np.abs(aa - want).max() > 1e-2  # the check can tell the two apart


def _direct_distance(mu1, s1, mu2, s2):
  """tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), the symmetric PSD form, by
  eigendecomposition (independent of scipy.linalg.sqrtm)."""
  def psd_sqrt(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  r = psd_sqrt(s1)
  inner = np.linalg.eigvalsh(r @ s2 @ r)
  diff = mu1 - mu2
  return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(
      np.clip(inner, 0, None)).sum()


# scipy warns on the singular products below, which are the point.
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_frechet_distance(caplog):
  rng = np.random.default_rng(2)
  d = 6
  a = rng.normal(size=(d, d))
  b = rng.normal(size=(d, d))
  s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  got = fid.frechet_distance(mu1, s1, mu2, s2)
  assert got == pytest.approx(_direct_distance(mu1, s1, mu2, s2), rel=1e-9)
  assert got > 0
  assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9)
  # 1-D: (m1 - m2)^2 + (sqrt v1 - sqrt v2)^2.
  assert fid.frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(4 + 1)

  # From samples: two Gaussians; identical sets give 0.
  x = rng.normal(size=(40, d)) @ a.T
  y = rng.normal(size=(50, d)) @ b.T + 1.0
  mx, sx = fid.statistics(x)
  my, sy = fid.statistics(y)
  np.testing.assert_allclose(sx, np.cov(x.T), rtol=1e-12)
  assert fid.fid_from_features(x, y) == pytest.approx(
      _direct_distance(mx, sx, my, sy), rel=1e-8)
  assert fid.fid_from_features(x, x) == pytest.approx(0, abs=1e-8)

  # Fewer samples than dimensions (singular covariances), as with few frames:
  # finite and close to the exact value.
  few = fid.fid_from_features(x[:3], y[:4])
  assert few == pytest.approx(_direct_distance(*fid.statistics(x[:3]),
                                               *fid.statistics(y[:4])), rel=1e-5)
  # A product without a finite square root (nilpotent: sqrtm gives inf)
  # takes pytorch-fid's eps offset on both diagonals, with a warning.
  nil = np.array([[0.0, 1.0], [0.0, 0.0]])
  with caplog.at_level(logging.WARNING, logger="dagan_jax.evaluation"):
    got = fid.frechet_distance([0.0, 0.0], nil, [1.0, 0.0], np.eye(2))
  lam = fid.EPS * (1 + fid.EPS)  # the offset product's double eigenvalue
  assert got == pytest.approx(1 + 2 - 2 * 2 * np.sqrt(lam), rel=1e-12)
  assert "singular" in caplog.text

  with pytest.raises(DataError, match="covariances"):
    fid.frechet_distance(mu1, s1, mu2, s2[:3, :3])
  with pytest.raises(DataError, match="N >= 2"):
    fid.statistics(x[:1])


def test_fid_of_frames_uses_the_models_features():
  """fid() = Fréchet distance of the statistics of model.features on each
  set (a stand-in model with 4-d features: a 2048-d sqrtm takes ~50 s here)."""
  class Stub:
    def features(self, frames):
      f = np.asarray(frames, np.float32)
      return np.stack([f.mean((1, 2, 3)), f[..., 0].std((1, 2)),
                       f[:, 0, 0, 1], f[:, -1, -1, 2]], axis=1)

  rng = np.random.default_rng(3)
  real = rng.random((6, 8, 8, 3), dtype=np.float32)
  fake = rng.random((5, 4, 4, 3), dtype=np.float32) ** 2
  stub = Stub()
  want = fid.frechet_distance(*fid.statistics(stub.features(real)),
                              *fid.statistics(stub.features(fake)))
  assert fid.fid(real, fake, stub) == pytest.approx(want, rel=1e-12)
  assert want > 0


def test_weights_errors(oracle, tmp_path, monkeypatch):
  _, path, state = oracle
  missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
  with pytest.raises(DataError, match="pt_inception-2015-12-05-6726825d.pth"):
    fid.load(missing)

  corrupt = tmp_path / "corrupt.pth"
  corrupt.write_bytes(b"not a torch file")
  with pytest.raises(DataError, match="corrupt.pth"):
    fid.load(corrupt)

  # Without torch, the message names the file and the extra to install.
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
      None if name == "torch" else real_find_spec(name, *a)))
  with pytest.raises(DataError, match=rf"{path.name} needs torch.*\[convert\]"):
    fid.load(path)
  monkeypatch.undo()

  # A state dict with torchvision's ImageNet Inception's differences
  # (AuxLogits, a 1000-way fc), one key missing and one transposed; the
  # converter itself, without writing 100 MB again.
  wrong = {k: v.numpy() for k, v in state.items()}
  del wrong["Mixed_7c.branch_pool.bn.running_var"]
  wrong["Mixed_6b.branch7x7_2.conv.weight"] = np.zeros((128, 128, 7, 1), np.float32)
  wrong["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
  wrong["fc.weight"] = np.zeros((1000, 2048), np.float32)
  with pytest.raises(CheckpointMismatchError) as err:
    convert_state_dict(wrong, source="imagenet.pth")
  msg = str(err.value)
  for needle in ("imagenet.pth", "missing keys (1)", "unexpected keys (1)",
                 "mis-shaped keys (2)", "Mixed_7c.branch_pool.bn.running_var: [192]",
                 "Mixed_6b.branch7x7_2.conv.weight: checkpoint [128, 128, 7, 1], "
                 "expected [128, 128, 1, 7]",
                 "AuxLogits.fc.weight", "fc.weight: checkpoint [1000, 2048]",
                 "torchvision's ImageNet inception_v3"):
    assert needle in msg, (needle, msg)
