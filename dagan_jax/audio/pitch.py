"""Pitch trackers for Audio2Head's features: f0 in Hz every 10 ms, 0 where
unvoiced.

* ``'harvest'``: WORLD's Harvest through pyworld (``pyworld.harvest(x, fs,
  frame_period=10)``, 71-800 Hz), what the official code uses and what
  converted Audio2Head checkpoints expect. pyworld is an optional extra
  (``pip install -e ".[pitch]"``; it builds from source and, at 0.3.5,
  needs ``setuptools<81`` when imported).
* ``'yin'``: ours, when pyworld is not installed: YIN (de Cheveigne &
  Kawahara, JASA 2002) on the same 10 ms grid and f0 range, so that
  features, models and checkpoints work without pyworld. It is not
  Harvest: its f0 and voicing differ frame by frame, so a model trained
  with one tracker should be run with the same one. Every config and
  checkpoint that depends on the features records the tracker's name
  (:func:`tracker_name`).

Both return ``1 + int(len(x) / fs * 100)`` frames, frame ``t`` centred at
``t * 10`` ms, as Harvest does.
"""

from __future__ import annotations

import numpy as np

from dagan_jax.errors import ConfigError

F0_FLOOR = 71.0
F0_CEIL = 800.0
FRAME_PERIOD_MS = 10.0
#: YIN's threshold on the cumulative mean normalised difference.
YIN_THRESHOLD = 0.15
#: Frames quieter than this RMS (of the peak-normalised signal) are unvoiced.
YIN_SILENCE_RMS = 0.01

TRACKERS = ("auto", "harvest", "yin")


def _import_pyworld():
  """pyworld, or None when it is not installed (its import warns that
  pkg_resources is deprecated: silenced, it is pyworld's own business)."""
  import warnings  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    try:
      import pyworld  # pylint: disable=import-outside-toplevel
    except ImportError:
      return None
  return pyworld


def harvest_available() -> bool:
  """Whether pyworld (hence Harvest) can be imported."""
  return _import_pyworld() is not None


def tracker_name(tracker: str = "auto") -> str:
  """'harvest' or 'yin' for a config's ``pitch_tracker`` ('auto': Harvest
  when pyworld is installed)."""
  if tracker not in TRACKERS:
    raise ConfigError(f"pitch tracker {tracker!r}: expected one of "
                      f"{', '.join(TRACKERS)}")
  if tracker == "auto":
    return "harvest" if harvest_available() else "yin"
  if tracker == "harvest" and not harvest_available():
    raise ConfigError("pitch tracker 'harvest' needs pyworld: pip install -e "
                      "\".[pitch]\" (or use 'yin')")
  return tracker


def num_frames(num_samples: int, sample_rate: int) -> int:
  return 1 + int(num_samples / float(sample_rate) * 1000.0 / FRAME_PERIOD_MS)


def f0(signal: np.ndarray, sample_rate: int = 16000,
       tracker: str = "auto") -> np.ndarray:
  """f0 in Hz per 10 ms frame (0 = unvoiced), float64, by ``tracker``."""
  name = tracker_name(tracker)
  x = np.ascontiguousarray(signal, np.float64)
  if name == "harvest":
    out, _ = _import_pyworld().harvest(x, sample_rate, f0_floor=F0_FLOOR,
                             f0_ceil=F0_CEIL, frame_period=FRAME_PERIOD_MS)
    return np.asarray(out, np.float64)
  return yin(x, sample_rate)


def yin(signal: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
  """YIN f0 per 10 ms frame in [71, 800] Hz, 0 where unvoiced.

  Each frame compares a window of one longest period (``fs / 71`` samples,
  centred on the frame time) with itself shifted by every lag up to that
  period: the difference function ``d(tau)`` (from FFT correlations), its
  cumulative mean normalised form ``d'(tau) = d(tau) tau / sum_{j<=tau}
  d(j)``, the first lag from ``fs / 800`` on where ``d'`` dips below 0.15
  (then down to that dip's minimum), refined by a parabola through its
  neighbours. Frames with no such dip, or quieter than
  :data:`YIN_SILENCE_RMS`, are unvoiced.
  """
  x = np.asarray(signal, np.float64)
  n_frames = num_frames(x.size, sample_rate)
  tau_max = int(np.ceil(sample_rate / F0_FLOOR))
  tau_min = max(int(np.floor(sample_rate / F0_CEIL)), 2)
  w = tau_max
  span = w + tau_max
  centres = np.round(np.arange(n_frames) * FRAME_PERIOD_MS / 1000.0
                     * sample_rate).astype(np.int64)
  start = centres - span // 2
  xp = np.pad(x, (span, span))
  frames = xp[(start + span)[:, None] + np.arange(span)[None, :]]  # (F, span)
  head = frames[:, :w]
  # r(tau) = sum_j head[j] frames[j + tau], for tau in [0, tau_max].
  nfft = 1 << int(np.ceil(np.log2(span + w)))
  corr = np.fft.irfft(np.conj(np.fft.rfft(head, nfft)) * np.fft.rfft(frames, nfft),
                      nfft)[:, :tau_max + 1]
  sq = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames ** 2, 1)], 1)
  energy0 = sq[:, w][:, None]                               # sum head^2
  lags = np.arange(tau_max + 1)
  energy_tau = sq[:, lags + w] - sq[:, lags]                # sum frames[tau:tau+w]^2
  d = np.maximum(energy0 + energy_tau - 2.0 * corr, 0.0)
  cum = np.cumsum(d[:, 1:], axis=1)
  cmnd = np.ones_like(d)
  cmnd[:, 1:] = d[:, 1:] * lags[1:] / np.maximum(cum, 1e-12)
  rms = np.sqrt(energy0[:, 0] / w)
  out = np.zeros(n_frames)
  for i in range(n_frames):
    if rms[i] < YIN_SILENCE_RMS:
      continue
    c = cmnd[i]
    below = np.flatnonzero(c[tau_min:tau_max] < YIN_THRESHOLD)
    if below.size == 0:
      continue
    tau = tau_min + int(below[0])
    while tau + 1 < tau_max and c[tau + 1] < c[tau]:
      tau += 1
    a, b, cc = c[tau - 1], c[tau], c[tau + 1]
    denom = a - 2.0 * b + cc
    shift = 0.5 * (a - cc) / denom if denom > 0 else 0.0
    hz = sample_rate / (tau + float(np.clip(shift, -1.0, 1.0)))
    if F0_FLOOR <= hz <= F0_CEIL:
      out[i] = hz
  return out
