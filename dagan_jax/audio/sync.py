"""Audio-visual offset of a talking-face clip: does the sound fit the lips?

A clip whose sound is shifted against its picture (a bad cut, a wrong
container delay, audio re-encoded with its priming samples kept) teaches a
speech-driven model the wrong mouth for every sound. ``dagan-jax data check
--audio`` estimates each clip's offset
(:func:`dagan_jax.input.clip_faces.clip_offset`) and names
the clips for which :func:`offset_problem` finds it large.

The estimate is the lag that best lines up two per-frame signals:

* :func:`mouth_openness`: the inner-lip gap of the 468-point face mesh over
  the inter-ocular distance (so the scale of the face and the camera
  distance drop out; the eyes do not move with the mouth);
* :func:`speech_energy`: the log RMS of the speech in each video frame's
  exact time window.

Talking opens the mouth and makes sound, so the two rise and fall together,
but only roughly: the mouth also opens to breathe in before a phrase, and
closes for /b/, /p/, /m/ while voicing goes on. Their *slow* course (speech
vs pause) is therefore a poor clock, and the levels of long silences are
noise. :func:`estimate_offset` correlates their *changes* (central frame
differences) at every lag of a window instead: opening and closing the
mouth move in step with the rise and fall of the sound to within a frame,
which gives a narrow peak at the true lag.

Sign convention: a positive offset means the **sound comes later than the
picture** (``offset`` frames of delay on the audio); shifting a clip's audio
``k`` frames later adds ``k`` to its offset.

The confidence says how clearly the peak stands out of what two unrelated
signals would give, in units of the spread of a correlation between
unrelated signals of that length and smoothness (Bartlett's formula), so it
is comparable across clips of any length. Silence, a clip without a face
or with too few frames give 0; sound unrelated to the lips about 2, rarely
over 4 (see :data:`MIN_CONFIDENCE`). A clearly speaking face of 10 s or
more often reaches 5-8, but a quiet speaker, a turned head or a short clip
(a 3 s GRID sentence) stays below 4 whatever its offset: too few telling
frames to be sure of anything, which is the honest answer -- such clips
are not flagged.
"""

from __future__ import annotations

import fractions
import math
from typing import NamedTuple

import numpy as np

from dagan_jax.audio import align
from dagan_jax.audio import io as audio_io
from dagan_jax.audio import sources
from dagan_jax.errors import DataError

# MediaPipe 468-point indices: three pairs of inner-lip points (upper,
# lower) across the mouth -- the centre pair alone misses a mouth that
# opens on one side -- and the outer eye corners as the face's scale.
LIP_PAIRS = ((13, 14), (82, 87), (312, 317))
EYE_CORNERS = (33, 263)

#: Lags tried either way, in frames: 15 frames is 0.6 s at 25 fps, beyond
#: any offset that is not simply a different recording.
MAX_LAG = 15

#: Least number of frames (with a face, at a given lag) to compute a
#: correlation from: one second at 25 fps. Below that a correlation says
#: nothing and the lag gets no score.
MIN_FRAMES = 25

#: Lags within this many frames of the peak are part of the peak (the
#: signals are smooth over a couple of frames, so the neighbours of the
#: true lag score high too) and are left out of what the peak is compared
#: with.
PEAK_HALF_WIDTH = 2

#: Frames more than 50 dB under the clip's loudest frame are silence: their
#: level wanders with hiss, dither and codec noise, not with the mouth, so
#: :func:`estimate_offset` raises them to that floor (speech itself spans
#: about 30-40 dB between loud vowels and soft consonants).
SILENCE_DB = 50.0

#: RMS below which a frame counts as digital silence (-100 dBFS, under a
#: 16-bit file's quietest non-zero sample at -90 dBFS): keeps the log finite.
ENERGY_FLOOR = 1e-5

#: Confidence from which an offset counts as established. Under the null
#: (sound unrelated to the lips) each lag's score is about normal with the
#: spread the confidence is measured in, and the peak is the best of
#: ``2 * MAX_LAG + 1 = 31`` lags: a one-sided tail of 0.001 / 31 (a chance
#: of 1 in 1000 per clip that noise alone reaches it, Bonferroni over the
#: lags) lies at 3.99 spreads. So 4 -- a data check over thousands of clips
#: should name a few clips by chance, not dozens. (Bartlett's spread is an
#: approximation: random smooth signals reach 4 about 3 times in 1000.)
MIN_CONFIDENCE = 4.0

#: Largest offset not reported, in ms. ITU-R BT.1359 finds that viewers
#: detect sound 45 ms early or 125 ms late and accept it up to 90 ms early
#: or 185 ms late; at 25 fps a frame is 40 ms and the estimate is good to
#: about a frame, and a speaker's mouth often moves a frame or two before
#: the sound it shapes. So offsets within about +-2 frames are normal, 4
#: frames (160 ms) is marginal, and anything beyond the acceptable 185 ms
#: -- 5 frames and more at 25 fps, 6 at 30 -- is a clip to look at; 10
#: frames (400 ms) is plainly wrong.
MAX_OFFSET_MS = 185.0


class SyncEstimate(NamedTuple):
  """A clip's estimated audio-visual offset.

  ``offset``: frames by which the sound comes later than the picture
  (negative: earlier); ``confidence``: how clearly the best lag stands out
  (0 where nothing could be estimated; see the module docstring);
  ``lags`` (2L+1,) int the lags tried, ``scores`` (2L+1,) float their
  correlations (NaN where too few frames overlap or a signal is
  constant); ``fps`` the frame rate the offset is counted at.
  """
  offset: int
  confidence: float
  lags: np.ndarray
  scores: np.ndarray
  fps: float = sources.DEFAULT_FPS

  @property
  def offset_ms(self) -> float:
    """The offset in milliseconds."""
    return self.offset * 1000.0 / float(self.fps)


def mouth_openness(points: np.ndarray) -> np.ndarray:
  """(T,) inner-lip gap over the inter-ocular distance of each frame's mesh.

  ``points``: (T, 468, 2 or 3) mesh points (:class:`~dagan_jax.face.mesh.
  MeshResult` ``points``). Distances use every coordinate given: the mesh's
  ``z`` is in pixels too, and with it a turned head does not shrink the
  distance between the eyes. NaN where a frame has no face (NaN points) or
  a degenerate one.
  """
  p = np.asarray(points, np.float64)
  if p.ndim != 3 or p.shape[1] < 468 or p.shape[2] not in (2, 3):
    raise DataError(f"mouth_openness: expected mesh points (T, 468, 2 or 3), "
                    f"got shape {p.shape}")
  gap = np.mean([np.linalg.norm(p[:, a] - p[:, b], axis=-1)
                 for a, b in LIP_PAIRS], axis=0)
  eyes = np.linalg.norm(p[:, EYE_CORNERS[0]] - p[:, EYE_CORNERS[1]], axis=-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    out = gap / eyes
  out[~np.isfinite(out)] = np.nan
  return out


def _window_bounds(num_frames: int, fps, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  """First and one-past-last sample of each video frame: frame ``k`` covers
  ``[k / fps, (k + 1) / fps)`` seconds, rounded down to samples with the
  rate as an exact fraction, so that windows tile the sound without a
  sample lost or counted twice however long the clip (29.97 fps too)."""
  step = fractions.Fraction(int(sample_rate)) / align.exact_rate(fps)
  edges = (np.arange(num_frames + 1, dtype=np.int64) * step.numerator
           ) // step.denominator
  return edges[:-1], edges[1:]


def speech_energy(samples: np.ndarray, num_frames: int, fps,
                  sample_rate: int = audio_io.SAMPLE_RATE) -> np.ndarray:
  """(num_frames,) natural log of the RMS of the speech in each video
  frame's time window (see :func:`_window_bounds`).

  ``samples``: mono int16 PCM (as :func:`~dagan_jax.audio.io.read_speech`
  gives, scaled to [-1, 1)) or float samples in [-1, 1]. A window partly
  past the end of the sound uses what there is; one wholly past it is NaN
  (the sound of AAC clips often ends a frame or two before the picture).
  Digital silence is ``log(ENERGY_FLOOR)``, not -inf.
  """
  x = np.asarray(samples)
  if x.ndim != 1:
    raise DataError(f"speech_energy: expected mono samples (N,), got shape "
                    f"{x.shape}")
  x = audio_io.to_float(x) if x.dtype == np.int16 else x.astype(np.float64)
  start, stop = _window_bounds(int(num_frames), fps, sample_rate)
  start, stop = np.minimum(start, x.size), np.minimum(stop, x.size)
  # Window sums from one cumulative sum of squares (float64: exact enough
  # for hours of 16-bit sound).
  cum = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
  count = stop - start
  out = np.full(int(num_frames), np.nan)
  has = count > 0
  mean_sq = (cum[stop[has]] - cum[start[has]]) / count[has]
  out[has] = np.log(np.maximum(np.sqrt(np.maximum(mean_sq, 0.0)), ENERGY_FLOOR))
  return out


def _changes(x: np.ndarray) -> np.ndarray:
  """Central difference ``(x[t+1] - x[t-1]) / 2``; NaN at both ends and
  next to a missing frame. The slow course of both signals (pauses, a
  breath before a phrase, the overall loudness) carries little timing, and
  the one-frame difference alone is dominated by frame-to-frame jitter of
  the mesh; the central difference keeps the movements that last a few
  frames, the pace of syllables."""
  out = np.full(x.shape, np.nan)
  if x.size >= 3:
    out[1:-1] = (x[2:] - x[:-2]) / 2.0
  return out


def _lag_pair(a: np.ndarray, b: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
  """``a[t]`` and ``b[t + lag]`` over every ``t`` where both exist."""
  n = a.size
  if lag >= 0:
    return a[:n - lag], b[lag:]
  return a[-lag:], b[:n + lag]


def _autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
  """Autocorrelation of ``x`` (mean removed) at lags 0..max_lag over the
  pairs of finite values; 0 where a lag has no pairs."""
  x = x - np.nanmean(x)
  ok = np.isfinite(x)
  x = np.where(ok, x, 0.0)
  power = float(np.sum(x * x))
  out = np.zeros(max_lag + 1)
  if power <= 0:
    return out
  for k in range(min(max_lag, x.size - 1) + 1):
    out[k] = float(np.sum(x[:x.size - k] * x[k:])) / power
  return out


def _null_spread(a: np.ndarray, b: np.ndarray, n: int, max_lag: int) -> float:
  """Standard deviation of the correlation of ``n`` frames of two
  *unrelated* signals with the autocorrelations of ``a`` and ``b``
  (Bartlett: ``var r = sum_k rho_a(k) rho_b(k) / n``). Smooth signals have
  fewer independent frames than frames, and their chance correlations are
  wider; the sum is kept at least 1 (never more independent frames than
  frames), so a confidence is never inflated by it."""
  ra, rb = _autocorrelation(a, max_lag), _autocorrelation(b, max_lag)
  factor = ra[0] * rb[0] + 2.0 * float(np.sum(ra[1:] * rb[1:]))
  return math.sqrt(max(factor, 1.0) / n)


def estimate_offset(openness: np.ndarray, energy: np.ndarray,
                    max_lag: int = MAX_LAG, *,
                    fps: float = sources.DEFAULT_FPS) -> SyncEstimate:
  """The lag in ``[-max_lag, max_lag]`` frames at which the changes of
  ``openness`` and ``energy`` (one value per video frame each) correlate
  best, and how confident that is.

  ``score[lag]`` is the Pearson correlation of ``openness[t]`` with
  ``energy[t + lag]`` over the frames where both exist (NaN openness:
  frames without a face; frames that a lag moves off either end are not
  used), so a positive offset means the sound comes later than the
  picture. The confidence is the peak's height above the median score of
  the lags outside the peak (more than :data:`PEAK_HALF_WIDTH` away), in
  units of the spread of a correlation between unrelated signals
  (:func:`_null_spread`).

  Never raises on degenerate input: too few frames with a face, constant
  (silent) sound, or signals of different lengths cut to the shorter, give
  offset 0 with confidence 0 or a low one.
  """
  max_lag = int(max_lag)
  if max_lag < 0:
    raise ValueError(f"max_lag is {max_lag}; expected >= 0")
  o = np.asarray(openness, np.float64).reshape(-1)
  e = np.asarray(energy, np.float64).reshape(-1)
  n = min(o.size, e.size)
  o, e = o[:n].copy(), e[:n].copy()
  o[~np.isfinite(o)] = np.nan
  e[~np.isfinite(e)] = np.nan
  if np.isfinite(e).any():
    e = np.maximum(e, np.nanmax(e) - SILENCE_DB / 20.0 * math.log(10.0))
  do, de = _changes(o), _changes(e)
  lags = np.arange(-max_lag, max_lag + 1)
  scores = np.full(lags.size, np.nan)
  counts = np.zeros(lags.size, np.int64)
  for i, lag in enumerate(lags):
    if abs(lag) >= n:
      continue
    a, b = _lag_pair(do, de, int(lag))
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < MIN_FRAMES:
      continue
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    denom = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    if denom > 0:   # zero: a constant signal (silence, a frozen face)
      scores[i] = float(np.sum(a * b)) / denom
      counts[i] = int(ok.sum())
  if not np.isfinite(scores).any():
    return SyncEstimate(0, 0.0, lags, scores, float(fps))
  best = int(np.nanargmax(scores))
  others = scores[(np.abs(lags - lags[best]) > PEAK_HALF_WIDTH)
                  & np.isfinite(scores)]
  if others.size == 0:   # nothing to compare the peak with
    return SyncEstimate(int(lags[best]), 0.0, lags, scores, float(fps))
  spread = _null_spread(do, de, int(counts[best]), max_lag)
  confidence = max(0.0, (scores[best] - float(np.median(others))) / spread)
  return SyncEstimate(int(lags[best]), float(confidence), lags, scores,
                      float(fps))


def offset_problem(estimate: SyncEstimate,
                   max_offset_ms: float = MAX_OFFSET_MS,
                   min_confidence: float = MIN_CONFIDENCE) -> str | None:
  """What ``data check`` says of a clip whose sound is confidently more
  than ``max_offset_ms`` off its picture; None when the offset is within
  it or not confident (an unsure estimate is no evidence of a problem)."""
  if estimate.confidence < min_confidence:
    return None
  if abs(estimate.offset_ms) <= max_offset_ms:
    return None
  side = "later" if estimate.offset > 0 else "earlier"
  return (f"sound and picture out of sync: the sound comes "
          f"{abs(estimate.offset)} frames ({abs(estimate.offset_ms):.0f} ms) "
          f"{side} than the lips (offset {estimate.offset:+d} frames at "
          f"{estimate.fps:g} fps, confidence {estimate.confidence:.1f}; more "
          f"than {max_offset_ms:g} ms is noticeable)")
