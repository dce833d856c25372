"""The face tools on clip files: a clip's face mesh, and its lip sync.

:mod:`dagan_jax.face` and :mod:`dagan_jax.audio` work on arrays; this is
where they meet the clips of a dataset (any clip kind of
:mod:`dagan_jax.input.media`, with its sound from
:mod:`dagan_jax.audio.sources`), for ``data check``, ``data prepare`` and
the head template.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from dagan_jax.audio import io as audio_io
from dagan_jax.audio import sources, sync
from dagan_jax.errors import DataError
from dagan_jax.face import mesh as mesh_lib
from dagan_jax.input import media


def mesh_clip(path: str | os.PathLike, mesh: mesh_lib.FaceMesh | None = None, *,
              progress: Callable[[int], None] | None = None) -> mesh_lib.MeshResult:
  """The face mesh of every frame of a clip, decoded and meshed a batch at a
  time (:func:`dagan_jax.face.mesh.mesh_frames`)."""
  frames = (f for _, f in media.iter_native_frames(path))
  return mesh_lib.mesh_frames(frames, mesh, progress=progress, where=str(path))


def clip_offset(clip_path: str | os.PathLike, mesh: mesh_lib.FaceMesh | None = None,
                *, max_lag: int = sync.MAX_LAG,
                points: np.ndarray | None = None,
                samples: np.ndarray | None = None) -> sync.SyncEstimate:
  """The audio-visual offset of a clip (:func:`dagan_jax.audio.sync.
  estimate_offset`) from its frames and its sound (its sidecar ``.wav`` or
  its own audio stream).

  ``mesh``: the :class:`~dagan_jax.face.mesh.FaceMesh` to run (a new one
  when None); ``points``: the clip's mesh points when already computed
  (then nothing is meshed); ``samples``: its sound when already decoded
  (16 kHz, :func:`dagan_jax.audio.io.read_speech`). Frames are counted at the clip's frame rate
  (25 fps when it has none).

  Raises:
    DataError: naming the clip when it has no sound, or its sound file
      when that cannot be read.
  """
  source = sources.audio_source(clip_path)
  if source is None:
    raise DataError(f"{clip_path}: no sound to check the lips against (no "
                    f"audio stream and no sidecar "
                    f"{os.path.basename(sources.sidecar_path(clip_path))})")
  _, fps, _ = media.probe_video(clip_path)
  fps = float(fps or sources.DEFAULT_FPS)
  if points is None:
    points = mesh_clip(clip_path, mesh).points
  if samples is None:
    samples = audio_io.read_speech(source, min_seconds=1.0 / fps)
  elif samples.size < audio_io.SAMPLE_RATE / fps:
    raise DataError(f"{source}: {samples.size} samples of sound, shorter than "
                    f"one frame at {fps:g} fps")
  openness = sync.mouth_openness(points)
  energy = sync.speech_energy(samples, openness.size, fps)
  return sync.estimate_offset(openness, energy, max_lag, fps=fps)
