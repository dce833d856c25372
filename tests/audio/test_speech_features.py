"""Audio2Head's 41-d speech features against the official code's numbers
(the fixture) and python_speech_features (an independent oracle)."""

import numpy as np
import pytest

from dagan_jax.audio import speech_features as sf
from dagan_jax.errors import DataError

FEATURE_RTOL = 1e-5


def _close(got, want, rtol=FEATURE_RTOL):
  """Within ``rtol`` of the array's magnitude (at least 1)."""
  err = np.abs(np.asarray(got, np.float64) - want).max()
  assert err <= rtol * max(1.0, np.abs(want).max()), err


def test_features_match_the_official_code(a2h_npz):
  wav = a2h_npz["audio/wav_int16"]
  signal = sf.normalise(wav)
  _close(signal, a2h_npz["audio/signal"])
  _close(sf.mfcc(signal), a2h_npz["audio/mfcc"])
  _close(sf.logfbank(signal), a2h_npz["audio/logfbank"])
  filled, voiced = sf.fill_unvoiced(a2h_npz["audio/f0_raw"])
  _close(filled, a2h_npz["audio/f0_filled"])
  np.testing.assert_array_equal(voiced, a2h_npz["audio/voiced"])
  feats = sf.audio2head_features(wav, a2h_npz["audio/f0_raw"])
  assert feats.shape == a2h_npz["audio/features"].shape
  _close(feats, a2h_npz["audio/features"])
  blocks = sf.frame_blocks(feats)
  assert blocks.dtype == np.float32
  _close(blocks, a2h_npz["audio/blocks"])


@pytest.mark.parametrize("n", [59486, 400, 401, 160 * 7 + 400, 123])
def test_mfcc_and_logfbank_equal_python_speech_features(n):
  psf = pytest.importorskip("python_speech_features")
  rng = np.random.default_rng(n)
  x = np.cumsum(rng.normal(size=n))  # speech-like low-pass noise
  x = (x - x.mean()) / np.abs(x - x.mean()).max()
  want_m = psf.mfcc(x, 16000)
  want_f = psf.logfbank(x, 16000)
  assert sf.mfcc(x).shape == want_m.shape and sf.logfbank(x).shape == want_f.shape
  _close(sf.mfcc(x), want_m)
  _close(sf.logfbank(x), want_f)
  _close(sf.filterbank(), psf.get_filterbanks(26, 512, 16000))


def test_fill_unvoiced_runs():
  f0 = np.array([0, 0, 100, 0, 0, 0, 200, 210, 0, 0], np.float64)
  filled, voiced = sf.fill_unvoiced(f0)
  np.testing.assert_array_equal(voiced, [0, 0, 1, 0, 0, 0, 1, 1, 0, 0])
  np.testing.assert_allclose(filled, [100, 100, 100, 125, 150, 175, 200, 210,
                                      210, 210])
  silent, flags = sf.fill_unvoiced(np.zeros(5))
  assert not silent.any() and not flags.any()


def test_silence_gives_finite_features_and_no_samples_is_refused():
  # Digital silence: the features of a pause (the official code would
  # divide by zero); no samples at all: an error.
  np.testing.assert_array_equal(sf.normalise(np.full(1600, 7, np.int16)), 0)
  rows, _ = sf.features_from_samples(np.zeros(16000, np.int16), tracker="yin")
  assert rows.shape == (1 + -(-(16000 - 400) // 160), 41)
  assert np.isfinite(rows).all()
  assert not rows[:, -2:].any()          # no pitch, nothing voiced
  with pytest.raises(DataError, match="no samples"):
    sf.normalise(np.zeros(0, np.int16))


def test_frame_blocks_drop_the_partial_frame():
  feats = np.arange(10 * 41, dtype=np.float64).reshape(10, 41)
  blocks = sf.frame_blocks(feats)
  assert blocks.shape == (2, 4, 41)
  np.testing.assert_array_equal(blocks[1, 0], feats[4])


def test_features_from_a_file_and_frames_at_any_rate(shared_dir, a2h_npz, tmp_path):
  import wave
  from dagan_jax.audio import mel, pitch
  wav = a2h_npz["audio/wav_int16"]
  path = tmp_path / "speech.wav"
  with wave.open(str(path), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(16000)
    w.writeframes(wav.astype("<i2").tobytes())
  feats, name = sf.features_from_file(path)
  assert name == pitch.tracker_name("auto")
  if name == "harvest":
    _close(feats, a2h_npz["audio/features"])
  else:  # MFCC and filterbank are the same whatever the tracker
    _close(feats[:, :39], a2h_npz["audio/features"][:, :39])
  # 30 fps: 10/3 rows per frame, every frame a whole window of 4 rows.
  blocks = sf.frame_blocks(feats, 30)
  assert blocks.shape == (111, 4, 41)  # floor(10 k / 3) + 4 <= 371
  np.testing.assert_array_equal(blocks[3], feats[10:14].astype(np.float32))
  clip = sorted((shared_dir / "data" / "av_mini" / "test").glob("*.mp4"))[0]
  spec = mel.mel_from_file(clip)
  assert spec.shape[0] == 80 and spec.shape[1] > 100
  assert -4 <= spec.min() < spec.max() <= 4
  # A silent file: the features of silence (no error, nothing voiced).
  silent = tmp_path / "silent.wav"
  with wave.open(str(silent), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(16000)
    w.writeframes(np.zeros(1600, "<i2").tobytes())
  rows, _ = sf.features_from_file(silent, tracker="yin")
  assert len(rows) == 1 + -(-(1600 - 400) // 160) and np.isfinite(rows).all()
  assert not rows[:, -1].any()
