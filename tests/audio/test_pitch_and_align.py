"""Pitch trackers and frame alignment."""

import fractions

import numpy as np
import pytest

from dagan_jax.audio import align, pitch
from dagan_jax.errors import ConfigError


@pytest.mark.parametrize("f0", [80.0, 150.0, 310.0, 640.0])
def test_yin_finds_the_pitch_of_harmonic_tones(f0):
  sr = 16000
  t = np.arange(sr) / sr
  x = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 6))
  got = pitch.yin(x / np.abs(x).max(), sr)
  assert got.shape == (pitch.num_frames(sr, sr),) == (101,)
  inner = got[3:-3]
  assert (inner > 0).all()
  np.testing.assert_allclose(np.median(inner), f0, rtol=2e-3)


def test_yin_silence_and_noise_are_unvoiced():
  assert not pitch.yin(np.zeros(8000)).any()
  noise = np.random.default_rng(0).normal(size=16000)
  assert np.mean(pitch.yin(noise / np.abs(noise).max()) > 0) < 0.1


def test_yin_against_harvest_on_real_speech(a2h_npz):
  """Not Harvest, but close where both hear voice: on the fixture's speech
  the median f0 difference is under 2% and most frames agree on voicing."""
  harvest = a2h_npz["audio/f0_raw"]
  ours = pitch.yin(a2h_npz["audio/signal"])
  assert ours.shape == harvest.shape
  both = (ours > 0) & (harvest > 0)
  assert both.sum() > 50
  assert np.median(np.abs(ours[both] - harvest[both]) / harvest[both]) < 0.02
  assert np.mean((ours > 0) == (harvest > 0)) > 0.6


def test_harvest_when_installed_matches_the_official_f0(a2h_npz):
  pytest.importorskip("pyworld")
  got = pitch.f0(a2h_npz["audio/signal"], 16000, "harvest")
  np.testing.assert_allclose(got, a2h_npz["audio/f0_raw"], rtol=1e-5, atol=1e-5)


def test_tracker_names():
  assert pitch.tracker_name("yin") == "yin"
  assert pitch.tracker_name("auto") in ("harvest", "yin")
  with pytest.raises(ConfigError, match="pitch tracker"):
    pitch.tracker_name("crepe")


def test_frame_starts_at_any_rate():
  np.testing.assert_array_equal(align.frame_starts(20, 25, 100, 4),
                                [0, 4, 8, 12, 16])
  # 30 fps: 10/3 rows per frame, rounded down from the exact rate.
  np.testing.assert_array_equal(align.frame_starts(16, 30, 100, 4),
                                [0, 3, 6, 10])
  # NTSC 29.97 as a float and as the exact fraction give the same frames,
  # with no frame skipped or repeated over an hour of audio.
  a = align.frame_starts(360000, 29.97, 100, 4)
  b = align.frame_starts(360000, fractions.Fraction(2997, 100), 100, 4)
  np.testing.assert_array_equal(a, b)
  steps = np.diff(a)
  assert set(steps.tolist()) <= {3, 4}
  assert align.num_video_frames(16000 * 60, 16000, "30000/1001") == 1798
  windows = align.frame_windows(np.arange(20 * 2).reshape(20, 2), 25, 100, 4)
  assert windows.shape == (5, 4, 2) and windows[1, 0, 0] == 8
  with pytest.raises(ValueError, match="positive"):
    align.exact_rate(0)
