"""Reading speech: any audio or video file -> 16 kHz mono 16-bit PCM.

Both speech-driven systems read their audio as 16 kHz mono. Audio2Head's
code converts any input with ``ffmpeg -ac 1 -ar 16000 -acodec pcm_s16le``
and reads the samples as int16; IP_LAP's loads the wav with librosa as
float32 in [-1, 1). :func:`read_speech` decodes with PyAV (FFmpeg's
decoders and its resampler, libswresample, as the ffmpeg command uses),
down-mixes to mono and resamples to the requested rate, and returns the
int16 samples; :func:`to_float` gives IP_LAP's float form (int16 / 32768).
A file that is already 16 kHz mono PCM comes back sample for sample.
(librosa resamples other rates with its own filter; such files give
slightly different samples here.)

Bad input is a :class:`~dagan_jax.errors.DataError` naming the file: a
missing or unreadable file, no audio stream, an undecodable stream, no
samples, or fewer samples than ``min_seconds`` asks for (callers pass one
video frame's duration, the least any of them can use).
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np

from dagan_jax.errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

#: The sampling rate of both systems' audio.
SAMPLE_RATE = 16000


def read_speech(path: PathLike, *, sample_rate: int = SAMPLE_RATE,
                min_seconds: float = 0.0) -> np.ndarray:
  """The first audio stream of ``path`` as mono int16 samples at
  ``sample_rate`` Hz (a 1-d array).

  Raises:
    DataError: naming ``path``, when the file is missing or cannot be
      opened, has no audio stream, cannot be decoded, holds no samples, or
      is shorter than ``min_seconds``.
  """
  import av  # pylint: disable=import-outside-toplevel
  if os.path.isdir(path):
    raise DataError(f"{path}: is a folder (frames have no sound; give the "
                    "audio file, e.g. a sidecar .wav)")
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such audio file")
  try:
    container = av.open(str(path))
  except (av.FFmpegError, OSError, ValueError) as e:
    why = getattr(e, "strerror", None) or str(e)
    raise DataError(f"{path}: cannot open the file as audio or video ({why})"
                    ) from e
  try:
    if not container.streams.audio:
      raise DataError(f"{path}: no audio stream (a video without sound, or "
                      "not a media file)")
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="s16", layout="mono",
                                  rate=int(sample_rate))
    chunks = []
    try:
      for frame in container.decode(stream):
        for out in resampler.resample(frame):
          chunks.append(out.to_ndarray().reshape(-1))
      for out in resampler.resample(None):  # what the resampler still holds
        chunks.append(out.to_ndarray().reshape(-1))
    except (av.FFmpegError, ValueError) as e:
      raise DataError(f"{path}: the audio stream cannot be decoded ({e})") from e
  finally:
    container.close()
  samples = (np.concatenate(chunks) if chunks
             else np.zeros((0,), np.int16)).astype(np.int16, copy=False)
  if samples.size == 0:
    raise DataError(f"{path}: the audio stream holds no samples")
  seconds = samples.size / float(sample_rate)
  if seconds < min_seconds:
    raise DataError(f"{path}: the audio lasts {seconds:.3f} s; at least "
                    f"{min_seconds:.3f} s is needed")
  return samples


def to_float(samples: np.ndarray) -> np.ndarray:
  """int16 PCM -> float32 in [-1, 1) (``samples / 32768``, as librosa and
  scipy read 16-bit wav files)."""
  return (np.asarray(samples, np.int16).astype(np.float32) / np.float32(32768))
