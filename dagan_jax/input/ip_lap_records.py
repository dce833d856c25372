"""Grain records of IP_LAP's two training stages, from ``dagan-jax data
prepare`` folders (Zhong et al., CVPR 2023; official
``preprocess/preprocess_video.py``, ``train_landmarks_generator.py`` and
``train_video_renderer.py``).

The official preprocessing stores, per frame with a face, the 131 IP_LAP
points normalised to a crop, the 128x128 face crop and its sketch; the
training scripts then draw windows from them. Here the same arrays are made
on the fly from a prepared clip's 468-point ``mesh`` (kept per clip in a
small cache) and, for the renderer, from the clip's frames::

  grain.MapDataset.source(GroupSource)       # persons (id_sampling) or clips
    [process_index::process_count]           # this host's shard
    .seed(host_seed).shuffle().repeat(...)   # as dagan_jax.input.av_windows
    .random_map(IPLapSampler)                # one record
    .batch(batch_size, drop_remainder=True)  # (make_ip_lap_dataset)

**Per frame** (:func:`clip_landmarks`, the official training preprocessing;
the inference of :mod:`dagan_jax.face.ip_lap_landmarks` differs in the
margin, 25 px, and in normalising to the integer box): the 131 points in
image-normalised (x, y) (mesh pixels divided by the frame's width and
height); their box widened by ``margin`` pixels (official 5) on each side and
clipped to [0, 1]; the points normalised to that float box, in full-face
order (74 pose then 57 content); the face crop ``frame[int(y_min h):int(y_max
h), int(x_min w):int(x_max w)]``; the sketch drawn on a canvas of ``int(h' *
128 / min(h', w'))`` by ``int(w' * 128 / min(h', w'))`` with ``h' = (y_max -
y_min) h`` (floats, as the official), resized to 128 (and to ``img_size`` if
that differs, as ``dagan-jax dub`` does).

**Mel chunks**: frame ``f`` hears the 16-column chunk that starts at mel
column ``int(80 (f - 2) / fps)`` (the official "around the frame": the chunk
of video frame ``f - 2`` of :func:`dagan_jax.audio.mel.mel_chunks`).

Records (``make_ip_lap_dataset`` stacks ``batch_size`` of them):

``stage='landmark'`` (official ``train_landmarks_generator.Dataset``)::

  mels        (T, 80, 16)  float32  chunks of the window's frames
  pose        (T, 74, 2)   float32  their pose landmarks (x, y)
  content     (T, 57, 2)   float32  their content landmarks (the target)
  ref_pose    (Nl, 74, 2)  float32  Nl reference frames of the same clip,
  ref_content (Nl, 57, 2)  float32  distinct and outside the window

  The window's start is uniform over ``[2, n - T - 2]`` (and its last chunk
  must exist), every window frame must have a face; the references are drawn
  without replacement from the other frames with a face.

``stage='renderer'`` (official ``train_video_renderer.Dataset``, **BGR**
images, the renderer's convention, so that a trained model works where a
converted official one does)::

  face         (S, S, 3)     float32 in [0, 1]  crop of the window's centre
  sketches     (T, S, S, 3)  float32            sketches of the T frames
  ref_faces    (N, S, S, 3)  float32            N frames of the clip with a
  ref_sketches (N, S, S, 3)  float32            face, distinct (any of them,
                                                the centre included, as the
                                                official random.sample)
  mel          (80, 16)      float32            the centre frame's chunk

Both carry ``clip``, ``start`` (first window frame) and ``skipped`` (bad
clips skipped to make the record) as int32. Landmark records read no video.

Bad clips (too few frames with a face for a window and the references, no
usable window) raise :class:`~dagan_jax.errors.DataError` naming the clip, or
with ``skip_bad`` are skipped and counted, as :mod:`.av_windows` does. This
module does not import jax (spawned Grain workers unpickle the sampler).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Any, Sequence

import grain
import numpy as np

from dagan_jax.errors import ConfigError, DataError
from dagan_jax.face import ip_lap_landmarks as lm
from dagan_jax.input import av_windows
from dagan_jax.input import clips as clips_lib
from dagan_jax.input.pipeline import _finish, _host, host_seed, param
from dagan_jax.input.samplers import GroupSource

log = logging.getLogger("dagan_jax.input")

STAGES = ("landmark", "renderer")
#: Pixels the official training preprocessing adds around the 131 points.
TRAIN_CROP_MARGIN_PX = 5
#: A frame's mel chunk is the one of the frame this many frames earlier.
MEL_LEAD_FRAMES = 2
#: The official landmark windows start no earlier than this frame and end
#: this many frames before the clip does.
LANDMARK_EDGE_FRAMES = 2


def clip_landmarks(mesh: np.ndarray, found: np.ndarray, frame_hw: Sequence[int],
                   margin: float = TRAIN_CROP_MARGIN_PX) -> dict[str, np.ndarray]:
  """Per frame of a clip, the official training preprocessing (module
  docstring) from the prepared ``mesh`` (n, 468, 3) in pixels.

  Returns ``landmarks`` (n, 131, 2) float32 (x, y) normalised to each
  frame's crop, full-face order (NaN without a face); ``boxes`` (n, 4) int64
  ``(y1, y2, x1, x2)``; ``canvas`` (n, 2) int64 sketch canvas (h, w);
  ``face`` (n,) bool: frames with a face and a non-empty crop.
  """
  h, w = (int(v) for v in frame_hw)
  pts = np.asarray(mesh, np.float64)[:, list(lm.FULL_FACE_MESH_IDS), :2]
  pts = pts / np.asarray([w, h], np.float64)
  face = np.asarray(found, bool) & np.all(np.isfinite(pts), axis=(1, 2))
  safe = np.where(face[:, None, None], pts, 0.5)
  x, y = safe[..., 0], safe[..., 1]
  x_min = np.maximum(x.min(1) - margin / w, 0.0)
  x_max = np.minimum(x.max(1) + margin / w, 1.0)
  y_min = np.maximum(y.min(1) - margin / h, 0.0)
  y_max = np.minimum(y.max(1) + margin / h, 1.0)
  boxes = np.stack([(y_min * h).astype(np.int64), (y_max * h).astype(np.int64),
                    (x_min * w).astype(np.int64), (x_max * w).astype(np.int64)],
                   axis=1)
  face &= (boxes[:, 1] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 2])
  with np.errstate(divide="ignore", invalid="ignore"):
    lx = (x - x_min[:, None]) / (x_max - x_min)[:, None]
    ly = (y - y_min[:, None]) / (y_max - y_min)[:, None]
    h_new, w_new = (y_max - y_min) * h, (x_max - x_min) * w
    short = np.minimum(h_new, w_new)
    canvas = np.stack([h_new * lm.SKETCH_SIZE / short,
                       w_new * lm.SKETCH_SIZE / short], axis=1)
  landmarks = np.stack([lx, ly], axis=-1).astype(np.float32)
  landmarks[~face] = np.nan
  canvas = np.where(face[:, None], canvas, lm.SKETCH_SIZE).astype(np.int64)
  return {"landmarks": landmarks, "boxes": boxes, "canvas": canvas, "face": face}


def draw_sketch(landmarks: np.ndarray, canvas_hw: Sequence[int],
                size: int = lm.SKETCH_SIZE) -> np.ndarray:
  """The renderer's sketch of (131, 2) full-face landmarks drawn on a
  ``canvas_hw`` canvas: (size, size, 3) float32 in [0, 224/255]."""
  import cv2  # pylint: disable=import-outside-toplevel
  canvas = lm.draw_canvas(np.asarray(landmarks).T, canvas_hw)
  out = cv2.resize(canvas, (lm.SKETCH_SIZE, lm.SKETCH_SIZE)) / 255.0
  if size != lm.SKETCH_SIZE:
    out = cv2.resize(out, (size, size))
  return out.astype(np.float32)


def face_crop_bgr(frame: np.ndarray, box: Sequence[int], size: int) -> np.ndarray:
  """The crop ``box`` (y1, y2, x1, x2) of an RGB uint8 frame resized
  (bilinear) to ``size``, **BGR**, float32 in [0, 1]."""
  import cv2  # pylint: disable=import-outside-toplevel
  y1, y2, x1, x2 = (int(v) for v in box)
  crop = cv2.resize(np.ascontiguousarray(frame[y1:y2, x1:x2]), (size, size))
  return (crop[..., ::-1] * np.float32(1.0 / 255.0)).astype(np.float32)


class IPLapSampler(grain.transforms.RandomMap):
  """Group of clip ids -> one record of ``stage`` (module docstring).

  ``clips``: the split's :class:`~dagan_jax.input.clips.ClipInfo` s (frame
  counts and sizes); ``T`` window frames; ``num_refs`` reference frames
  (``Nl`` landmark sets, or ``N`` faces); ``img_size`` the renderer's face
  size; ``margin`` the crop margin in pixels. Bad clips are retried as in
  :class:`~dagan_jax.input.av_windows.AVWindowSampler`.
  """

  def __init__(self, reader: Any, clips: Sequence[clips_lib.ClipInfo],
               npz_paths: Sequence[str], fallback: Sequence[int], *,
               stage: str, T: int, num_refs: int, img_size: int = 128,  # noqa: N803
               margin: float = TRAIN_CROP_MARGIN_PX, has_kp: bool = False,
               reference: str = "", skip_bad: bool = False,
               max_skips: int = 16, cache_size: int = 4):
    if stage not in STAGES:
      raise ConfigError(f"IP_LAP record stage {stage!r}; expected one of {STAGES}")
    self.reader = reader
    self.sizes = [(int(c.num_frames), int(c.height), int(c.width)) for c in clips]
    self.npz_paths = list(npz_paths)
    self.fallback = np.asarray(fallback, np.int32)
    self.stage = stage
    self.T = int(T)
    self.num_refs = int(num_refs)
    self.img_size = int(img_size)
    self.margin = float(margin)
    self.has_kp = bool(has_kp)
    self.reference = reference
    self.skip_bad = skip_bad
    self.max_skips = max_skips
    self.cache_size = max(1, int(cache_size))
    self._init_cache()

  def _init_cache(self) -> None:
    self._lock = threading.Lock()
    self._cache: collections.OrderedDict[int, dict] = collections.OrderedDict()

  def __getstate__(self) -> dict:
    state = dict(self.__dict__)
    del state["_lock"], state["_cache"]
    return state

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._init_cache()

  # ------------------------------------------------------------ per clip

  def _load(self, cid: int) -> dict[str, Any]:
    n, h, w = self.sizes[cid]
    path = self.npz_paths[cid]
    arrays = av_windows.load_clip_arrays(
        path, self.reader.describe(cid), n, has_kp=self.has_kp, with_mesh=True,
        reference=self.reference)
    out = clip_landmarks(arrays["mesh"], arrays["face_found"], (h, w),
                         self.margin)
    out["mel"] = arrays["mel"]
    face, t, n_mel = out["face"], self.T, len(arrays["mel"])
    # runs[s]: whether frames s .. s+T-1 all have a face.
    counts = np.concatenate([[0], np.cumsum(face)])
    runs = (counts[t:] - counts[:-t]) == t if n >= t else np.zeros(0, bool)
    if self.stage == "landmark":
      lo = LANDMARK_EDGE_FRAMES
      hi = min(n - t - LANDMARK_EDGE_FRAMES, n_mel - 1 + MEL_LEAD_FRAMES - (t - 1))
      need = f"{t} frames with a face in a row in [{lo}, {n - LANDMARK_EDGE_FRAMES})"
    else:
      # Centre frame c = s + T // 2 hears chunk c - 2, which must exist.
      lo = max(0, MEL_LEAD_FRAMES - t // 2)
      hi = min(n - t, n_mel - 1 + MEL_LEAD_FRAMES - t // 2)
      need = f"{t} frames with a face in a row"
    starts = np.arange(lo, hi + 1) if hi >= lo else np.zeros(0, np.int64)
    out["starts"] = starts[runs[starts]] if starts.size else starts
    if out["starts"].size == 0:
      raise DataError(f"{path}: no usable window ({need} with their mel "
                      f"chunks; {n} frames, {int(face.sum())} with a face, "
                      f"{n_mel} mel chunks)")
    extra = t if self.stage == "landmark" else 0
    if int(face.sum()) < self.num_refs + extra:
      raise DataError(f"{path}: {int(face.sum())} frames with a face; "
                      f"{self.stage} records need {self.num_refs + extra} "
                      f"({self.num_refs} references"
                      f"{f' + the {t} window frames' if extra else ''})")
    return out

  def arrays(self, cid: int) -> dict[str, Any]:
    """The clip's per-frame arrays (:func:`clip_landmarks`, ``mel``,
    ``starts``), through the per-process cache."""
    with self._lock:
      hit = self._cache.get(cid)
      if hit is not None:
        self._cache.move_to_end(cid)
        return hit
    entry = self._load(cid)
    with self._lock:
      self._cache[cid] = entry
      self._cache.move_to_end(cid)
      while len(self._cache) > self.cache_size:
        self._cache.popitem(last=False)
    return entry

  # ------------------------------------------------------------ records

  def _record(self, cid: int, rng: np.random.Generator) -> dict[str, Any]:
    a = self.arrays(cid)
    t = self.T
    start = int(a["starts"][int(rng.integers(len(a["starts"])))])
    window = np.arange(start, start + t)
    faces = np.flatnonzero(a["face"])
    landmarks = a["landmarks"]
    if self.stage == "landmark":
      pool = np.setdiff1d(faces, window)
      refs = rng.choice(pool, self.num_refs, replace=False)
      rec = {"mels": a["mel"][window - MEL_LEAD_FRAMES].copy(),
             "pose": landmarks[window, :lm.NUM_POSE].copy(),
             "content": landmarks[window, lm.NUM_POSE:].copy(),
             "ref_pose": landmarks[refs, :lm.NUM_POSE].copy(),
             "ref_content": landmarks[refs, lm.NUM_POSE:].copy()}
    else:
      centre = start + t // 2
      refs = rng.choice(faces, self.num_refs, replace=False)
      s = self.img_size
      wanted = [centre] + [int(r) for r in refs]
      frames = self.reader.read(cid, wanted)
      crops = [face_crop_bgr(f, a["boxes"][i], s) for f, i in zip(frames, wanted)]
      sketch = lambda i: draw_sketch(landmarks[i], a["canvas"][i], s)  # noqa: E731
      rec = {"face": crops[0],
             "sketches": np.stack([sketch(i) for i in window]),
             "ref_faces": np.stack(crops[1:]),
             "ref_sketches": np.stack([sketch(int(r)) for r in refs]),
             "mel": a["mel"][centre - MEL_LEAD_FRAMES].copy()}
    rec["clip"] = np.int32(cid)
    rec["start"] = np.int32(start)
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
        if skipped == 1:
          log.warning("skipping bad clip (skip_bad): %s", e)
        if skipped > self.max_skips:
          raise DataError(f"{skipped} bad clips in a row while making one "
                          f"IP_LAP record; last: {e}") from e
        candidates = [c for c in candidates if c not in tried]
        if not candidates:
          candidates = [int(c) for c in self.fallback if int(c) not in tried]
        if not candidates:
          raise DataError(f"every clip of this shard failed; last: {e}") from e


def open_ip_lap_split(dataset_params: Any, prepared_dir: str | os.PathLike,
                      split: str = "train", *, min_frames: int,
                      skip_bad: bool = False) -> av_windows.AVSplit:
  """The split's clips of at least ``min_frames`` frames paired with their
  prepared files (:func:`~dagan_jax.input.av_windows.open_av_split`; frames
  read at the clips' own size)."""
  return av_windows.open_av_split(dataset_params, prepared_dir, split,
                                  window=min_frames, crop=True,
                                  skip_bad=skip_bad)


def build_ip_lap_dataset(dataset_params: Any, prepared_dir: str | os.PathLike,
                         *, stage: str, T: int, num_refs: int,  # noqa: N803
                         img_size: int = 128,
                         margin: float = TRAIN_CROP_MARGIN_PX,
                         split: str = "train", seed: int,
                         min_frames: int = 25,
                         process_index: int | None = None,
                         process_count: int | None = None,
                         num_epochs: int | None = None, shuffle: bool = True,
                         skip_bad: bool = False,
                         av_split: av_windows.AVSplit | None = None,
                         cache_size: int = 4) -> grain.MapDataset:
  """The unbatched record ``MapDataset`` behind :func:`make_ip_lap_dataset`."""
  if num_epochs is not None and num_epochs < 1:
    raise ConfigError(f"num_epochs is {num_epochs}; expected >= 1 or None")
  if int(T) < 2 or int(num_refs) < 1:
    raise ConfigError(f"IP_LAP records need T >= 2 and references >= 1; got "
                      f"T={T}, {num_refs} references")
  pi, pc = _host(process_index, process_count)
  data = av_split or open_ip_lap_split(dataset_params, prepared_dir, split,
                                       min_frames=min_frames, skip_bad=skip_bad)
  id_sampling = bool(param(dataset_params, "id_sampling", False))
  groups = clips_lib.group_clips(data.clips, id_sampling)
  if len(groups) < pc:
    raise DataError(f"{data.where} has {len(groups)} "
                    f"{'persons' if id_sampling else 'clips'} with prepared "
                    f"arrays but there are {pc} hosts; each host needs one")
  source = GroupSource(groups, [c.name for c in data.clips], data.where)
  ds = grain.MapDataset.source(source)[pi::pc]
  shard_ids = np.concatenate([source[i] for i in range(pi, len(source), pc)])
  ds = ds.seed(host_seed(seed, pi))
  if shuffle:
    ds = ds.shuffle()
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  sampler = IPLapSampler(
      data.reader, data.clips, data.npz_paths, shard_ids, stage=stage, T=T,
      num_refs=num_refs, img_size=img_size, margin=margin,
      has_kp=data.has_kp, reference=data.reference, skip_bad=skip_bad,
      cache_size=cache_size)
  return ds.random_map(sampler)


def make_ip_lap_dataset(dataset_params: Any, prepared_dir: str | os.PathLike,
                        *, stage: str, batch_size: int, T: int,  # noqa: N803
                        num_refs: int, img_size: int = 128,
                        margin: float = TRAIN_CROP_MARGIN_PX,
                        split: str = "train", seed: int, min_frames: int = 25,
                        num_workers: int = 0,
                        process_index: int | None = None,
                        process_count: int | None = None,
                        num_epochs: int | None = None, shuffle: bool = True,
                        skip_bad: bool = False,
                        read_threads: int | None = None,
                        drop_remainder: bool = True,
                        av_split: av_windows.AVSplit | None = None
                        ) -> grain.IterDataset:
  """Batches of IP_LAP records of ``stage`` (module docstring), ``(B, ...)``
  with ``B = batch_size`` per host; endless unless ``num_epochs``."""
  ds = build_ip_lap_dataset(
      dataset_params, prepared_dir, stage=stage, T=T, num_refs=num_refs,
      img_size=img_size, margin=margin, split=split, seed=seed,
      min_frames=min_frames, process_index=process_index,
      process_count=process_count, num_epochs=num_epochs, shuffle=shuffle,
      skip_bad=skip_bad, av_split=av_split)
  return _finish(ds, batch_size, num_workers, read_threads, drop_remainder)
