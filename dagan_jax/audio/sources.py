"""Where a talking-face clip's sound is, and whether it fits the picture.

A clip's speech is either a sidecar ``<clip>.wav`` beside it (VoxCeleb2
recuts, HDTF and frame folders: ``id#clip.mp4`` or the folder ``id#clip``
-> ``id#clip.wav``), or the audio stream of the clip's own video file
(``.mp4``/``.mov``/``.mkv``, e.g. LRS2's ``main/<id>/<n>.mp4``). A sidecar
wins when both exist.

:func:`check_clip_audio` is what ``dagan-jax data check --audio`` asks of
every clip: sound that decodes, and audio and video lengths that agree to
within one video frame -- plus one frame of the audio codec, the
granularity at which a container stores compressed sound (AAC: 1024
samples, 64 ms at 16 kHz; real clips routinely end up to that much apart:
on ``../shared/data/av_mini`` the two lengths differ by 22-72 ms).
"""

from __future__ import annotations

import os

import numpy as np

from dagan_jax.audio import io as audio_io
from dagan_jax.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
SIDECAR_EXTENSION = ".wav"
#: Frame rate assumed for clips that carry none (frame folders).
DEFAULT_FPS = 25.0


def sidecar_path(clip_path: str | os.PathLike) -> str:
  """``<clip>.wav`` beside the clip (its video extension, if any, replaced)."""
  path = os.fspath(clip_path).rstrip(os.sep)
  stem, ext = os.path.splitext(path)
  return (stem if ext.lower() in VIDEO_EXTENSIONS else path) + SIDECAR_EXTENSION


def audio_source(clip_path: str | os.PathLike) -> str | None:
  """The file holding the clip's sound: its sidecar if present, else the
  clip itself when it is a video file; None when it can have none (a frame
  folder or an image strip without a sidecar)."""
  sidecar = sidecar_path(clip_path)
  if os.path.isfile(sidecar):
    return sidecar
  path = os.fspath(clip_path)
  if os.path.isfile(path) and os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS:
    return path
  return None


def check_clip_audio(clip_path: str | os.PathLike, num_frames: int,
                     fps: float | None, samples: np.ndarray | None = None) -> str | None:
  """What is wrong with the clip's sound, or None: no sound at all, sound
  that cannot be decoded, or audio and video lengths (``num_frames`` at
  ``fps``, 25 when the clip has no rate) that differ by more than one
  frame. ``samples``: the clip's sound when the caller has already decoded
  it (16 kHz, :func:`dagan_jax.audio.io.read_speech`), so that it is not
  decoded twice."""
  source = audio_source(clip_path)
  if source is None:
    return (f"no sound: no audio stream and no sidecar "
            f"{os.path.basename(sidecar_path(clip_path))}")
  if samples is None:
    try:
      samples = audio_io.read_speech(source)
    except DataError as e:
      return str(e)
  rate = float(fps or DEFAULT_FPS)
  audio_s = samples.size / float(audio_io.SAMPLE_RATE)
  video_s = num_frames / rate
  slack = 1.0 / rate + _codec_frame_seconds(source)
  if abs(audio_s - video_s) > slack:
    return (f"audio lasts {audio_s:.3f} s but the video {video_s:.3f} s "
            f"({num_frames} frames at {rate:g} fps): more than one frame apart")
  return None


def _codec_frame_seconds(path: str) -> float:
  """Duration of one frame of the audio codec of ``path`` (0 for PCM)."""
  import av  # pylint: disable=import-outside-toplevel
  with av.open(path) as container:
    ctx = container.streams.audio[0].codec_context
    size, rate = ctx.frame_size or 0, ctx.sample_rate or 0
  return size / float(rate) if size > 1 and rate else 0.0
