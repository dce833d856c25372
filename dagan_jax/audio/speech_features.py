"""Audio2Head's speech features: 41 values per 10 ms of 16 kHz speech.

The official ``get_audio_feature_from_audio`` (wangsuzhen/Audio2Head,
``inference.py``) centres the int16 samples and divides them by their peak,
then concatenates per 10 ms frame:

* 13 MFCCs (``python_speech_features.mfcc``),
* 26 log mel filterbank energies (``python_speech_features.logfbank``),
* the pitch in Hz (WORLD's Harvest, 71-800 Hz, 10 ms frames) with its
  unvoiced runs filled (:func:`fill_unvoiced`),
* the voiced flag (1 voiced, 0 not),

cut to the shortest of the three sequences; four rows make one video frame
at 25 fps (:func:`frame_blocks`). The MFCC and filterbank maths below is
written from python_speech_features 0.6's conventions (checked against it
and against the official code's numbers in the tests):

* pre-emphasis ``y[0] = x[0]``, ``y[n] = x[n] - 0.97 x[n-1]``;
* frames of ``round_half_up(0.025 fs)`` = 400 samples every
  ``round_half_up(0.01 fs)`` = 160, a rectangular window, the last frame
  zero-padded: ``1 + ceil((N - 400) / 160)`` frames (one if N <= 400);
* power spectrum ``|rfft(frame, 512)|^2 / 512``;
* 26 triangular filters between 0 Hz and fs / 2, equally spaced on the mel
  scale ``2595 log10(1 + f / 700)``, their corners at FFT bins
  ``floor(513 * f / fs)``; energies equal to 0 become float64's eps;
* MFCC: the orthonormal DCT-II of the log filterbank energies, the first 13,
  multiplied by the lifter ``1 + 11 sin(pi n / 22)``, and coefficient 0
  replaced by the log of the frame's total power.

Everything is float64 numpy, as the official code computes it.
"""

from __future__ import annotations

import decimal
import math

import numpy as np

from dagan_jax.audio import align, pitch
from dagan_jax.audio import io as audio_io
from dagan_jax.errors import DataError

#: Feature rows per second (10 ms frames) and per video frame at 25 fps.
ROWS_PER_SECOND = 100
ROWS_PER_FRAME = 4
#: Width of a feature row: 13 MFCC + 26 log filterbank + pitch + voiced.
NUM_FEATURES = 41

WIN_SECONDS = 0.025
STEP_SECONDS = 0.01
NFFT = 512
NUM_FILTERS = 26
NUM_CEPSTRA = 13
PREEMPHASIS = 0.97
LIFTER = 22


def _round_half_up(x: float) -> int:
  return int(decimal.Decimal(repr(x)).quantize(decimal.Decimal("1"),
                                               rounding=decimal.ROUND_HALF_UP))


def normalise(samples: np.ndarray) -> np.ndarray:
  """``(x - mean(x)) / max|x - mean(x)|`` in float64 (the official code's
  scaling of the int16 samples before every feature).

  A constant signal (digital silence) stays all zeros: the official code
  divides 0 by 0 there and its features, and so its video, turn NaN; the
  features of silence (log energies at the filterbank's floor, no pitch)
  are what a silent stretch inside speech gives, so the models treat it as
  a pause in speech.

  Raises:
    DataError: no samples at all.
  """
  x = np.asarray(samples, np.float64)
  if not x.size:
    raise DataError("the audio has no samples: no speech features can be computed")
  x = x - np.mean(x)
  peak = np.max(np.abs(x))
  return x / peak if peak > 0 else x


def frame_signal(signal: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
  """Pre-emphasised, zero-padded 25 ms frames every 10 ms: (frames, 400)."""
  x = np.asarray(signal, np.float64)
  x = np.append(x[:1], x[1:] - PREEMPHASIS * x[:-1])
  length = _round_half_up(WIN_SECONDS * sample_rate)
  step = _round_half_up(STEP_SECONDS * sample_rate)
  n = 1 if x.size <= length else 1 + int(math.ceil((x.size - length) / step))
  padded = np.concatenate([x, np.zeros(((n - 1) * step + length - x.size,))])
  index = np.arange(length)[None, :] + step * np.arange(n)[:, None]
  return padded[index]


def power_spectrum(frames: np.ndarray) -> np.ndarray:
  """``|rfft(frame, 512)|^2 / 512`` per frame: (frames, 257)."""
  return np.square(np.abs(np.fft.rfft(frames, NFFT))) / NFFT


def hz_to_mel(hz):
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def filterbank(sample_rate: int = 16000) -> np.ndarray:
  """The 26 triangular mel filters over the 257 FFT bins: (26, 257)."""
  mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0),
                     NUM_FILTERS + 2)
  bins = np.floor((NFFT + 1) * mel_to_hz(mels) / sample_rate)
  fb = np.zeros((NUM_FILTERS, NFFT // 2 + 1))
  k = np.arange(NFFT // 2 + 1, dtype=np.float64)
  for j in range(NUM_FILTERS):
    lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
    rising = (k >= lo) & (k < mid)
    falling = (k >= mid) & (k < hi)
    fb[j, rising] = (k[rising] - lo) / (mid - lo)
    fb[j, falling] = (hi - k[falling]) / (hi - mid)
  return fb


def _filterbank_energies(signal, sample_rate):
  spec = power_spectrum(frame_signal(signal, sample_rate))
  eps = np.finfo(np.float64).eps
  energy = spec.sum(axis=1)
  feat = spec @ filterbank(sample_rate).T
  return np.where(feat == 0, eps, feat), np.where(energy == 0, eps, energy)


def logfbank(signal: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
  """The 26 log mel filterbank energies per frame: (frames, 26)."""
  return np.log(_filterbank_energies(signal, sample_rate)[0])


def dct_ortho_matrix(n: int, k: int) -> np.ndarray:
  """The first ``k`` rows of the orthonormal DCT-II of length ``n``."""
  rows = np.arange(k)[:, None]
  cols = np.arange(n)[None, :]
  m = np.sqrt(2.0 / n) * np.cos(np.pi * rows * (2 * cols + 1) / (2.0 * n))
  m[0] /= np.sqrt(2.0)
  return m


def mfcc(signal: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
  """13 MFCCs per frame, coefficient 0 the log frame energy: (frames, 13)."""
  feat, energy = _filterbank_energies(signal, sample_rate)
  cep = np.log(feat) @ dct_ortho_matrix(NUM_FILTERS, NUM_CEPSTRA).T
  cep = cep * (1.0 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(NUM_CEPSTRA)
                                             / LIFTER))
  cep[:, 0] = np.log(energy)
  return cep


def fill_unvoiced(f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``(filled f0, voiced flag)`` as the official ``inter_pitch`` fills
  them: a run of unvoiced frames (f0 == 0) between two voiced ones is
  interpolated linearly between them, a leading run takes the first voiced
  value, a trailing run the last; with no voiced frame f0 stays 0. The flag
  is int64, 1 where the input was voiced."""
  f0 = np.array(f0, np.float64)
  voiced = (f0 != 0.0).astype(np.int64)
  idx = np.flatnonzero(voiced)
  if idx.size == 0:
    return f0, voiced
  f0[:idx[0]] = f0[idx[0]]
  f0[idx[-1] + 1:] = f0[idx[-1]]
  for a, b in zip(idx[:-1], idx[1:]):
    if b - a > 1:  # the official code's interp1d on linspace(0, 1, b - a + 1)
      t = np.linspace(0.0, 1.0, b - a + 1)[1:-1]
      f0[a + 1:b] = (f0[b] - f0[a]) * t + f0[a]
  return f0, voiced


def audio2head_features(samples: np.ndarray, f0: np.ndarray,
                        sample_rate: int = 16000) -> np.ndarray:
  """The official 41-d rows: (n, 41) float64 from int16 ``samples`` and the
  raw pitch ``f0`` of their normalised signal (0 = unvoiced; see
  :mod:`dagan_jax.audio.pitch`); ``n`` is the shortest of the three
  sequences."""
  return _rows(normalise(samples), f0, sample_rate)


def _rows(signal: np.ndarray, f0: np.ndarray, sample_rate: int) -> np.ndarray:
  """:func:`audio2head_features` of the already normalised ``signal``."""
  a, b = mfcc(signal, sample_rate), logfbank(signal, sample_rate)
  c, voiced = fill_unvoiced(f0)
  n = min(len(a), len(b), len(c))
  return np.concatenate([a[:n], b[:n], c[:n, None], voiced[:n, None]], axis=1)


def frame_blocks(features: np.ndarray, fps: align.Rate = 25) -> np.ndarray:
  """(T, 4, 41) float32: the 4 rows of each video frame. At 25 fps frame
  ``k`` gets rows ``4k..4k+3`` and ``T = n // 4`` (the official code drops
  the rows past the last whole frame); at other rates frame ``k`` starts at
  row ``floor(100 k / fps)`` (:mod:`dagan_jax.audio.align`)."""
  return np.asarray(align.frame_windows(features, fps, ROWS_PER_SECOND,
                                        ROWS_PER_FRAME), np.float32)


def features_from_samples(samples: np.ndarray, *, tracker: str = "auto",
                          where: str = "speech") -> tuple[np.ndarray, str]:
  """``(rows (n, 41), tracker name)`` of 16 kHz int16 ``samples``; a
  :class:`DataError` naming ``where`` for no samples at all (digital
  silence gives the features of silence, :func:`normalise`)."""
  name = pitch.tracker_name(tracker)
  try:
    signal = normalise(samples)
  except DataError as e:
    raise DataError(f"{where}: {e}") from e
  rate = audio_io.SAMPLE_RATE
  return _rows(signal, pitch.f0(signal, rate, name), rate), name


def features_from_file(path, *, tracker: str = "auto",
                       min_seconds: float = 0.04) -> tuple[np.ndarray, str]:
  """``(rows (n, 41), tracker name)`` of the speech in ``path`` (any audio
  or video file, :func:`dagan_jax.audio.io.read_speech`), pitch by
  ``tracker`` (:mod:`dagan_jax.audio.pitch`; the name is what configs and
  checkpoints record)."""
  samples = audio_io.read_speech(path, min_seconds=min_seconds)
  return features_from_samples(samples, tracker=tracker, where=str(path))
