"""Grain sources and per-record samplers (importable by spawned workers).

Nothing here imports jax: Grain's worker processes unpickle these objects and
should start quickly.

Records
-------
The Grain source (:class:`GroupSource`) yields *groups*: an int32 array of
clip ids, one group per person when ``id_sampling`` (FOMM draws a person,
then a clip of that person), else one clip per group. A sampler then, using
only the per-record ``numpy`` Generator that Grain derives from the dataset
seed and the record's position:

1. draws a clip of the group uniformly;
2. draws frame indices: pairs as FOMM does (two indices uniformly with
   replacement, sorted: source <= driving before augmentation); depth
   triplets ``(t-1, t, t+1)`` with ``t`` uniform in ``[1, n-2]``;
3. reads and decodes only those frames (a :class:`FrameReader`), checking
   every frame: 8-bit, 3 channels, ``dataset_params.frame_shape`` in size
   (or resized when ``resize_frames``);
4. augments them alike (:class:`~dagan_jax.input.augment.Augmenter`);
5. returns float32 frames in [0, 1] and ``skipped``.

Bad clips at read time
----------------------
A frame that fails to decode or check raises :class:`DataError` naming the
file. With ``skip_bad`` the sampler logs a warning (once per clip and
process), counts it in the record's ``skipped`` and draws another clip (an
untried clip of the same group first, then any clip of this host's shard), up
to ``max_skips`` times in a row before giving up with an error that names the
last file. The draws stay deterministic: they use the same per-record rng.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Protocol, Sequence

import grain
import numpy as np

from dagan_jax.errors import DataError
from dagan_jax.input import media
from dagan_jax.input.augment import Augmenter
from dagan_jax.input.clips import ClipInfo

log = logging.getLogger("dagan_jax.input")


class FrameReader(Protocol):
  """Reads checked uint8 RGB frames ``(H, W, 3)`` of a clip by index."""

  def read(self, clip_id: int, indices: Sequence[int]) -> list[np.ndarray]:
    ...

  def describe(self, clip_id: int) -> str:
    ...


def check_frame(frame: np.ndarray, where: str, frame_hw: Sequence[int] | None,
                resize: bool = False) -> np.ndarray:
  """``frame`` as ``(H, W, 3)`` uint8 of size ``frame_hw``, or DataError.

  Never converts channels or bit depth; resizes (area for shrinking, cubic
  for enlarging) only when ``resize`` is set.
  """
  if frame.dtype != np.uint8:
    bits = "16-bit" if frame.dtype == np.uint16 else str(frame.dtype)
    raise DataError(f"{where}: {bits} pixels; expected 8-bit RGB")
  if frame.ndim != 3 or frame.shape[2] != 3:
    ch = 1 if frame.ndim == 2 else frame.shape[2]
    raise DataError(f"{where}: {ch} channel{'s' if ch != 1 else ''}; expected "
                    f"3 (RGB)")
  if frame_hw is not None and frame.shape[:2] != tuple(frame_hw):
    if not resize:
      raise DataError(
          f"{where}: frame is {frame.shape[0]}x{frame.shape[1]}; "
          f"dataset_params.frame_shape asks for {frame_hw[0]}x{frame_hw[1]}")
    import cv2  # pylint: disable=import-outside-toplevel
    shrink = frame.shape[0] * frame.shape[1] > frame_hw[0] * frame_hw[1]
    frame = cv2.resize(frame, (int(frame_hw[1]), int(frame_hw[0])),
                       interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
  return frame


class FileFrameReader:
  """Reads frames of the clips of a scanned split (files and folders)."""

  def __init__(self, split_dir: str | os.PathLike, clips: Sequence[ClipInfo],
               frame_hw: Sequence[int] | None, *, resize: bool = False,
               frame_width: int | None = None):
    self.split_dir = str(split_dir)
    self.clips = list(clips)
    self.frame_hw = tuple(frame_hw) if frame_hw is not None else None
    self.resize = resize
    self.frame_width = frame_width

  def __repr__(self) -> str:
    return (f"FileFrameReader({self.split_dir!r}, clips={len(self.clips)}, "
            f"frame_hw={self.frame_hw}, resize={self.resize})")

  def describe(self, clip_id: int) -> str:
    return os.path.join(self.split_dir, self.clips[clip_id].name)

  def read(self, clip_id: int, indices: Sequence[int]) -> list[np.ndarray]:
    clip = self.clips[clip_id]
    path = self.describe(clip_id)
    for i in indices:
      if not 0 <= i < clip.num_frames:
        raise DataError(f"{path}: frame {i} asked for; the clip has "
                        f"{clip.num_frames} frames")
    if clip.kind == "folder":
      names = media.list_frame_files(path)
      if len(names) != clip.num_frames:
        raise DataError(f"{path}: has {len(names)} frames now, {clip.num_frames}"
                        f" when indexed (clip changed during the run?)")
      cache = {}
      for i in set(indices):
        f = os.path.join(path, names[i])
        cache[i] = check_frame(media.read_image_native(f), f, self.frame_hw,
                               self.resize)
      return [cache[i] for i in indices]
    frames = media.read_native_frames(path, indices, kind=clip.kind,
                                      frame_width=self.frame_width)
    return [check_frame(f, f"{path} frame {i}", self.frame_hw, self.resize)
            for i, f in zip(indices, frames)]


class GroupSource:
  """Grain random-access source of clip-id groups (see module docstring)."""

  def __init__(self, groups: Sequence[Sequence[int]], names: Sequence[str],
               where: str):
    self._groups = [np.asarray(g, np.int32) for g in groups]
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]
    self._repr = (f"GroupSource({where!r}, groups={len(self._groups)}, "
                  f"clips={len(names)}, names_sha1={digest})")

  def __len__(self) -> int:
    return len(self._groups)

  def __getitem__(self, index: int) -> np.ndarray:
    return self._groups[index]

  def __repr__(self) -> str:
    return self._repr


_warned: set[str] = set()


class _ClipSampler(grain.transforms.RandomMap):
  """Shared draw-read-retry logic of the samplers."""

  def __init__(self, reader: FrameReader, num_frames: Sequence[int],
               fallback: Sequence[int], augmenter: Augmenter | None, *,
               skip_bad: bool = False, max_skips: int = 16):
    self.reader = reader
    self.num_frames = np.asarray(num_frames, np.int64)
    self.fallback = np.asarray(fallback, np.int32)
    self.augmenter = augmenter
    self.skip_bad = skip_bad
    self.max_skips = max_skips

  def _indices(self, n: int, rng: np.random.Generator) -> list[int]:
    raise NotImplementedError

  def _read(self, clip_ids: np.ndarray, rng: np.random.Generator
            ) -> tuple[list[np.ndarray], int, int]:
    """``(frames, clip_id, skipped)`` for one record."""
    candidates = list(int(c) for c in clip_ids)
    tried: set[int] = set()
    skipped = 0
    while True:
      cid = candidates[int(rng.integers(len(candidates)))]
      idx = self._indices(int(self.num_frames[cid]), rng)
      try:
        return self.reader.read(cid, idx), cid, skipped
      except DataError as e:
        if not self.skip_bad:
          raise
        skipped += 1
        tried.add(cid)
        where = self.reader.describe(cid)
        if where not in _warned:
          _warned.add(where)
          log.warning("skipping bad clip (skip_bad): %s", e)
        if skipped > self.max_skips:
          raise DataError(
              f"{skipped} bad clips in a row while making one record (the "
              f"dataset may be mostly unreadable); last: {e}") from e
        candidates = [c for c in candidates if c not in tried]
        if not candidates:
          candidates = [int(c) for c in self.fallback if int(c) not in tried]
        if not candidates:
          raise DataError(f"every clip of this shard failed; last: {e}") from e

  def _augment(self, frames: list[np.ndarray], rng: np.random.Generator
               ) -> list[np.ndarray]:
    return self.augmenter(frames, rng) if self.augmenter is not None else frames


def to_float(frames: Sequence[np.ndarray]) -> np.ndarray:
  """uint8 frames -> stacked float32 in [0, 1]."""
  return np.stack(frames).astype(np.float32) * np.float32(1.0 / 255.0)


class PairSampler(_ClipSampler):
  """Group -> ``{'source', 'driving': (H, W, 3) float32, 'skipped': int32}``."""

  def _indices(self, n: int, rng: np.random.Generator) -> list[int]:
    return sorted(int(i) for i in rng.choice(n, size=2, replace=True))

  def random_map(self, element: np.ndarray, rng: np.random.Generator) -> dict:
    frames, _, skipped = self._read(element, rng)
    frames = self._augment(frames, rng)
    both = to_float(frames)
    return {"source": both[0], "driving": both[1],
            "skipped": np.int32(skipped)}


class TripletSampler(_ClipSampler):
  """Group -> ``{'frames': (3, H, W, 3), 'frames_aug': (3, H, W, 3),
  'skipped': int32}``: frames ``(t-1, t, t+1)``.

  ``frames`` gets the flips of ``flip_param``; ``frames_aug`` is ``frames``
  colour-jittered (``jitter_param``) with probability ``jitter_prob`` (else
  equal to ``frames``), as the face-depth network's training (monodepth2)
  feeds jittered frames to the networks and plain frames to the photometric
  loss.
  """

  def __init__(self, *args, jitter_prob: float = 0.5, **kwargs):
    super().__init__(*args, **kwargs)
    self.jitter_prob = float(jitter_prob)

  def _indices(self, n: int, rng: np.random.Generator) -> list[int]:
    t = int(rng.integers(1, n - 1))
    return [t - 1, t, t + 1]

  def random_map(self, element: np.ndarray, rng: np.random.Generator) -> dict:
    frames, _, skipped = self._read(element, rng)
    aug = frames
    if self.augmenter is not None:
      p = self.augmenter.draw(rng)
      jitter, p["jitter"] = p["jitter"], []
      frames = Augmenter.apply(frames, p)
      aug = frames
      if jitter and rng.random() < self.jitter_prob:
        aug = Augmenter.apply(frames, {"time_flip": False,
                                       "horizontal_flip": False,
                                       "jitter": jitter})
    return {"frames": to_float(frames), "frames_aug": to_float(aug),
            "skipped": np.int32(skipped)}
