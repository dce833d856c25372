"""Grain pipeline of audio-visual windows for the speech-driven systems.

Audio2Head and IP_LAP train on windows of ``T`` consecutive video frames
with the speech features of those frames. Computing the features (and face
meshes, head poses, crop boxes) per record would cost far more than decoding
the frames, so ``dagan-jax data prepare`` computes them once per clip::

  <prepared_dir>/manifest.json             {"format": 1, ...}
  <prepared_dir>/<split>/<clip name>.npz   one file per clip of the index

and this pipeline reads them beside the clips' frames::

  grain.MapDataset.source(GroupSource)          # persons (id_sampling) or clips
    [process_index::process_count]              # this host's disjoint shard
    .seed(host_seed).shuffle()                  # one pass over the groups
    .repeat(num_epochs)                         # None: endless, reshuffled
    .random_map(AVWindowSampler)                # clip, start, frames, arrays
    .batch(batch_size, drop_remainder=True)     # (make_av_window_dataset)
    .to_iter_dataset(...) / .mp_prefetch(...)   # as dagan_jax.input.pipeline

Records (``build_av_window_dataset``; ``make_av_window_dataset`` stacks
``batch_size`` of them on a leading axis)::

  frames      (T, H, W, 3) float32 in [0, 1]   frames start .. start+T-1
  source      (H, W, 3)    float32 in [0, 1]   one random frame of the clip
  a2h_audio   (T, 4, 41)   float32   Audio2Head rows of each frame
  mel         (T, 80, 16)  float32   IP_LAP mel chunk of each frame
  pose        (T, 6)       float32   head pose (axis-angle, translation)
  face_found  (T,)         bool
  kp_value    (T, K, 2)    float32   only when the split's files have them
  kp_jacobian (T, K, 2, 2) float32   (all or none of a split's clips)
  mesh        (T, 468, 3)  float32   only with ``with_mesh``; in the clip's
                                     own pixels (map with ``crop_box``)
  crop_box    (3,)         float32   the clip's ``[x0, y0, side]``
  start, clip, skipped     ()  int32 first frame, clip id (index into
                                     ``open_av_split(...).clips``), bad
                                     clips skipped to make the record

* ``crop`` (default): the clip's one square ``crop_box`` (in the clip's
  pixels, rounded to whole pixels, halves up) is cut from every frame,
  zeros where it leaves the frame, and resized to ``frame_shape``'s
  ``(H, W)`` (cv2: area when shrinking, bilinear otherwise). Frames are
  then read at their own size whatever ``frame_shape`` and
  ``resize_frames`` say. Without ``crop`` frames are read as
  :func:`~dagan_jax.input.pipeline.open_split`'s reader gives them
  (``frame_shape``, or resized with ``resize_frames``).
* The start is uniform over the frames where every array has ``T`` rows:
  the audio of a clip often ends a frame or a few before its video (mel
  chunks need 16 steps), so the usable length is the shortest of the
  video, its Audio2Head blocks and its mel chunks. A clip with fewer than
  ``T`` usable frames is bad.
* Hosts, seeds, determinism, iterator state and worker processes are as in
  :mod:`dagan_jax.input.pipeline`: the stream depends only on the data, the
  parameters, ``seed`` and the host. :class:`AVWindowSampler` lives here and
  this module does not import jax (spawned Grain workers unpickle it).
* Each sampler keeps the arrays of its last few clips (``cache_size``):
  an npz cannot be memory-mapped, and a clip is typically drawn again soon
  when a split has few clips, so this saves re-reading and re-cutting audio.

Bad input: a ``prepared_dir`` without ``manifest.json`` or of another
``format``, and clips of the index without an npz, are errors when the
dataset is made (with ``skip_bad`` clips without an npz are left out with a
logged warning). An npz that is unreadable, lacks arrays, has arrays of the
wrong shape, was prepared for another frame count than the clip has now
(stale), disagrees with the split on the keypoint arrays, or gives fewer
than ``T`` usable frames is found when a record draws it: an error naming
the file, or with ``skip_bad`` skipped and counted in ``skipped``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import zipfile
import zlib
from typing import Any, Sequence

import grain
import numpy as np

from dagan_jax.audio.mel import mel_chunks
from dagan_jax.audio.speech_features import NUM_FEATURES, frame_blocks
from dagan_jax.errors import ConfigError, DataError
from dagan_jax.face import crop as face_crop
from dagan_jax.input import clips as clips_lib
from dagan_jax.input import prepare
from dagan_jax.input.pipeline import (_finish, _host, frame_shape_of,
                                      host_seed, open_split, param)
from dagan_jax.input.samplers import (FileFrameReader, FrameReader,
                                      GroupSource, to_float)

log = logging.getLogger("dagan_jax.input")

#: The ``format`` of ``manifest.json`` this module reads.
MESH_POINTS = 468
MEL_BANDS = 80
#: Arrays every prepared npz holds (``mesh`` too, read only ``with_mesh``).
REQUIRED_KEYS = ("num_frames", "fps", "a2h_features", "mel", "face_found",
                 "crop_box", "pose")
KP_KEYS = ("kp_value", "kp_jacobian")

_PREPARE_HINT = prepare.PREPARE_HINT


# --------------------------------------------------------------------------
# Prepared arrays of one clip
# --------------------------------------------------------------------------


def _shape_problem(arr: np.ndarray, shape: Sequence[int | None]) -> bool:
  return arr.ndim != len(shape) or any(
      s is not None and a != s for a, s in zip(arr.shape, shape))


def load_clip_arrays(path: str, clip_path: str, num_frames: int, *,
                     has_kp: bool, with_mesh: bool,
                     reference: str = "") -> dict[str, Any]:
  """The checked arrays of one prepared clip, audio cut per video frame.

  ``clip_path``/``num_frames``: the clip as the index has it now;
  ``has_kp``: whether the split's files have keypoints (``reference``: the
  file that decided it, for messages). Returns ``a2h`` (n, 4, 41), ``mel``
  (n, 80, 16), ``pose``, ``face_found``, ``crop_box``, ``usable`` (frames
  where every array has a row) and ``mesh``/``kp_*`` when asked for / had.
  """
  try:
    with np.load(path, allow_pickle=False) as z:
      files = set(z.files)
      missing = [k for k in REQUIRED_KEYS + (("mesh",) if with_mesh else ())
                 if k not in files]
      if missing:
        raise DataError(f"{path}: lacks {', '.join(missing)}; {_PREPARE_HINT}"
                        f" again")
      kp = [k for k in KP_KEYS if k in files]
      if len(kp) == 1:
        raise DataError(f"{path}: has {kp[0]} without "
                        f"{[k for k in KP_KEYS if k != kp[0]][0]}; "
                        f"{_PREPARE_HINT} again")
      if bool(kp) != has_kp:
        raise DataError(
            f"{path} {'has' if kp else 'lacks'} kp_value/kp_jacobian but "
            f"{reference or 'the split'} {'has' if has_kp else 'lacks'} them: "
            f"every clip of a split must agree; {_PREPARE_HINT} again with "
            f"the same options")
      keys = REQUIRED_KEYS + (("mesh",) if with_mesh else ()) + tuple(kp)
      raw = {k: z[k] for k in keys}
  except FileNotFoundError:
    raise DataError(f"{path} not found (prepared arrays of {clip_path}); "
                    f"{_PREPARE_HINT}") from None
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise DataError(f"{path}: cannot read it ({e}); {_PREPARE_HINT} "
                    f"again") from e

  def bad(key: str, expected: str) -> DataError:
    return DataError(f"{path}: {key} has shape {list(raw[key].shape)} "
                     f"{raw[key].dtype}; expected {expected}; {_PREPARE_HINT}"
                     f" again")

  nf = raw["num_frames"]
  if nf.ndim != 0 or nf.dtype.kind not in "iu":
    raise bad("num_frames", "an integer scalar")
  if int(nf) != num_frames:
    raise DataError(
        f"{path} was prepared for {int(nf)} frames but {clip_path} has "
        f"{num_frames} now (stale preparation: the clip changed); "
        f"{_PREPARE_HINT} again")
  fps = raw["fps"]
  if (fps.ndim != 0 or fps.dtype.kind not in "iuf"
      or not (np.isfinite(fps) and fps > 0)):
    raise bad("fps", "a positive scalar")
  n = num_frames
  shapes: dict[str, tuple[int | None, ...]] = {
      "a2h_features": (None, NUM_FEATURES), "mel": (MEL_BANDS, None),
      "face_found": (n,), "crop_box": (3,), "pose": (n, 6)}
  if with_mesh:
    shapes["mesh"] = (n, MESH_POINTS, 3)
  if has_kp:
    k = raw["kp_value"].shape[1] if raw["kp_value"].ndim == 3 else -1
    shapes["kp_value"] = (n, k, 2)
    shapes["kp_jacobian"] = (n, k, 2, 2)
  for key, shape in shapes.items():
    if _shape_problem(raw[key], shape):
      want = ", ".join("*" if s is None else str(s) for s in shape)
      raise bad(key, f"({want})")
  box = raw["crop_box"].astype(np.float32)
  if not np.all(np.isfinite(box)) or face_crop.box_pixels(box)[2] < 1:
    raise DataError(f"{path}: crop_box {box.tolist()} is not a box "
                    f"[x0, y0, side >= 1]; {_PREPARE_HINT} again")
  rate = float(fps)
  out: dict[str, Any] = {
      "a2h": frame_blocks(raw["a2h_features"], rate),
      "mel": mel_chunks(raw["mel"], rate),
      "pose": raw["pose"].astype(np.float32),
      "face_found": raw["face_found"].astype(bool),
      "crop_box": box}
  for key in ("mesh",) + KP_KEYS:
    if key in shapes:
      out[key] = raw[key].astype(np.float32)
  out["usable"] = min(n, len(out["a2h"]), len(out["mel"]))
  return out


# --------------------------------------------------------------------------
# The sampler (what Grain workers run)
# --------------------------------------------------------------------------

_warned: set[str] = set()


class AVWindowSampler(grain.transforms.RandomMap):
  """Group of clip ids -> one window record (see the module docstring).

  Draws, with Grain's per-record rng only: a clip of the group, the start,
  the source frame; retries bad clips as the samplers of
  :mod:`dagan_jax.input.samplers` do (an untried clip of the group, then
  any of ``fallback``, at most ``max_skips`` in a row).
  """

  def __init__(self, reader: FrameReader, num_frames: Sequence[int],
               npz_paths: Sequence[str], fallback: Sequence[int], *,
               window: int, frame_hw: Sequence[int] | None, has_kp: bool,
               with_mesh: bool = False, reference: str = "",
               skip_bad: bool = False, max_skips: int = 16,
               cache_size: int = 4):
    self.reader = reader
    self.num_frames = np.asarray(num_frames, np.int64)
    self.npz_paths = list(npz_paths)
    self.fallback = np.asarray(fallback, np.int32)
    self.window = int(window)
    self.frame_hw = tuple(int(v) for v in frame_hw) if frame_hw else None
    self.has_kp = bool(has_kp)
    self.with_mesh = bool(with_mesh)
    self.reference = reference
    self.skip_bad = skip_bad
    self.max_skips = max_skips
    self.cache_size = max(1, int(cache_size))
    self._init_cache()

  def _init_cache(self) -> None:
    # Grain calls random_map from several read threads at once.
    self._lock = threading.Lock()
    self._cache: collections.OrderedDict[int, dict] = collections.OrderedDict()

  def __getstate__(self) -> dict:
    # Workers get an empty cache of their own (a lock cannot be pickled).
    state = dict(self.__dict__)
    del state["_lock"], state["_cache"]
    return state

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._init_cache()

  def arrays(self, clip_id: int) -> dict[str, Any]:
    """:func:`load_clip_arrays` of a clip, through the per-process cache."""
    with self._lock:
      hit = self._cache.get(clip_id)
      if hit is not None:
        self._cache.move_to_end(clip_id)
        return hit
    # Loaded outside the lock so that other threads' hits do not wait; two
    # threads may both load a clip once, which is harmless.
    entry = load_clip_arrays(
        self.npz_paths[clip_id], self.reader.describe(clip_id),
        int(self.num_frames[clip_id]), has_kp=self.has_kp,
        with_mesh=self.with_mesh, reference=self.reference)
    with self._lock:
      self._cache[clip_id] = entry
      self._cache.move_to_end(clip_id)
      while len(self._cache) > self.cache_size:
        self._cache.popitem(last=False)
    return entry

  def _record(self, cid: int, rng: np.random.Generator) -> dict[str, Any]:
    a = self.arrays(cid)
    t = self.window
    if a["usable"] < t:
      raise DataError(
          f"{self.npz_paths[cid]}: {a['usable']} usable frames (video "
          f"{int(self.num_frames[cid])}, Audio2Head blocks {len(a['a2h'])}, "
          f"mel chunks {len(a['mel'])}); a window needs {t}")
    start = int(rng.integers(a["usable"] - t + 1))
    src = int(rng.integers(int(self.num_frames[cid])))
    raw = self.reader.read(cid, list(range(start, start + t)) + [src])
    if self.frame_hw is not None:
      where = self.reader.describe(cid)
      raw = list(face_crop.crop(np.stack(raw), a["crop_box"], self.frame_hw, where))
    frames = to_float(raw)
    win = slice(start, start + t)
    rec = {"frames": frames[:t], "source": frames[t],
           "a2h_audio": a["a2h"][win].copy(), "mel": a["mel"][win].copy(),
           "pose": a["pose"][win].copy(),
           "face_found": a["face_found"][win].copy()}
    for key in KP_KEYS + ("mesh",):
      if key in a:
        rec[key] = a[key][win].copy()
    rec["crop_box"] = a["crop_box"].copy()
    rec["start"] = np.int32(start)
    rec["clip"] = np.int32(cid)
    return rec

  def random_map(self, element: np.ndarray, rng: np.random.Generator) -> dict:
    candidates = [int(c) for c in element]
    tried: set[int] = set()
    skipped = 0
    while True:
      cid = candidates[int(rng.integers(len(candidates)))]
      try:
        rec = self._record(cid, rng)
        rec["skipped"] = np.int32(skipped)
        return rec
      except DataError as e:
        if not self.skip_bad:
          raise
        skipped += 1
        tried.add(cid)
        where = self.npz_paths[cid]
        if where not in _warned:
          _warned.add(where)
          log.warning("skipping bad clip (skip_bad): %s", e)
        if skipped > self.max_skips:
          raise DataError(
              f"{skipped} bad clips in a row while making one window (the "
              f"prepared data may be mostly unusable); last: {e}") from e
        candidates = [c for c in candidates if c not in tried]
        if not candidates:
          candidates = [int(c) for c in self.fallback if int(c) not in tried]
        if not candidates:
          raise DataError(f"every clip of this shard failed; last: {e}") from e


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------


class _Override:
  """``dataset_params`` with some keys replaced, read through
  :func:`~dagan_jax.input.pipeline.param` (works over dicts and
  ConfigDicts without copying them)."""

  def __init__(self, base: Any, **values: Any):
    self._base = base
    self._values = values

  def __contains__(self, key: str) -> bool:
    return key in self._values or (self._base is not None and
                                   key in self._base)

  def __getitem__(self, key: str) -> Any:
    if key in self._values:
      return self._values[key]
    return param(self._base, key)


@dataclasses.dataclass
class AVSplit:
  """The clips of a split that have prepared arrays, and how to read them.

  ``clips[i]`` is clip id ``i`` (records' ``clip``), ``npz_paths[i]`` its
  arrays; ``has_kp``: whether the split's files hold keypoints (decided by
  ``reference``, the first file); ``excluded``: clips left out (bad, or
  without an npz, only with ``skip_bad``); ``frame_hw``: the crop's output
  size, None without ``crop``.
  """
  clips: list[clips_lib.ClipInfo]
  reader: FrameReader
  npz_paths: list[str]
  has_kp: bool
  reference: str
  excluded: list[clips_lib.BadClip]
  where: str
  frame_hw: tuple[int, int] | None


def _check_window(window: int) -> int:
  if int(window) != window or window < 1:
    raise ConfigError(f"window is {window!r}; expected a whole number of "
                      f"frames >= 1")
  return int(window)


def open_av_split(dataset_params: Any, prepared_dir: str | os.PathLike,
                  split: str = "train", *, window: int, crop: bool = True,
                  skip_bad: bool = False) -> AVSplit:
  """Scans a split (:func:`~dagan_jax.input.pipeline.open_split`) and pairs
  its clips with their prepared files; see the module docstring."""
  window = _check_window(window)
  if not prepared_dir:
    raise ConfigError("prepared_dir is empty; set it to the folder written by "
                      "`dagan-jax data prepare`")
  prepare.read_manifest(prepared_dir)
  layout = param(dataset_params, "layout", "vox")
  frame_hw = tuple(frame_shape_of(dataset_params, layout)[:2])
  if crop:
    if layout == "tfds":
      raise ConfigError("crop boxes are in the pixels of the clip files; use "
                        "dataset_params.layout 'vox' or 'hdtf', or crop=False")
    # Crop boxes are in the clips' own pixels: their frames must be read at
    # their own size, so the size check (and resize) of open_split is off.
    data = open_split(_Override(dataset_params, resize_frames=True), split,
                      min_frames=window, skip_bad=skip_bad)
    reader: FrameReader = FileFrameReader(
        data.where, data.clips, None,
        frame_width=param(dataset_params, "frame_width", None) or None)
  else:
    data = open_split(dataset_params, split, min_frames=window,
                      skip_bad=skip_bad)
    reader = data.reader
  split_folder = os.path.join(os.fspath(prepared_dir), split)
  if not os.path.isdir(split_folder):
    raise DataError(f"{split_folder} not found: no prepared arrays for the "
                    f"{split} split; {_PREPARE_HINT}")
  paths = [str(prepare.clip_file(prepared_dir, split, c.name)) for c in data.clips]
  missing = [clips_lib.BadClip(p, "not found (no prepared arrays)")
             for p in paths if not os.path.isfile(p)]
  excluded = list(data.excluded)
  if missing:
    listing = clips_lib.format_bad(missing)
    if not skip_bad:
      raise DataError(f"{len(missing)} clip(s) of {data.where} have no prepared"
                      f" arrays:\n{listing}\n({_PREPARE_HINT}; skip_bad skips "
                      f"them)")
    log.warning("skipping %d clip(s) without prepared arrays (skip_bad):\n%s",
                len(missing), listing)
    gone = {b.path for b in missing}
    excluded += missing
    keep = [i for i, p in enumerate(paths) if p not in gone]
    if not keep:
      raise DataError(f"no clip of {data.where} has prepared arrays in "
                      f"{split_folder}; {_PREPARE_HINT}")
    reader = _SubsetReader(reader, keep)
    clips = [data.clips[i] for i in keep]
    paths = [paths[i] for i in keep]
  else:
    clips = list(data.clips)
  has_kp, reference = _split_has_kp(paths, skip_bad)
  return AVSplit(clips, reader, paths, has_kp, reference, excluded,
                 data.where, frame_hw if crop else None)


class _SubsetReader:
  """A reader over some clips of another, renumbered from 0 (the readers of
  :mod:`~dagan_jax.input.samplers` number clips by position)."""

  def __init__(self, reader: FrameReader, ids: Sequence[int]):
    self.reader = reader
    self.ids = [int(i) for i in ids]

  def read(self, clip_id: int, indices: Sequence[int]) -> list[np.ndarray]:
    return self.reader.read(self.ids[clip_id], indices)

  def describe(self, clip_id: int) -> str:
    return self.reader.describe(self.ids[clip_id])


def _split_has_kp(paths: Sequence[str], skip_bad: bool) -> tuple[bool, str]:
  """Whether the split's files hold keypoints, from the first readable one
  (only its zip directory is read); records then check every file."""
  last: Exception | None = None
  for p in paths:
    try:
      with np.load(p, allow_pickle=False) as z:
        return any(k in z.files for k in KP_KEYS), p
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      last = DataError(f"{p}: cannot read it ({e}); {_PREPARE_HINT} again")
      if not skip_bad:
        raise last from e
  raise DataError(f"no prepared file could be read; last: {last}")


def build_av_window_dataset(dataset_params: Any,
                            prepared_dir: str | os.PathLike, *,
                            split: str = "train", seed: int, window: int,
                            process_index: int | None = None,
                            process_count: int | None = None,
                            num_epochs: int | None = None,
                            shuffle: bool = True, crop: bool = True,
                            skip_bad: bool = False, with_mesh: bool = False,
                            av_split: AVSplit | None = None,
                            max_skips: int = 16,
                            cache_size: int = 4) -> grain.MapDataset:
  """The unbatched window ``MapDataset`` behind :func:`make_av_window_dataset`.

  ``av_split`` reuses an :func:`open_av_split` result (opened with the same
  ``crop``); ``cache_size``: clips whose arrays each process keeps.
  """
  window = _check_window(window)
  if num_epochs is not None and num_epochs < 1:
    raise ConfigError(f"num_epochs is {num_epochs}; expected >= 1 or None")
  pi, pc = _host(process_index, process_count)
  data = av_split or open_av_split(dataset_params, prepared_dir, split,
                                   window=window, crop=crop, skip_bad=skip_bad)
  if (data.frame_hw is not None) != bool(crop):
    raise ConfigError(f"av_split was opened with crop={not crop}; this dataset "
                      f"asks for crop={crop}")
  id_sampling = bool(param(dataset_params, "id_sampling", False))
  groups = clips_lib.group_clips(data.clips, id_sampling)
  if len(groups) < pc:
    raise DataError(
        f"{data.where} has {len(groups)} {'persons' if id_sampling else 'clips'}"
        f" with prepared arrays but there are {pc} hosts; each host needs at "
        f"least one")
  source = GroupSource(groups, [c.name for c in data.clips], data.where)
  ds = grain.MapDataset.source(source)[pi::pc]
  shard_ids = np.concatenate([source[i] for i in range(pi, len(source), pc)])
  ds = ds.seed(host_seed(seed, pi))
  if shuffle:
    ds = ds.shuffle()
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  sampler = AVWindowSampler(
      data.reader, [c.num_frames for c in data.clips], data.npz_paths,
      shard_ids, window=window, frame_hw=data.frame_hw, has_kp=data.has_kp,
      with_mesh=with_mesh, reference=data.reference, skip_bad=skip_bad,
      max_skips=max_skips, cache_size=cache_size)
  return ds.random_map(sampler)


def make_av_window_dataset(dataset_params: Any,
                           prepared_dir: str | os.PathLike, *,
                           split: str = "train", seed: int, batch_size: int,
                           window: int, num_workers: int = 0,
                           process_index: int | None = None,
                           process_count: int | None = None,
                           num_epochs: int | None = None,
                           shuffle: bool = True, crop: bool = True,
                           skip_bad: bool = False, with_mesh: bool = False,
                           read_threads: int | None = None,
                           drop_remainder: bool = True,
                           av_split: AVSplit | None = None
                           ) -> grain.IterDataset:
  """Batches of audio-visual windows for Audio2Head / IP_LAP training.

  Yields the records of the module docstring stacked to ``(B, ...)``; ``B =
  batch_size`` per host. Endless unless ``num_epochs`` is given (an epoch =
  one pass over this host's persons or clips). ``read_threads``: threads per
  process making records (default 2); ``num_workers``: Grain worker
  processes.
  """
  ds = build_av_window_dataset(
      dataset_params, prepared_dir, split=split, seed=seed, window=window,
      process_index=process_index, process_count=process_count,
      num_epochs=num_epochs, shuffle=shuffle, crop=crop, skip_bad=skip_bad,
      with_mesh=with_mesh, av_split=av_split)
  return _finish(ds, batch_size, num_workers, read_threads, drop_remainder)
