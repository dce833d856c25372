"""Evaluation protocols end to end, with injected generators and stand-in networks."""

import json
import os

import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dagan_jax.errors import DataError, DaganError
from dagan_jax.evaluation import evaluator as E
from dagan_jax.evaluation import face_models as FM
from dagan_jax.evaluation import metrics as M
from dagan_jax.evaluation import pairs as P

imageio = pytest.importorskip("imageio.v3")
cv2 = pytest.importorskip("cv2")


def read_frames(path, indices):
  """Test reader: yields uint8 RGB frames one at a time (a folder of numbered
  images, or a video file decoded with OpenCV)."""
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if n.endswith((".png", ".jpg")))
    for i in (range(len(names)) if indices is None else indices):
      yield imageio.imread(os.path.join(path, names[i]))[..., :3]
    return
  cap = cv2.VideoCapture(path)
  wanted = None if indices is None else set(indices)
  i = 0
  while True:
    ok, frame = cap.read()
    if not ok or (wanted is not None and i > max(wanted)):
      break
    if wanted is None or i in wanted:
      yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    i += 1
  cap.release()


def landmarks(frames):
  """Stand-in landmark net: brightness centroids of 2x2 cells (pixels)."""
  f = np.asarray(frames, np.float64).mean(-1)
  t, h, w = f.shape
  ys, xs = np.mgrid[0:h, 0:w]
  out = []
  for sl in [(slice(0, h // 2), slice(0, w // 2)), (slice(0, h // 2), slice(w // 2, w)),
             (slice(h // 2, h), slice(0, w // 2)), (slice(h // 2, h), slice(w // 2, w))]:
    m = f[:, sl[0], sl[1]] + 1e-9
    out.append(np.stack([(m * xs[sl]).sum((1, 2)) / m.sum((1, 2)),
                         (m * ys[sl]).sum((1, 2)) / m.sum((1, 2))], -1))
  kp = np.stack(out, 1)
  kp[f.max(axis=(1, 2)) < 1e-3] = np.nan  # "no face" in black frames
  return kp.astype(np.float32)


def embed(frames):
  """Stand-in identity net: channel means and stds."""
  f = np.asarray(frames, np.float64)
  return np.concatenate([f.mean((1, 2)), f.std((1, 2))], -1).astype(np.float32)


def _video(seed, t, size=32):
  rng = np.random.default_rng(seed)
  big = ndi.gaussian_filter(rng.random((size + 3 * t, size + 3 * t, 3)), (2, 2, 0))
  big = (big - big.min()) / (big.max() - big.min())
  return np.stack([big[2 * i:2 * i + size, 3 * i:3 * i + size] for i in range(t)]).astype(np.float32)


def _blend(source, driving):
  """A deterministic 'generator': 70% driving, 30% source, plus a fixed ripple."""
  ripple = 0.02 * np.sin(np.arange(driving.shape[2]) / 2.0)[None, None, :, None]
  return np.clip(0.7 * driving + 0.3 * source[None] + ripple, 0, 1).astype(np.float32)


def _expected(video, fake, source):
  """Per-video values computed independently of the evaluator."""
  r64, f64 = video.astype(np.float64), fake.astype(np.float64)
  ka, kf = landmarks(video).astype(np.float64), landmarks(fake).astype(np.float64)
  ea, ef = embed(video).astype(np.float64), embed(fake).astype(np.float64)
  ea /= np.linalg.norm(ea, axis=1, keepdims=True)
  ef /= np.linalg.norm(ef, axis=1, keepdims=True)
  return {
      "l1": np.abs(r64 - f64).mean(),
      "psnr": np.mean([peak_signal_noise_ratio(r, f, data_range=1.0) for r, f in zip(r64, f64)]),
      "ssim": np.mean([structural_similarity(r, f, channel_axis=-1, data_range=1.0,
                                             gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)
                       for r, f in zip(r64, f64)]),
      "ssim_skimage": np.mean([structural_similarity(r, f, channel_axis=-1, data_range=1.0)
                               for r, f in zip(r64, f64)]),
      "akd": np.abs(ka - kf).mean(),
      "aed": ((ea - ef) ** 2).sum(1).mean(),
      "tcm": M.temporal_consistency(video, fake),
  }


def test_reconstruction_matches_independent_values_and_is_chunk_invariant():
  videos = {"a": _video(0, 5), "b": _video(1, 3)}
  names = ("l1", "psnr", "ssim", "ssim_skimage", "akd", "aed", "tcm")
  reports = [E.evaluate_reconstruction(_blend, videos, names, landmark_model=landmarks,
                                       identity_model=embed, chunk_size=c)
             for c in (2, 16)]
  for name, video in videos.items():
    want = _expected(video, _blend(video[0], video), video[0])
    for m in names:
      for rep in reports:
        assert rep["per_video"][name][m] == pytest.approx(want[m], rel=2e-4, abs=1e-6), (name, m)
    assert reports[0]["per_video"][name]["num_frames"] == len(video)
  rep = reports[0]
  assert rep["protocol"] == "reconstruction" and rep["skipped"] == {}
  for m in names:  # per video, then over videos; and the pooled frame mean
    assert rep["mean"][m] == pytest.approx(np.mean([rep["per_video"][v][m] for v in videos]))
  l1_frames = np.concatenate([np.abs(v - _blend(v[0], v)).mean(axis=(1, 2, 3))
                              for v in videos.values()])
  assert rep["frame_mean"]["l1"] == pytest.approx(l1_frames.mean(), rel=1e-5)
  assert rep["frame_mean"]["l1"] != pytest.approx(rep["mean"]["l1"], rel=1e-3)


def test_reconstruction_on_vox_mini_with_copy_generator(shared_dir, tmp_path):
  test_dir = shared_dir / "data" / "vox_mini" / "test"
  videos = {name: (lambda p=str(test_dir / name): read_frames(p, [0, 1, 2]))
            for name in sorted(os.listdir(test_dir))}
  seen = []
  rep = E.evaluate_reconstruction(lambda s, d: d, videos, chunk_size=2,
                                  metrics=("l1", "psnr", "ssim", "ssim_skimage",
                                           "lpips_alex", "akd", "aed", "tcm"),
                                  progress=seen.append)
  assert seen == sorted(os.listdir(test_dir))
  assert rep["metrics"] == ["l1", "psnr", "ssim", "ssim_skimage", "lpips_alex", "tcm"]
  assert "--landmark-model" in rep["skipped"]["akd"]
  assert "--identity-model" in rep["skipped"]["aed"]
  for entry in rep["per_video"].values():
    assert entry["num_frames"] == 3
    assert entry["l1"] == 0.0 and entry["psnr"] == np.inf
    assert entry["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert entry["ssim_skimage"] == pytest.approx(1.0, abs=1e-5)
    assert entry["lpips_alex"] == pytest.approx(0.0, abs=1e-6)
    assert entry["tcm"] == pytest.approx(np.exp(-2.0))
  out = tmp_path / "sub" / "report.json"
  E.write_report(out, rep)
  back = json.loads(out.read_text())
  assert back["mean"]["psnr"] == "inf" and back["mean"]["l1"] == 0.0
  assert set(back["skipped"]) == {"akd", "aed"} and "ssim" in back["conventions"]


def test_same_identity_pairs_on_shipped_list(shared_dir):
  root = shared_dir / "data" / "vox_mini"
  pairs = P.read_pair_list(os.path.join(os.path.dirname(__file__), "..", "..", "data",
                                        "vox_mini_test_pairs.csv"))[::5]
  hold = lambda s, d: np.repeat(s[None], len(d), 0)  # "no motion" baseline
  rep = E.evaluate_pairs(hold, pairs, read_frames, root, ("l1", "csim", "aed", "tcm"),
                         identity_model=embed)
  assert rep["protocol"] == "pairs" and len(rep["per_video"]) == len(pairs) == 4
  assert "single-frame" in rep["skipped"]["tcm"]
  for (name, entry), pair in zip(rep["per_video"].items(), pairs):
    src = next(read_frames(P.resolve_video(root, pair.source.video), [pair.source.frame]))
    drv = next(read_frames(P.resolve_video(root, pair.driving.video), [pair.driving.frame]))
    src, drv = src / 255.0, drv / 255.0
    assert entry["l1"] == pytest.approx(np.abs(src - drv).mean(), rel=1e-5), name
    assert entry["csim"] == pytest.approx(1.0, abs=1e-6)  # output is the source
    ea, ed = embed(src[None])[0], embed(drv[None])[0]
    want_aed = ((ea / np.linalg.norm(ea) - ed / np.linalg.norm(ed)) ** 2).sum()
    assert entry["aed"] == pytest.approx(want_aed, rel=1e-4, abs=1e-7)


def test_cross_identity_pairs_with_whole_driving_videos(tmp_path):
  root = tmp_path / "root"
  for seed, name in enumerate(["id00001#a#0#6.mp4", "id00002#b#0#6.mp4"]):
    (root / "test" / name).mkdir(parents=True)
    for i, frame in enumerate(_video(seed, 6)):
      imageio.imwrite(root / "test" / name / f"{i:07d}.png", np.uint8(np.rint(frame * 255)))
  csv_path = tmp_path / "cross.csv"
  P.write_pair_list(csv_path, P.make_cross_id_pairs(
      {"test/id00001#a#0#6.mp4": 6, "test/id00002#b#0#6.mp4": 6}, 1, seed=3,
      whole_driving_video=True))
  rep = E.evaluate_pairs(_blend, str(csv_path), read_frames, root, cross_identity=True,
                         landmark_model=landmarks, identity_model=embed, chunk_size=4)
  assert rep["protocol"] == "cross-id" and rep["metrics"] == ["akd", "csim", "tcm"]
  assert set(rep["skipped"]) == set(E.GT_METRICS) | {"aed"}
  assert "not meaningful across identities" in rep["skipped"]["aed"]
  for entry, pair in zip(rep["per_video"].values(), P.read_pair_list(csv_path)):
    src = np.stack(list(read_frames(P.resolve_video(root, pair.source.video),
                                    [pair.source.frame])))[0] / 255.0
    drv = np.stack(list(read_frames(P.resolve_video(root, pair.driving.video), None))) / 255.0
    src, drv = src.astype(np.float32), drv.astype(np.float32)
    fake = _blend(src, drv)
    es, ef = embed(src[None])[0].astype(np.float64), embed(fake).astype(np.float64)
    want_csim = (ef @ es / (np.linalg.norm(ef, axis=1) * np.linalg.norm(es))).mean()
    assert entry["num_frames"] == 6
    assert entry["csim"] == pytest.approx(want_csim, rel=1e-5)
    assert entry["akd"] == pytest.approx(np.abs(landmarks(drv) - landmarks(fake)).mean(), rel=1e-4)
    assert entry["tcm"] == pytest.approx(M.temporal_consistency(drv, fake), rel=1e-6)
  # Asking for ground-truth metrics in cross-id says why they are skipped.
  rep = E.evaluate_pairs(_blend, str(csv_path), read_frames, root, ("l1", "csim"),
                         cross_identity=True)
  assert "no ground truth" in rep["skipped"]["l1"] and "--identity-model" in rep["skipped"]["csim"]
  assert rep["metrics"] == []


def test_akd_frames_without_a_face_are_left_out_and_counted():
  video = _video(2, 4)
  video[1] = 0.0  # no "face" in frame 1 (real and generated alike)
  rep = E.evaluate_reconstruction(lambda s, d: d * 0.9, {"v": video}, ("akd",),
                                  landmark_model=landmarks)
  keep = [0, 2, 3]
  want = np.abs(landmarks(video[keep]) - landmarks(video[keep] * 0.9)).mean()
  assert rep["per_video"]["v"]["akd_missing_frames"] == 1
  assert rep["per_video"]["v"]["akd"] == pytest.approx(want, rel=1e-4)


def test_bad_inputs_raise_named_errors(tmp_path):
  video = {"clip7": _video(0, 3)}
  with pytest.raises(DataError, match=r"clip7: generate_fn returned shape \(2, 32, 32, 3\)"):
    E.evaluate_reconstruction(lambda s, d: d[:2], video, ("l1",), chunk_size=3)
  with pytest.raises(DataError, match="clip7: generate_fn returned non-finite"):
    E.evaluate_reconstruction(lambda s, d: d * np.nan, video, ("l1",))
  with pytest.raises(DataError, match="empty: empty video"):
    E.evaluate_reconstruction(lambda s, d: d, {"empty": np.zeros((0, 8, 8, 3), np.float32)})
  with pytest.raises(DataError, match=r"gen: expected frames .* got shape \(2, 8, 8\)"):
    E.evaluate_reconstruction(lambda s, d: d, {"gen": np.zeros((2, 8, 8), np.float32)})
  with pytest.raises(DaganError, match="unknown metric.*fid"):
    E.evaluate_reconstruction(lambda s, d: d, video, ("l1", "fid"))
  with pytest.raises(FM.ModelFileError, match="landmark model file not found"):
    E.evaluate_reconstruction(lambda s, d: d, video, landmark_model=str(tmp_path / "fan.pth"))
  with pytest.raises(DataError, match="no rows"):
    E.evaluate_pairs(lambda s, d: d, [], read_frames)
  with pytest.raises(DataError, match="pair list not found"):
    E.evaluate_pairs(lambda s, d: d, str(tmp_path / "none.csv"), read_frames)


def test_start_video_anchors_relative_motion_at_each_videos_first_frame():
  """A 'relative' generator (source + driving - first driving frame) needs the
  video's first frame, not each chunk's: start_video provides it, once per
  video, and the scores do not depend on the chunk size."""
  videos = {"a": _video(3, 7), "b": _video(4, 5)}
  state, calls = {}, []

  def start(source, first_chunk):
    calls.append(first_chunk.shape[0])
    state["first"] = first_chunk[0]

  def relative(source, driving):
    return np.clip(source[None] + driving - state["first"][None], 0, 1)

  reports = [E.evaluate_reconstruction(relative, videos, ("l1",), chunk_size=c,
                                       start_video=start) for c in (2, 16)]
  assert calls == [2, 2, 7, 5]
  for name, video in videos.items():
    want = np.abs(video - np.clip(video[0] + video - video[0], 0, 1)).mean()
    for rep in reports:
      assert rep["per_video"][name]["l1"] == pytest.approx(want, abs=1e-7)
