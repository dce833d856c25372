"""LSE-C and LSE-D (Prajwal et al., *A lip sync expert is all you need*,
ACM MM 2020) with SyncNet's released weights.

``scorer = load('syncnet_v2.model')`` converts the official weights
(:mod:`dagan_jax.convert.syncnet`; torch is needed for that step only);
``scorer.lse(frames, samples, boxes=...)`` scores one video with its sound
as joonson/syncnet_python's ``SyncNetInstance.evaluate`` does, which is
what Wav2Lip's ``evaluation/scores_LSE`` reports:

* **Video**: 224x224 face crops at 25 fps, BGR in [0, 255]; a window is 5
  consecutive crops. **Audio**: 16 kHz samples as int16 values (float
  input in [-1, 1] is multiplied by 32768), 13 MFCCs per 10 ms row
  (python_speech_features' defaults, :func:`dagan_jax.audio.
  speech_features.mfcc`); window ``v`` is rows ``4v .. 4v + 19``.
* ``L = min(frames, samples // 640)``; windows ``v = 0 .. L - 6`` (the
  official loop stops one window short of the last full one; kept).
* ``dists[v, m] = ||video[v] - audio_padded[v + m] + 1e-6||`` for
  ``m = 0 .. 2 * vshift`` (``vshift`` 15), the audio embeddings padded with
  ``vshift`` zero vectors at each end (``torch.nn.functional.
  pairwise_distance``); ``mdist = mean over v``.
* **LSE-D** = ``min(mdist)``; **LSE-C** = ``median(mdist) - min(mdist)``
  (torch's median: the lower middle value); **offset** =
  ``vshift - argmin(mdist)`` frames (negative when the sound lags the
  lips).

**Face crops.** The official pipeline finds faces with S3FD, which is not
available here. Given per-frame face boxes (our face mesh's bounding
boxes, :func:`dagan_jax.face.crop.mesh_boxes`), :func:`face_crops` cuts
them as its ``run_pipeline.crop_video`` does (half-size ``s`` = half the
box's longer side, centre and ``s`` median-filtered over 13 frames with
zero padding as ``scipy.signal.medfilt``; rows from ``cy - s`` to
``cy + 1.8 s``, columns ``cx -+ 1.4 s``, outside the frame filled with
110; bilinear resize to 224x224). The mesh's box is not S3FD's, so the
crops differ somewhat: **LSE numbers from here are comparable between
methods cropped the same way (this module), not with published tables.**
The official pipeline also drops face tracks shorter than 100 frames and
round-trips the crops through lossy video files; neither is done here.

Videos at another frame rate are first resampled to 25 fps by nearest
frame (as ``ffmpeg -r 25`` does). Both towers run jitted in fixed-size
batches (one compilation per batch size).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax.errors import ConfigError, DataError

VSHIFT = 15
FPS = 25.0
SAMPLE_RATE = 16000
#: Audio samples per video frame at 25 fps and MFCC rows per frame.
SAMPLES_PER_FRAME = 640
ROWS_PER_FRAME = 4
#: run_pipeline.py: ``--crop_scale``, pad value, median filter length.
CROP_SCALE = 0.4
PAD_VALUE = 110
SMOOTH = 13


def min_frames(vshift: int = VSHIFT) -> int:
  """Fewest frames (with sound) :meth:`SyncNetScorer.lse` accepts: one
  5-frame window per offset, so that every offset compares at least one
  real pair (``vshift + 1`` windows; the official loop uses ``L - 5``)."""
  return vshift + 6


# ---------------------------------------------------------------------------
# Inputs


def _medfilt(x: np.ndarray, k: int) -> np.ndarray:
  """``scipy.signal.medfilt(x, k)``: odd window, zeros beyond the ends."""
  h = k // 2
  padded = np.concatenate([np.zeros(h), x, np.zeros(h)])
  return np.median(np.lib.stride_tricks.sliding_window_view(padded, k), axis=1)


def _fill_boxes(boxes: np.ndarray, where: str) -> np.ndarray:
  """Frames without a box (NaN) take the box interpolated between their
  neighbours, or the nearest one at the ends (the official tracker
  interpolates between detections)."""
  boxes = np.asarray(boxes, np.float64)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise DataError(f"{where}: face boxes must be (T, 4) [x0, y0, x1, y1], "
                    f"got shape {boxes.shape}")
  ok = np.isfinite(boxes).all(axis=1)
  if not ok.any():
    raise DataError(f"{where}: no frame has a face; cannot crop for SyncNet")
  t = np.arange(len(boxes))
  return np.stack([np.interp(t, t[ok], boxes[ok, j]) for j in range(4)], axis=1)


def face_crops(frames: np.ndarray, boxes: np.ndarray, *, where: str = "video"
               ) -> np.ndarray:
  """``(T, 224, 224, 3)`` uint8 crops of ``(T, H, W, 3)`` uint8 frames
  around ``(T, 4)`` face boxes ``[x0, y0, x1, y1]`` (NaN rows: no face),
  cut as the official ``run_pipeline.crop_video`` (module docstring)."""
  import cv2  # pylint: disable=import-outside-toplevel
  frames = np.asarray(frames)
  boxes = _fill_boxes(boxes, where)
  if len(boxes) != len(frames):
    raise DataError(f"{where}: {len(frames)} frames but {len(boxes)} face boxes")
  half = _medfilt(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2,
                  SMOOTH)
  cy = _medfilt((boxes[:, 1] + boxes[:, 3]) / 2, SMOOTH)
  cx = _medfilt((boxes[:, 0] + boxes[:, 2]) / 2, SMOOTH)
  out = np.empty((len(frames), 224, 224, 3), np.uint8)
  cs = CROP_SCALE
  for i, frame in enumerate(frames):
    bs = half[i]
    pad = int(bs * (1 + 2 * cs))
    big = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_VALUE)
    my, mx = cy[i] + pad, cx[i] + pad
    face = big[int(my - bs):int(my + bs * (1 + 2 * cs)),
               int(mx - bs * (1 + cs)):int(mx + bs * (1 + cs))]
    if face.size == 0:
      raise DataError(f"{where}: frame {i}: the face box {boxes[i].tolist()} "
                      "gives an empty crop")
    out[i] = cv2.resize(face, (224, 224))
  return out


def _as_uint8(frames: np.ndarray, where: str) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise DataError(f"{where}: expected (T, H, W, 3) RGB frames, got shape "
                    f"{frames.shape}")
  if frames.dtype == np.uint8:
    return frames
  return np.clip(np.rint(np.asarray(frames, np.float32) * 255.0), 0, 255
                 ).astype(np.uint8)


def resample_to_25(n: int, fps: float) -> np.ndarray:
  """Indices of the frames shown at 25 fps (nearest in time) of ``n``
  frames at ``fps``."""
  m = int(math.ceil(n * FPS / fps - 1e-9))
  return np.minimum(np.floor(np.arange(m) * fps / FPS + 0.5).astype(int), n - 1)


def pcm_samples(samples: Any, where: str) -> np.ndarray:
  """int16-valued float64 samples (float input in [-1, 1] times 32768)."""
  if samples is None:
    raise DataError(f"{where}: no sound (LSE needs the video's speech)")
  x = np.asarray(samples)
  if x.ndim != 1 or x.size == 0:
    raise DataError(f"{where}: no sound: expected a 1-d array of 16 kHz "
                    f"samples, got shape {x.shape}")
  x = x.astype(np.float64) * (1.0 if np.issubdtype(x.dtype, np.integer) else 32768.0)
  if not np.any(x):
    raise DataError(f"{where}: the sound is silent (every sample is 0)")
  return x


def mfcc_windows(samples: np.ndarray, n: int) -> np.ndarray:
  """``(n, 13, 20)`` float32 MFCC windows (coefficients x rows) of int16-
  valued samples: window ``v`` holds rows ``4v .. 4v + 19``."""
  from dagan_jax.audio import speech_features  # pylint: disable=import-outside-toplevel
  rows = speech_features.mfcc(samples, SAMPLE_RATE)
  need = ROWS_PER_FRAME * (n - 1) + 20
  if len(rows) < need:
    raise DataError(f"the sound gives {len(rows)} MFCC rows; {n} windows need {need}")
  index = ROWS_PER_FRAME * np.arange(n)[:, None] + np.arange(20)[None]
  return np.ascontiguousarray(np.transpose(rows[index], (0, 2, 1))).astype(np.float32)


# ---------------------------------------------------------------------------
# Scores


@functools.partial(jax.jit, static_argnames=("vshift",))
def sync_scores(video, audio, vshift: int = VSHIFT) -> dict[str, Any]:
  """The official distance computation (module docstring) on ``(n, D)``
  video and audio embeddings: ``{'dists' (n, 2 vshift + 1), 'mdist',
  'lse_d', 'lse_c', 'offset'}``."""
  n = video.shape[0]
  padded = jnp.pad(audio, ((vshift, vshift), (0, 0)))

  def at(m):  # one offset at a time: memory n x D whatever the offset range
    diff = video - jax.lax.dynamic_slice_in_dim(padded, m, n) + 1e-6
    return jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1))

  dists = jax.lax.map(at, jnp.arange(2 * vshift + 1)).T
  mdist = jnp.mean(dists, axis=0)
  best = jnp.argmin(mdist)
  lse_d = mdist[best]
  median = jnp.sort(mdist)[vshift]  # torch.median: the lower middle value
  return {"dists": dists, "mdist": mdist, "lse_d": lse_d,
          "lse_c": median - lse_d, "offset": vshift - best}


class SyncNetScorer:
  """SyncNet with converted weights: embeddings and LSE (module docstring).

  ``batch_size`` windows go through each compiled call (the last batch
  padded). ``source`` names the weights in messages and reports.
  """

  def __init__(self, variables: Mapping[str, Any], *, batch_size: int = 16,
               vshift: int = VSHIFT, source: str = "syncnet"):
    from dagan_jax import compute  # pylint: disable=import-outside-toplevel
    from dagan_jax.models.syncnet import WINDOW_FRAMES, SyncNet  # pylint: disable=import-outside-toplevel
    if batch_size < 1:
      raise ConfigError(f"SyncNet batch size is {batch_size}; expected >= 1")
    self.module = SyncNet()
    self.variables = jax.device_put(variables)
    self.batch_size = int(batch_size)
    self.vshift = int(vshift)
    self.source = source
    module, k = self.module, WINDOW_FRAMES

    def lips(variables, frames):
      # (B + 4, 224, 224, 3) uint8 RGB -> B windows, BGR as cv2 reads them.
      x = frames[..., ::-1].astype(jnp.float32)
      b = x.shape[0] - (k - 1)
      windows = jnp.stack([x[d:d + b] for d in range(k)], axis=1)
      return module.apply(variables, windows, method="lips")

    self._lips = compute.jit(lips)
    # The plain kernels for the small audio tower: on XLA:CPU the 'cpu' set
    # runs it no faster but compiles it 10x slower (12 s against 1 s,
    # measured on 2 cores); elsewhere 'auto' means 'xla' anyway.
    self._audio = compute.jit(
        lambda variables, mfcc: module.apply(variables, mfcc, method="audio"),
        kernels="xla")

  @property
  def min_frames(self) -> int:
    return min_frames(self.vshift)

  def embed_lips(self, crops: np.ndarray) -> np.ndarray:
    """``(T - 4, 1024)`` embeddings of every 5-frame window of ``(T, 224,
    224, 3)`` uint8 RGB crops."""
    crops = np.asarray(crops, np.uint8)
    n, b = len(crops) - 4, self.batch_size
    if n < 1:
      raise DataError(f"{len(crops)} crops give no 5-frame window")
    out = []
    for i in range(0, n, b):
      chunk = crops[i:i + b + 4]
      if len(chunk) < b + 4:
        chunk = np.concatenate([chunk, np.zeros((b + 4 - len(chunk),) + chunk.shape[1:],
                                                np.uint8)])
      out.append(np.asarray(self._lips(self.variables, chunk)))
    return np.concatenate(out)[:n]

  def embed_audio(self, mfcc: np.ndarray) -> np.ndarray:
    """``(n, 1024)`` embeddings of ``(n, 13, 20)`` MFCC windows."""
    mfcc = np.asarray(mfcc, np.float32)
    n, b = len(mfcc), self.batch_size
    out = []
    for i in range(0, n, b):
      chunk = mfcc[i:i + b]
      if len(chunk) < b:
        chunk = np.concatenate([chunk, np.zeros((b - len(chunk),) + chunk.shape[1:],
                                                np.float32)])
      out.append(np.asarray(self._audio(self.variables, chunk)))
    return np.concatenate(out)[:n]

  def embed(self, frames: np.ndarray, samples: Any, *, fps: float = FPS,
            boxes: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE,
            where: str = "video") -> tuple[np.ndarray, np.ndarray]:
    """The ``(n, 1024)`` video and audio embeddings :meth:`lse` compares
    (same arguments)."""
    if int(sample_rate) != SAMPLE_RATE:
      raise DataError(f"{where}: SyncNet needs 16 kHz sound, got {sample_rate} Hz "
                      "(read it with dagan_jax.audio.io.read_speech)")
    pcm = pcm_samples(samples, where)
    frames = _as_uint8(frames, where)
    if boxes is not None:
      boxes = np.asarray(boxes)
      if len(boxes) != len(frames):
        raise DataError(f"{where}: {len(frames)} frames but {len(boxes)} face boxes")
    if not fps or fps <= 0:
      raise DataError(f"{where}: frame rate {fps} is not positive")
    if abs(float(fps) - FPS) > 1e-3:
      keep = resample_to_25(len(frames), float(fps))
      frames = frames[keep]
      boxes = None if boxes is None else boxes[keep]
    length = min(len(frames), len(pcm) // SAMPLES_PER_FRAME)
    if length < self.min_frames:
      raise DataError(
          f"{where}: {len(frames)} frames at 25 fps with {len(pcm) / SAMPLE_RATE:.2f} s "
          f"of sound give {length} frames with sound; LSE needs at least "
          f"{self.min_frames} (5-frame windows and +-{self.vshift} frame offsets)")
    if boxes is not None:  # boxes smoothed over the whole clip, as the official
      frames = face_crops(frames, boxes, where=where)
    frames = frames[:length - 1]  # windows 0 .. L - 6, as the official loop
    if frames.shape[1:3] != (224, 224):
      import cv2  # pylint: disable=import-outside-toplevel
      crops = np.stack([cv2.resize(f, (224, 224)) for f in frames])
    else:
      crops = frames
    n = length - 5
    video = self.embed_lips(crops)
    audio = self.embed_audio(mfcc_windows(pcm[:length * SAMPLES_PER_FRAME], n))
    return video, audio

  def lse(self, frames: np.ndarray, samples: Any, *, fps: float = FPS,
          boxes: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE,
          where: str = "video") -> dict[str, float]:
    """``{'lse_c', 'lse_d', 'offset'}`` of one video with its sound.

    Args:
      frames: ``(T, H, W, 3)`` RGB, uint8 (or float in [0, 1]): face crops
        (resized to 224x224 if they are not) when ``boxes`` is None, else
        whole frames.
      samples: the sound, 16 kHz mono, int16 (or float in [-1, 1]), starting
        with frame 0.
      fps: the frames' rate (resampled to 25 by nearest frame otherwise).
      boxes: ``(T, 4)`` face boxes ``[x0, y0, x1, y1]`` in pixels (NaN
        where no face), e.g. ``face.crop.mesh_boxes(mesh.points)``; the
        crops are cut by :func:`face_crops`.
      where: names the video in errors.
    Raises:
      DataError: naming ``where``: no sound or silence, not 16 kHz, fewer
        than :attr:`min_frames` frames with sound, no face in any frame.
    """
    video, audio = self.embed(frames, samples, fps=fps, boxes=boxes,
                              sample_rate=sample_rate, where=where)
    s = sync_scores(video, audio, vshift=self.vshift)
    return {"lse_c": float(s["lse_c"]), "lse_d": float(s["lse_d"]),
            "offset": int(s["offset"])}


def load(path: str | os.PathLike, *, batch_size: int = 16,
         vshift: int = VSHIFT) -> SyncNetScorer:
  """A :class:`SyncNetScorer` with the official weights ``path``
  (``syncnet_v2.model``), converted strictly.

  Raises:
    DataError: naming ``path``: missing, unreadable, or torch not installed.
    CheckpointMismatchError: naming ``path`` and every key that does not
      match SyncNet.
  """
  from dagan_jax.convert import syncnet as convert  # pylint: disable=import-outside-toplevel
  from dagan_jax.models.syncnet import abstract_variables  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  variables = convert.convert_state_dict(convert.load_state_dict(path),
                                         abstract_variables(), source=path)
  return SyncNetScorer(variables, batch_size=batch_size, vshift=vshift, source=path)
