"""``speak`` over a renderer smaller than Audio2Head's 256 x 256 camera (the
demo's and the smoke runs' case): configs/audio2head_smoke.py's networks
with random weights over a 32x32 DaGAN, a held-out face of
data/speech_sample and a second of another clip's real speech.

What is claimed: frames come out at the renderer's size, exactly one per
40 ms of speech; the renderer is fed the source shrunk (anti-aliased) to
its size, audio2pose that same view and audio2kp it enlarged back to 256
as their trainers feed them; a 256 x 256 renderer sees the source as
given; the side-by-side (the command's and the demo's) shows the small
frames pixel for pixel."""

from __future__ import annotations

import pathlib
import sys

import cv2
import numpy as np
import pytest

from dagan_jax import config as config_lib
from dagan_jax.audio import io as audio_io
from dagan_jax.inference import animate as A
from dagan_jax.inference import speak as S
from dagan_jax.models import build as build_lib

REPO = pathlib.Path(__file__).parents[2]
SAMPLE = REPO / "data" / "speech_sample"
FACE = SAMPLE / "test" / "st_feifeili#clip3.mp4"
SPEECH = SAMPLE / "test" / "grid_s1#bbal6n.mp4"
N_SAMPLES = 16000 + 500          # 1.03 s: rows = 1 + ceil(16100 / 160) = 102


@pytest.fixture(scope="module")
def small_model():
  """(config, variables): the released Audio2Head's layout (a FOMM renderer,
  no depth network) at toy widths with 32x32 frames and 4 keypoints, and
  configs/audio2head_smoke.py's speech networks with windows of 4 frames;
  random weights."""
  d = config_lib.toy_model(config_lib.audio2head_config(), frame=32)
  a2h = d["audio2head_params"]
  a2h["audio2kp"].update({"block_expansion": 4, "max_features": 16,
                          "num_blocks": 2, "seq_len": 4, "num_kp": 4})
  a2h["audio2pose"] = {"embedding_dim": 32, "blocks": [1, 1, 0, 0]}
  a2h["pitch_tracker"] = "yin"
  cfg = config_lib.from_dict(d)
  models = build_lib.build_models(cfg)
  names = ("kp_detector", "generator") + build_lib.AUDIO_NETWORKS
  # Weights drawn with numpy: compiling the jitted inits would cost more
  # than the test.
  sys.path.insert(0, str(REPO))
  from benchmarks.common import random_variables
  return cfg, random_variables(build_lib.abstract_variables(models, names), seed=3)


@pytest.fixture(scope="module")
def spoken(small_model):
  speaker = S.Speaker(*small_model, batch_size=8, window_batch=4)
  face = A.read_source(FACE)
  samples = audio_io.read_speech(SPEECH)[:N_SAMPLES]
  return speaker, face, samples, speaker.speak(face, samples)


def test_a_32x32_renderer_speaks_one_frame_per_40_ms(spoken):
  speaker, face, samples, got = spoken
  assert face.shape == (256, 256, 3) and speaker.frame_hw == (32, 32)
  rows = 1 + -(-(len(samples) - 400) // 160)
  t = rows // 4
  assert t == 25
  assert got.frames.shape == (t, 32, 32, 3) and got.frames.dtype == np.float32
  assert np.isfinite(got.frames).all()
  assert got.frames.min() >= 0 and got.frames.max() <= 1
  assert got.kp_value.shape == (t, 4, 2) and got.kp_jacobian.shape == (t, 4, 2, 2)
  assert np.abs(got.kp_value).max() <= 1
  assert got.poses.shape == (t + 1, 6) and got.boxes.shape == (t + 1, 256, 256)
  assert set(np.unique(got.boxes)) <= {0, 255} and (got.boxes == 255).any()

  # Each network got its view of the source: the renderer the face shrunk
  # with area interpolation (OpenCV here, independently), audio2pose the
  # same, audio2kp that enlarged to 256.
  views = S.source_views(face, (32, 32))
  want = cv2.resize(face, (32, 32), interpolation=cv2.INTER_AREA)
  np.testing.assert_allclose(views.render, want, atol=1e-6)
  assert views.pose is views.render and views.identity.shape == (256, 256, 3)
  # Bilinear enlargement, half-pixel centres, edges clamped: OpenCV's.
  np.testing.assert_allclose(
      views.identity, cv2.resize(want, (256, 256), interpolation=cv2.INTER_LINEAR),
      atol=1e-5)
  blocks = speaker.features(samples)
  np.testing.assert_allclose(speaker.poses(views.pose, blocks), got.poses,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      speaker.render(views.render, got.kp_value, got.kp_jacobian), got.frames,
      atol=1e-5)
  # A 256 x 256 renderer: every network sees the source as given.
  same = S.source_views(face, (256, 256))
  assert same.render is face and same.pose is face and same.identity is face

  sbs = S.side_by_side(face, got)
  assert sbs.shape == (t, 256, 768, 3)
  np.testing.assert_array_equal(sbs[:, :, :256], np.broadcast_to(face, (t, 256, 256, 3)))
  np.testing.assert_array_equal(sbs[:, :, 256:512, 0], got.boxes[:t] / 255.0)
  np.testing.assert_array_equal(sbs[:, ::8, 512::8], got.frames)


def test_silence_speaks_a_finite_video_of_the_same_length(spoken):
  """Digital silence of the same length: the same number of frames, all
  finite (the official code's features would be NaN)."""
  speaker, face, samples, got = spoken
  quiet = speaker.speak(face, np.zeros_like(samples))
  assert quiet.frames.shape == got.frames.shape
  assert np.isfinite(quiet.frames).all() and np.isfinite(quiet.poses).all()
  assert np.isfinite(quiet.kp_value).all()
