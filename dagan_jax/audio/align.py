"""Which audio rows go with which video frame, at any frame rate.

Audio features come at a fixed rate (Audio2Head's 100 rows/s, IP_LAP's 80
mel frames/s); videos at 25 fps in both papers, but 30, 29.97
(30000/1001) and others occur. Video frame ``k`` starts at ``k / fps``
seconds; its rows start at ``floor(k * rate / fps)`` -- at 25 fps row
``4k`` for Audio2Head and mel frame ``int(3.2 k)`` for IP_LAP, exactly as
their code indexes them -- and a frame is used only while its whole window
of rows exists. Rates are taken as exact fractions (``fractions.Fraction``
of the value given, so 29.97 or ``Fraction(30000, 1001)`` both work) so
that no row is skipped or repeated by float rounding over long clips.
"""

from __future__ import annotations

import fractions
from typing import Union

import numpy as np

Rate = Union[int, float, str, fractions.Fraction]


def exact_rate(rate: Rate) -> fractions.Fraction:
  """``rate`` as a fraction (a float is read from its shortest repr:
  29.97 -> 2997/100)."""
  if isinstance(rate, fractions.Fraction):
    value = rate
  elif isinstance(rate, (float, np.floating)):
    # float() first: numpy 2's repr of its scalars is 'np.float64(25.0)'.
    value = fractions.Fraction(repr(float(rate)))
  elif isinstance(rate, np.integer):
    value = fractions.Fraction(int(rate))
  else:
    value = fractions.Fraction(rate)
  if value <= 0:
    raise ValueError(f"frame rate {rate!r}: must be positive")
  return value


def frame_starts(num_rows: int, fps: Rate, rows_per_second: Rate,
                 rows_per_frame: int) -> np.ndarray:
  """First row of every video frame whose ``rows_per_frame`` rows all exist
  (int64, consecutive frames from 0)."""
  step = exact_rate(rows_per_second) / exact_rate(fps)
  count = 0
  while (count * step).__floor__() + rows_per_frame <= num_rows:
    count += 1
  return np.asarray([(k * step).__floor__() for k in range(count)], np.int64)


def frame_windows(rows: np.ndarray, fps: Rate, rows_per_second: Rate,
                  rows_per_frame: int) -> np.ndarray:
  """(frames, rows_per_frame, ...) : each video frame's window of ``rows``
  (a copy)."""
  starts = frame_starts(len(rows), fps, rows_per_second, rows_per_frame)
  return np.asarray(rows)[starts[:, None] + np.arange(rows_per_frame)[None, :]]


def num_video_frames(num_samples: int, sample_rate: int, fps: Rate) -> int:
  """Whole video frames that ``num_samples`` of audio cover."""
  return int((fractions.Fraction(num_samples, sample_rate)
              * exact_rate(fps)).__floor__())
