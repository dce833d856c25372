"""Metrics against independent computations (skimage, numpy, torch)."""

import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dagan_jax.errors import DataError, DaganError
from dagan_jax.evaluation import metrics as M


def _frames(seed, shape=(3, 40, 48, 3), noise=0.1):
  rng = np.random.default_rng(seed)
  base = ndi.gaussian_filter(rng.random(shape), (0, 2, 2, 0))
  base = (base - base.min()) / (base.max() - base.min())
  other = np.clip(base + noise * rng.standard_normal(shape), 0, 1)
  return base.astype(np.float32), other.astype(np.float32)


def test_l1_and_psnr_match_numpy_and_skimage():
  a, b = _frames(0)
  np.testing.assert_allclose(
      M.l1(a, b), np.abs(a.astype(np.float64) - b).mean(axis=(1, 2, 3)), rtol=1e-5)
  want = [peak_signal_noise_ratio(a[i].astype(np.float64), b[i].astype(np.float64),
                                  data_range=1.0) for i in range(len(a))]
  np.testing.assert_allclose(M.psnr(a, b), want, rtol=1e-5)
  assert np.all(np.isinf(np.asarray(M.psnr(a, a))))


def test_ssim_both_conventions_match_skimage():
  a, b = _frames(1, shape=(3, 37, 45, 3))
  a64, b64 = a.astype(np.float64), b.astype(np.float64)
  default = [structural_similarity(a64[i], b64[i], channel_axis=-1, data_range=1.0)
             for i in range(3)]
  gaussian = [structural_similarity(a64[i], b64[i], channel_axis=-1, data_range=1.0,
                                    gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False) for i in range(3)]
  np.testing.assert_allclose(M.ssim_skimage_default(a, b), default, atol=2e-5)
  np.testing.assert_allclose(M.ssim_gaussian(a, b), gaussian, atol=2e-5)
  # The two conventions really differ, so naming the one used matters.
  assert np.max(np.abs(np.array(default) - np.array(gaussian))) > 1e-3
  np.testing.assert_allclose(M.ssim_skimage_default(a, a), 1.0, atol=1e-5)


def test_pixel_metrics_jit_with_one_trace_per_shape():
  import chex
  import jax

  @jax.jit
  @chex.assert_max_traces(n=1)
  def all_pixel(x, y):
    return (M.l1(x, y), M.psnr(x, y), M.ssim_gaussian(x, y), M.ssim_skimage_default(x, y))

  a, b = _frames(2, shape=(2, 16, 16, 3))
  for _ in range(2):
    got = all_pixel(a, b)
  np.testing.assert_allclose(got[3], M.ssim_skimage_default(a, b), atol=1e-6)
  np.testing.assert_allclose(got[0], M.l1(a, b), atol=1e-7)


def _torch_lpips_alex(params, x0, x1):
  """LPIPS v0.1 (AlexNet) written from the paper's definition in torch, reading
  the same weights: scaling layer, AlexNet relu1..relu5, channel-wise unit
  normalisation, squared difference, 1x1 linear heads, spatial mean, sum."""
  torch = pytest.importorskip("torch")
  F = torch.nn.functional

  def t(x):
    return torch.from_numpy(np.array(x, np.float32))

  shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
  scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
  alex = params["AlexNet_0"]
  convs = [(alex[f"Conv_{i}"], s, p) for i, (s, p) in
           enumerate([(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)])]

  def features(x):
    x = (t(x).permute(0, 3, 1, 2) * 2 - 1 - shift) / scale
    outs = []
    for i, (c, stride, pad) in enumerate(convs):
      w = t(c["kernel"]).permute(3, 2, 0, 1)  # HWIO -> OIHW
      x = F.relu(F.conv2d(x, w, t(c["bias"]), stride=stride, padding=pad))
      outs.append(x)
      if i in (0, 1):
        x = F.max_pool2d(x, 3, 2)
    return outs

  total = 0
  for i, (f0, f1) in enumerate(zip(features(x0), features(x1))):
    n0 = f0 / (f0.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    n1 = f1 / (f1.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    lin = t(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]).reshape(-1)
    total = total + ((n0 - n1) ** 2 * lin.view(1, -1, 1, 1)).sum(1).mean((1, 2))
  return total.numpy()


def test_lpips_zero_monotonic_and_matches_torch_recomputation():
  a, _ = _frames(3, shape=(2, 64, 64, 3), noise=0.0)
  rng = np.random.default_rng(3)
  noisy = [np.clip(a + s * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
           for s in (0.02, 0.08, 0.3)]
  for net in ("alex", "vgg"):
    np.testing.assert_allclose(M.lpips(a, a, net), 0.0, atol=1e-6)
    d = np.stack([np.asarray(M.lpips(a, n, net)) for n in noisy])
    assert np.all(np.diff(d, axis=0) > 0), (net, d)
  _, params = M._lpips_model("alexnet")
  want = _torch_lpips_alex(params, a, noisy[1])
  np.testing.assert_allclose(M.lpips(a, noisy[1], "alex"), want, rtol=1e-4, atol=1e-6)
  with pytest.raises(DaganError, match="unknown backbone"):
    M.lpips(a, a, "resnet")


def _centroid_landmarks(frames):
  """Stand-in landmark net: brightness centroids of a 3x3 grid of cells, in
  pixels (x, y); NaN for an all-dark frame."""
  frames = np.asarray(frames, np.float64)
  t, h, w, _ = frames.shape
  g = frames.mean(-1)
  out = np.zeros((t, 9, 2))
  ys, xs = np.mgrid[0:h, 0:w]
  k = 0
  for i in range(3):
    for j in range(3):
      sl = (slice(i * h // 3, (i + 1) * h // 3), slice(j * w // 3, (j + 1) * w // 3))
      m = g[:, sl[0], sl[1]]
      s = m.sum((1, 2)) + 1e-12
      out[:, k, 0] = (m * xs[sl]).sum((1, 2)) / s
      out[:, k, 1] = (m * ys[sl]).sum((1, 2)) / s
      k += 1
  out[g.max(axis=(1, 2)) < 1e-3] = np.nan
  return out.astype(np.float32)


def _stats_embedding(frames):
  """Stand-in identity net: channel means and stds of the four quadrants."""
  f = np.asarray(frames, np.float64)
  h, w = f.shape[1] // 2, f.shape[2] // 2
  parts = [f[:, :h, :w], f[:, :h, w:], f[:, h:, :w], f[:, h:, w:]]
  return np.concatenate([np.concatenate([p.mean((1, 2)), p.std((1, 2))], -1)
                         for p in parts], -1).astype(np.float32)


def test_akd_matches_numpy_in_both_modes_and_marks_missing_faces():
  a, b = _frames(4, shape=(4, 30, 30, 3))
  b[2] = 0.0  # "no face" in one generated frame
  ka, kb = _centroid_landmarks(a), _centroid_landmarks(b)
  fomm = np.abs(ka.astype(np.float64) - kb).mean(axis=(1, 2))
  eucl = np.linalg.norm(ka.astype(np.float64) - kb, axis=-1).mean(1)
  got = np.asarray(M.akd(_centroid_landmarks, a, b))
  assert np.isnan(got[2]) and np.isnan(fomm[2])
  np.testing.assert_allclose(got[[0, 1, 3]], fomm[[0, 1, 3]], rtol=1e-5)
  got_e = np.asarray(M.akd(_centroid_landmarks, a, b, mode="euclidean"))
  np.testing.assert_allclose(got_e[[0, 1, 3]], eucl[[0, 1, 3]], rtol=1e-5)
  with pytest.raises(DataError, match=r"expected landmarks of shape \(4, N, 2\)"):
    M.akd(lambda f: np.zeros((4, 5, 3)), a, a)


def test_aed_and_csim_match_numpy():
  a, b = _frames(5, shape=(3, 20, 24, 3))
  ea, eb = _stats_embedding(a).astype(np.float64), _stats_embedding(b).astype(np.float64)
  na = ea / np.linalg.norm(ea, axis=1, keepdims=True)
  nb = eb / np.linalg.norm(eb, axis=1, keepdims=True)
  np.testing.assert_allclose(M.aed(_stats_embedding, a, b), ((na - nb) ** 2).sum(1), rtol=1e-4)
  np.testing.assert_allclose(M.aed(_stats_embedding, a, b, normalize=False, squared=False),
                             np.linalg.norm(ea - eb, axis=1), rtol=1e-4)
  src = a[0]
  es = _stats_embedding(src[None])[0].astype(np.float64)
  want = eb @ es / (np.linalg.norm(eb, axis=1) * np.linalg.norm(es))
  np.testing.assert_allclose(M.csim(_stats_embedding, src, b), want, rtol=1e-5)
  np.testing.assert_allclose(M.csim(_stats_embedding, src, a[:1]), 1.0, rtol=1e-6)


def _translating_clip(dx=2, dy=1, t=4, size=48, seed=0):
  """Frames of a smooth texture moving by (+dx, +dy) pixels per frame, so the
  flow T_{t-1<-t} is exactly (-dx, -dy) everywhere."""
  rng = np.random.default_rng(seed)
  big = ndi.gaussian_filter(rng.random((100, 100, 3)), (2, 2, 0))
  big = (big - big.min()) / (big.max() - big.min())
  return np.stack([big[20 - i * dy:20 - i * dy + size, 20 - i * dx:20 - i * dx + size]
                   for i in range(t)]).astype(np.float32)


def _eq18_numpy(ref, gen, dx, dy):
  """Eq. 18 evaluated directly with the known integer shift (border pixels
  replicated): W(I)(y, x) = I(clip(y - dy), clip(x - dx))."""
  h, w = ref.shape[1:3]
  ys = np.clip(np.arange(h) - dy, 0, h - 1)
  xs = np.clip(np.arange(w) - dx, 0, w - 1)
  terms = []
  for t in range(1, len(ref)):
    a = np.sqrt(((ref[t].astype(np.float64) - ref[t - 1][ys][:, xs]) ** 2).sum())
    b = np.sqrt(((gen[t].astype(np.float64) - gen[t - 1][ys][:, xs]) ** 2).sum())
    terms.append(np.exp(-a / b - 1))
  return np.mean(terms)


def test_farneback_flow_recovers_known_translation_direction():
  ref = _translating_clip(dx=2, dy=1)
  flow = M.farneback_flow(ref[1], ref[0])
  med = np.median(flow[8:-8, 8:-8].reshape(-1, 2), axis=0)
  np.testing.assert_allclose(med, [-2.0, -1.0], atol=0.1)
  warped = M.warp_with_flow(ref[0], flow)
  assert np.abs(warped - ref[1])[8:-8, 8:-8].max() < 0.02


def test_temporal_consistency_matches_direct_eq18():
  dx, dy = 2, 1
  ref = _translating_clip(dx, dy)
  rng = np.random.default_rng(1)
  gen = np.clip(ref + 0.03 * rng.standard_normal(ref.shape), 0, 1).astype(np.float32)
  known = lambda a, b: np.broadcast_to(np.float32([-dx, -dy]), a.shape[:2] + (2,))
  want = _eq18_numpy(ref, gen, dx, dy)
  assert M.temporal_consistency(ref, gen, flow_fn=known) == pytest.approx(want, rel=1e-5)
  # With Farneback's own flow the value stays close to the known-flow one...
  assert M.temporal_consistency(ref, gen) == pytest.approx(want, abs=5e-3)
  # ...and far from what the opposite flow direction would give.
  wrong = lambda a, b: np.broadcast_to(np.float32([dx, dy]), a.shape[:2] + (2,))
  assert abs(M.temporal_consistency(ref, gen, flow_fn=wrong) - want) > 0.05
  # A copy of the reference gives exp(-2) for every transition.
  np.testing.assert_allclose(M.temporal_consistency_terms(ref, ref), np.exp(-2.0), rtol=1e-9)


def test_bad_inputs_raise_named_errors():
  a = np.zeros((2, 16, 16, 3), np.float32)
  with pytest.raises(DataError, match=r"differ in shape"):
    M.l1(a, np.zeros((3, 16, 16, 3), np.float32))
  with pytest.raises(DataError, match="empty video"):
    M.psnr(a[:0], a[:0])
  with pytest.raises(DataError, match=r"\(T, H, W, 3\)"):
    M.ssim_gaussian(a[0], a[0])
  with pytest.raises(DataError, match="smaller than the 11x11"):
    M.ssim_gaussian(a[:, :8, :8], a[:, :8, :8])
  with pytest.raises(DataError, match="dtype uint8"):
    M.l1(a.astype(np.uint8), a.astype(np.uint8))
  with pytest.raises(DataError, match="at least 2 frames"):
    M.temporal_consistency(a[:1], a[:1])
  with pytest.raises(DataError, match="must both be"):
    M.keypoint_distance(np.zeros((2, 5, 2)), np.zeros((2, 4, 2)))
  with pytest.raises(DataError, match=r"one image"):
    M.csim(_stats_embedding, a, a)
