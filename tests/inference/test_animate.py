"""Animator: motion transfer vs independent computations, best frame, traces,
output formats."""

import numpy as np
import pytest
from scipy.spatial import ConvexHull

import jax

from dagan_jax import checkpoints
from dagan_jax.errors import DataError
from dagan_jax.inference import animate as A
from dagan_jax.input import media
from dagan_jax.models import build

from inference_helpers import face_clip


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
  return checkpoints.load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def animator(loaded):
  config, variables = loaded
  return A.Animator(config, variables, batch_size=4)


@pytest.fixture(scope="module")
def reference(loaded):
  """The official demo's forward pass written out with build.py's functions
  on networks built without the fast-eval paths (one jitted program)."""
  config, variables = loaded
  models = build.build_models(config)

  @jax.jit
  def forward(source, frames):
    t = frames.shape[0]
    d_s = build.depth_fn(models, variables, source[None])
    kp_s = build.keypoints_fn(models, variables, source[None], d_s)
    d_d = build.depth_fn(models, variables, frames)
    kp_d = build.keypoints_fn(models, variables, frames, d_d)
    kp_s_b = {k: jax.numpy.repeat(kp_s[k], t, 0) for k in ("value", "jacobian")}
    out = build.generate_fn(models, variables, jax.numpy.repeat(source[None], t, 0),
                            kp_s_b, {k: kp_d[k] for k in ("value", "jacobian")},
                            jax.numpy.repeat(d_s, t, 0), d_d)
    return out["prediction"], kp_s, kp_d

  return forward


def test_absolute_motion_equals_an_independent_forward_pass(animator, reference):
  src, frames = face_clip(1, 1)[0], face_clip(0, 5)
  res = animator.animate(src, frames, relative=False)
  pred, kp_s, kp_d = jax.device_get(reference(src, frames))
  np.testing.assert_allclose(res.kp_source, kp_s["value"][0], atol=1e-5)
  np.testing.assert_allclose(res.kp_driving, kp_d["value"], atol=1e-5)
  # Absolute motion hands the detected keypoints to the generator unchanged.
  np.testing.assert_array_equal(res.kp_norm, res.kp_driving)
  np.testing.assert_array_equal(res.jacobian_norm, res.jacobian_driving)
  np.testing.assert_array_equal(res.scale, np.ones(5, np.float32))
  np.testing.assert_allclose(res.prediction, pred, atol=2e-5)
  assert res.prediction.shape == (5, 32, 32, 3) and res.best_frame is None
  # Driving with the source itself: the generator gets the source keypoints.
  same = animator.drive(np.repeat(src[None], 3, 0), relative=False)
  np.testing.assert_allclose(same.kp_norm, np.repeat(res.kp_source[None], 3, 0),
                             atol=1e-5)


def test_relative_motion_and_adapt_scale_vs_numpy_and_scipy(animator):
  src, frames = face_clip(1, 1)[0], face_clip(0, 6)
  res = animator.animate(src, frames, relative=True, adapt_scale=True)
  # The initial frame is the first driving frame, detected on its own.
  kp0 = animator.keypoints(frames[:1])
  v0, j0 = kp0["value"][0].astype(np.float64), kp0["jacobian"][0].astype(np.float64)
  vs = res.kp_source.astype(np.float64)
  scale = np.sqrt(ConvexHull(vs).volume) / np.sqrt(ConvexHull(v0).volume)
  np.testing.assert_allclose(res.scale, np.full(6, scale), rtol=1e-5)
  want_v = vs + scale * (res.kp_driving - v0)
  np.testing.assert_allclose(res.kp_norm, want_v, atol=1e-5)
  js = np.asarray(animator.source["kp"]["jacobian"])[0].astype(np.float64)
  want_j = res.jacobian_driving.astype(np.float64) @ np.linalg.inv(j0) @ js
  np.testing.assert_allclose(res.jacobian_norm, want_j, rtol=1e-4, atol=1e-5)
  # Without adaptation the motion is not scaled.
  plain = animator.drive(frames, relative=True, adapt_scale=False)
  np.testing.assert_array_equal(plain.scale, np.ones(6, np.float32))
  np.testing.assert_allclose(plain.kp_norm, vs + (plain.kp_driving - v0), atol=1e-5)
  # Driving frames equal to the initial frame: no motion, the source keypoints.
  still = animator.drive(np.repeat(frames[:1], 3, 0), relative=True,
                         kp_driving_initial=kp0)
  np.testing.assert_allclose(still.kp_norm, np.repeat(vs[None], 3, 0), atol=1e-6)
  np.testing.assert_allclose(still.jacobian_norm, np.repeat(js[None], 3, 0),
                             atol=1e-5)


def test_normalized_shape_matches_the_official_normalisation():
  kp = np.random.default_rng(0).uniform(-1, 1, (3, 10, 2)).astype(np.float32)
  got = A.normalized_shape(kp)
  for i in range(3):
    want = (kp[i] - kp[i].mean(0)) / np.sqrt(ConvexHull(kp[i]).volume)
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_best_frame_search_finds_the_planted_frame(animator):
  src = face_clip(1, 1)[0]
  frames = face_clip(5, 9)
  frames[6] = src  # the driving video passes through the source's pose exactly
  source = animator.prepare_source(src)
  assert animator.find_best_frame(frames, source) == 6
  res = animator.animate(src, frames, find_best_frame=True)
  assert res.best_frame == 6
  # The official demo: forwards from the best frame, backwards to it, joined.
  kp6 = animator.keypoints(frames[6:7])
  fwd = animator.drive(frames[6:], kp_driving_initial=kp6).prediction
  bwd = animator.drive(frames[:7][::-1], kp_driving_initial=kp6).prediction
  official = np.concatenate([bwd[::-1], fwd[1:]])
  np.testing.assert_allclose(res.prediction, official, atol=1e-5)
  # A fixed start frame gives the same; one outside the video is an error.
  fixed = animator.animate(src, frames, best_frame=6)
  np.testing.assert_allclose(fixed.prediction, res.prediction, atol=1e-5)
  with pytest.raises(DataError, match=r"best frame 9 is outside the driving "
                                        r"video \(frames 0..8\)"):
    animator.animate(src, frames, best_frame=9)


def test_one_trace_for_many_batches_and_padding_is_harmless(loaded):
  config, variables = loaded
  A._COMPILED.clear()   # count from a fresh trace (the compile is disk-cached)
  anim = A.Animator(config, variables, batch_size=4)
  assert anim.traces == {"source": 0, "keypoints": 0, "drive": 0, "render": 0}
  frames = face_clip(7, 11)
  anim.prepare_source(face_clip(1, 1)[0])
  kp0 = anim.keypoints(frames[:1])
  whole = anim.drive(frames)           # batches of 4: 4 + 4 + 3 (padded)
  again = anim.drive(frames[:6])       # 4 + 2 (padded)
  tail = anim.drive(frames[4:8], kp_driving_initial=kp0)   # one batch
  absolute = anim.drive(frames, relative=False)   # same program, other mode
  assert anim.traces == {"source": 1, "keypoints": 1, "drive": 1, "render": 0}
  assert not np.allclose(absolute.kp_norm, whole.kp_norm)
  # A second Animator of the same config reuses the compiled programs.
  other = A.Animator(config, variables, batch_size=4)
  other.drive(frames[:8], source=anim.source)
  assert other.traces is anim.traces and anim.traces["drive"] == 1
  np.testing.assert_allclose(again.prediction, whole.prediction[:6], atol=1e-6)
  np.testing.assert_allclose(tail.prediction, whole.prediction[4:8], atol=1e-6)
  assert whole.prediction.shape == (11, 32, 32, 3)


def test_output_formats_round_trip(tmp_path):
  frames = face_clip(3, 7)
  mp4 = A.write_frames(tmp_path / "out.mp4", frames, fps=12.5)
  n, fps, hw = media.probe_video(mp4)
  assert (n, fps, hw) == (7, 12.5, (32, 32))
  back, _ = media.read_video(mp4)
  assert back.shape == frames.shape and np.abs(back - frames).mean() < 0.03
  # PNG frames are lossless for the 8-bit frames written.
  folder = A.write_frames(tmp_path / "frames", frames, fps=12.5)
  u8 = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
  names = sorted(p.name for p in folder.iterdir())
  assert names == [f"{i:07d}.png" for i in range(7)]
  got = np.stack([media.read_image_native(folder / n) for n in names])
  np.testing.assert_array_equal(got, u8)
  # A shorter rerun into the same folder leaves no stale frames behind.
  A.write_frames(folder, frames[:4], fps=12.5)
  assert sorted(p.name for p in folder.iterdir()) == [f"{i:07d}.png" for i in range(4)]
  # .npy keeps the float32 frames exactly.
  npy = A.write_frames(tmp_path / "out.npy", frames, fps=12.5)
  np.testing.assert_array_equal(np.load(npy), frames)


def test_resize_is_announced_and_matches_opencv(caplog):
  import cv2
  big = face_clip(2, 2, size=48)[:, :, 4:44]            # 48 x 40: not square
  with caplog.at_level("WARNING", logger="dagan_jax.inference"):
    out = A.resize_frames(big, (32, 32), "clip.mp4")
  assert "clip.mp4: frames are 48x40; resized to the model's 32x32" in caplog.text
  assert "aspect ratio changed" in caplog.text
  want = cv2.resize(big[1], (32, 32), interpolation=cv2.INTER_AREA)
  np.testing.assert_allclose(out[1], want, atol=1e-6)
  small = face_clip(2, 1, size=16)
  up = A.resize_frames(small, (32, 32), "small.png")
  want = np.clip(cv2.resize(small[0], (32, 32), interpolation=cv2.INTER_CUBIC), 0, 1)
  np.testing.assert_allclose(up[0], want, atol=1e-6)
  same = face_clip(2, 1)
  assert A.resize_frames(same, (32, 32)) is not None
  np.testing.assert_array_equal(A.resize_frames(same, (32, 32)), same)


def test_daganpp_animate_caches_the_source_encodings():
  """DaGAN++ (toy widths) encodes the source once per video too, and the
  frames equal the uncached generator called on every frame."""
  import jax.numpy as jnp

  from dagan_jax import config as config_lib
  from dagan_jax.models import variants
  from inference_helpers import tiny_dict

  d = tiny_dict()
  d["model_params"] = variants.daganpp_model_params("daganpp", d["model_params"])
  d["model_params"]["generator_params"]["num_down_blocks"] = 2
  cfg = config_lib.from_dict(d)
  models = build.build_models(cfg)
  # Random weights drawn with numpy (compiling the jitted init costs more
  # than the test).
  from benchmarks.common import random_variables
  variables = random_variables(
      build.abstract_variables(models, checkpoints.INFERENCE_NETWORKS), seed=0)
  an = A.Animator(cfg, variables, batch_size=2)
  assert an.compiled.caches_source_features
  src, frames = face_clip(1, 1)[0], face_clip(0, 3)
  res = an.animate(src, frames, relative=False)

  @jax.jit
  def uncached(src, frames, kp):
    d_s = build.depth_fn(models, variables, src[None])
    d_d = build.depth_fn(models, variables, frames)
    kp_s = build.keypoints_fn(models, variables, src[None], d_s)
    kp_s3 = {k: jnp.repeat(kp_s[k], 3, 0) for k in ("value", "jacobian")}
    return build.generate_fn(models, variables, jnp.repeat(src[None], 3, 0), kp_s3,
                             kp, jnp.repeat(d_s, 3, 0), d_d)["prediction"]
  want = uncached(src, frames, {"value": res.kp_norm, "jacobian": res.jacobian_norm})
  np.testing.assert_allclose(res.prediction, np.asarray(want), atol=2e-5)
