"""Grain input pipelines for training and readers for evaluation.

Training (``make_pair_dataset``, ``make_depth_dataset``)::

  grain.MapDataset.source(GroupSource)          # persons (id_sampling) or clips
    [process_index::process_count]              # this host's disjoint shard
    .seed(host_seed).repeat(num_repeats).shuffle()   # one FOMM epoch, shuffled
    .repeat(num_epochs)                         # None: endless, reshuffled
    .random_map(PairSampler | TripletSampler)   # draw clip, frames, augment
    .batch(batch_size, drop_remainder=True)
    .to_iter_dataset(ReadOptions(num_threads=read_threads))
    .mp_prefetch(MultiprocessingOptions(num_workers))   # when num_workers > 0

* Records are dicts of numpy arrays. Pairs: ``source``, ``driving``
  ``(B, H, W, 3)`` float32 in [0, 1] and ``skipped`` ``(B,)`` int32 (bad clips
  skipped to make each record; sum it to report). Depth: ``frames`` and
  ``frames_aug`` ``(B, 3, H, W, 3)`` (frames t-1, t, t+1) and ``skipped``.
* ``batch_size`` is per host. Hosts get disjoint groups (persons, or clips
  without ``id_sampling``). Each host's seed is derived from ``(seed,
  process_index)`` so hosts draw independent frames and augmentations.
* Deterministic: the stream depends only on the data, ``dataset_params``,
  ``seed`` and the host's place, not on ``num_workers`` or thread timing.
  ``it = iter(ds)``; ``it.get_state()`` / ``it.set_state(state)`` (or orbax's
  ``grain.checkpoint.CheckpointSave(it)``) resume the exact stream.
* ``num_repeats`` passes over the groups make one epoch, as FOMM's
  ``DatasetRepeater``: FOMM's epoch has ``num_repeats * len(groups)`` records.
* Workers are spawned processes: everything they run lives in
  :mod:`dagan_jax.input.samplers` and friends, which do not import jax.
  Grain reads absl flags when it starts them; if nothing has parsed flags
  (no ``absl.app.run``), their defaults are taken. An iterator state resumes
  an iterator with the same ``num_workers``.

Dataset parameters read (``dataset_params``, a ConfigDict or dict):
``root_dir``, ``frame_shape``, ``id_sampling``, ``augmentation_params`` (the
official keys) and these optional ones: ``layout`` (``'vox'`` default,
``'hdtf'``, ``'lrs2'``, ``'tfds'``), ``resize_frames`` (False: a frame whose
size is not ``frame_shape`` is bad input; True: it is resized, e.g. HDTF 512
-> 256), ``cache_dir`` (clip index, see :mod:`dagan_jax.input.clips`),
``frame_width`` (strip images), ``tfds_name`` (with ``layout='tfds'``: the
builder name, default ``dagan_vox_frames``; ``root_dir`` is then the TFDS
data_dir).

Bad input: a missing or empty split folder is always an error. Clips that
cannot be used (unreadable header, fewer frames than a record needs, wrong
frame size, not RGB) are found when the dataset is made: an error listing
them all, or with ``skip_bad`` left out with one logged warning (their list
is ``open_split(...).excluded``). Files that break later, while decoding, raise
an error naming the file, or with ``skip_bad`` are skipped and counted in the
records' ``skipped``.

Evaluation: :func:`reconstruction_videos` (FOMM's reconstruction protocol:
first frame as source, every frame as driving) and the pair lists of
:mod:`dagan_jax.input.pairs` (``read_pairs_csv``, ``write_pairs_csv``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Iterator, Sequence

import grain
import numpy as np

from dagan_jax.errors import ConfigError, DataError
from dagan_jax.input import clips as clips_lib
from dagan_jax.input import media
from dagan_jax.input.augment import Augmenter
from dagan_jax.input.pairs import (PairRow, read_pair_frames, read_pairs_csv,  # noqa: F401  (re-exported)
                                   resolve_frame, write_pairs_csv)
from dagan_jax.input.samplers import (FileFrameReader, FrameReader, GroupSource,
                                      PairSampler, TripletSampler)

log = logging.getLogger("dagan_jax.input")

PAIR_MIN_FRAMES = 2
DEPTH_MIN_FRAMES = 3


def param(dataset_params: Any, key: str, default: Any = None) -> Any:
  """``dataset_params[key]`` for a ConfigDict or dict; ``default`` if absent
  or None."""
  if dataset_params is None:
    return default
  try:
    value = dataset_params[key] if key in dataset_params else None
  except (TypeError, KeyError, AttributeError):
    value = getattr(dataset_params, key, None)
  return default if value is None else value


def frame_shape_of(dataset_params: Any, layout: str = "vox") -> tuple[int, int, int]:
  """``dataset_params.frame_shape`` checked: ``(H, W, 3)``."""
  default = clips_lib.DEFAULT_FRAME_SHAPE.get(layout, (256, 256, 3))
  shape = tuple(int(x) for x in param(dataset_params, "frame_shape", default))
  if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
    raise ConfigError(f"dataset_params.frame_shape is {list(shape)}; expected "
                      f"[height, width, 3]")
  return shape


@dataclasses.dataclass
class SplitData:
  """The usable clips of a split with a reader for their frames.

  ``excluded``: clips left out because they cannot give a record (only with
  ``skip_bad``; otherwise they are an error). ``where``: the folder or TFDS
  split, for messages.
  """
  clips: list[clips_lib.ClipInfo]
  reader: FrameReader
  excluded: list[clips_lib.BadClip]
  where: str
  stats: dict[str, Any]


def open_split(dataset_params: Any, split: str = "train", *,
               min_frames: int = PAIR_MIN_FRAMES, skip_bad: bool = False
               ) -> SplitData:
  """Scans (through the cache) and checks a split; see the module docstring."""
  layout = param(dataset_params, "layout", "vox")
  shape = frame_shape_of(dataset_params, layout)
  resize = bool(param(dataset_params, "resize_frames", False))
  root = param(dataset_params, "root_dir", "")
  if not root:
    raise ConfigError("dataset_params.root_dir is empty; set it to the "
                      "dataset folder (holding train/ and test/)")
  if layout == "tfds":
    from dagan_jax.input import tfds_builders  # pylint: disable=import-outside-toplevel
    index, reader = tfds_builders.open_tfds_split(
        root, param(dataset_params, "tfds_name", "dagan_vox_frames"), split,
        frame_hw=shape[:2], resize=resize)
  elif layout in clips_lib.LAYOUTS:
    frame_width = param(dataset_params, "frame_width", None) or None
    index = clips_lib.scan_split(root, split, layout,
                                 cache_dir=param(dataset_params, "cache_dir"),
                                 frame_width=frame_width)
    reader = None
  else:
    expected = ", ".join(repr(x) for x in clips_lib.LAYOUTS)
    raise ConfigError(f"dataset_params.layout is {layout!r}; expected "
                      f"{expected} or 'tfds'")
  sel = index.select(min_frames=min_frames,
                     frame_hw=None if resize else shape[:2])
  if sel.bad:
    if not skip_bad:
      raise DataError(
          f"{len(sel.bad)} bad clip(s) in {index.split_dir}:\n"
          f"{clips_lib.format_bad(sel.bad)}\n(`dagan-jax data check --root "
          f"{root} --layout {layout if layout != 'tfds' else 'vox'}` lists "
          f"every problem; skip_bad skips bad clips)")
    log.warning("skipping %d bad clip(s) in %s (skip_bad):\n%s", len(sel.bad),
                index.split_dir, clips_lib.format_bad(sel.bad))
  if not sel.clips:
    raise DataError(f"no usable clips in {index.split_dir} ({len(sel.bad)} bad)")
  if reader is None:
    reader = FileFrameReader(index.split_dir, sel.clips, shape[:2],
                             resize=resize, frame_width=index.frame_width)
  else:
    reader = reader.subset([c.name for c in sel.clips])
  return SplitData(sel.clips, reader, sel.bad, str(index.split_dir),
                   dict(index.stats))


def host_seed(seed: int, process_index: int) -> int:
  """A 32-bit seed for host ``process_index`` derived from ``seed``."""
  return int(np.random.SeedSequence([int(seed), int(process_index)])
             .generate_state(1, np.uint32)[0])


def _host(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ConfigError(f"process_index {process_index} is not in "
                      f"[0, {process_count})")
  return int(process_index), int(process_count)


def build_record_dataset(dataset_params: Any, *, kind: str = "pair",
                         split: str = "train", seed: int, num_repeats: int = 1,
                         skip_bad: bool = False,
                         process_index: int | None = None,
                         process_count: int | None = None,
                         num_epochs: int | None = None,
                         augment: bool | None = None, shuffle: bool = True,
                         split_data: SplitData | None = None,
                         max_skips: int = 16) -> grain.MapDataset:
  """The unbatched record ``MapDataset`` behind the ``make_*`` functions.

  ``kind``: ``'pair'`` or ``'depth'``. ``augment`` defaults to ``split ==
  'train'``. ``split_data`` reuses an :func:`open_split` result.
  """
  if kind not in ("pair", "depth"):
    raise ValueError(f"kind {kind!r}")
  if num_repeats < 1:
    raise ConfigError(f"num_repeats is {num_repeats}; expected >= 1")
  if num_epochs is not None and num_epochs < 1:
    raise ConfigError(f"num_epochs is {num_epochs}; expected >= 1 or None")
  pi, pc = _host(process_index, process_count)
  min_frames = PAIR_MIN_FRAMES if kind == "pair" else DEPTH_MIN_FRAMES
  data = split_data or open_split(dataset_params, split, min_frames=min_frames,
                                  skip_bad=skip_bad)
  id_sampling = bool(param(dataset_params, "id_sampling", False))
  groups = clips_lib.group_clips(data.clips, id_sampling)
  if len(groups) < pc:
    raise DataError(
        f"{data.where} has {len(groups)} {'persons' if id_sampling else 'clips'}"
        f" but there are {pc} hosts; each host needs at least one")
  source = GroupSource(groups, [c.name for c in data.clips], data.where)
  if augment is None:
    augment = split == "train"
  augmenter = Augmenter(param(dataset_params, "augmentation_params")) if augment else None
  ds = grain.MapDataset.source(source)[pi::pc]
  shard_ids = np.concatenate([source[i] for i in range(pi, len(source), pc)])
  ds = ds.seed(host_seed(seed, pi))
  if num_repeats > 1:
    ds = ds.repeat(num_repeats)
  if shuffle:
    ds = ds.shuffle()
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  sampler_cls = PairSampler if kind == "pair" else TripletSampler
  sampler = sampler_cls(data.reader, [c.num_frames for c in data.clips],
                        shard_ids, augmenter, skip_bad=skip_bad,
                        max_skips=max_skips)
  return ds.random_map(sampler)


def _absl_flags_ready() -> None:
  """Grain's worker pool reads absl flags; outside ``absl.app.run`` nobody has
  parsed them, so take their defaults (argv is left alone)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _finish(ds: grain.MapDataset, batch_size: int, num_workers: int,
            read_threads: int | None, drop_remainder: bool) -> grain.IterDataset:
  if batch_size < 1:
    raise ConfigError(f"batch_size is {batch_size}; expected >= 1")
  if num_workers < 0:
    raise ConfigError(f"num_workers is {num_workers}; expected >= 0")
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  threads = read_threads if read_threads is not None else 2
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                            prefetch_buffer_size=max(2, 2 * threads)))
  if num_workers > 0:
    _absl_flags_ready()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                     per_worker_buffer_size=2))
  return it


def make_pair_dataset(dataset_params: Any, *, split: str = "train", seed: int,
                      batch_size: int, num_repeats: int, num_workers: int = 0,
                      skip_bad: bool = False, process_index: int | None = None,
                      process_count: int | None = None,
                      num_epochs: int | None = None,
                      augment: bool | None = None, shuffle: bool = True,
                      read_threads: int | None = None,
                      drop_remainder: bool = True,
                      split_data: SplitData | None = None) -> grain.IterDataset:
  """Batches of (source, driving) frame pairs for generator training.

  Yields ``{'source': (B, H, W, 3) float32, 'driving': (B, H, W, 3) float32,
  'skipped': (B,) int32}``; ``B = batch_size`` per host. Endless unless
  ``num_epochs`` is given (an epoch = ``num_repeats`` passes over persons or
  clips). ``read_threads``: threads per process decoding batches (default 2).
  See the module docstring for everything else.
  """
  ds = build_record_dataset(
      dataset_params, kind="pair", split=split, seed=seed,
      num_repeats=num_repeats, skip_bad=skip_bad, process_index=process_index,
      process_count=process_count, num_epochs=num_epochs, augment=augment,
      shuffle=shuffle, split_data=split_data)
  return _finish(ds, batch_size, num_workers, read_threads, drop_remainder)


def make_depth_dataset(dataset_params: Any, *, split: str = "train", seed: int,
                       batch_size: int, num_repeats: int, num_workers: int = 0,
                       skip_bad: bool = False, process_index: int | None = None,
                       process_count: int | None = None,
                       num_epochs: int | None = None,
                       augment: bool | None = None, shuffle: bool = True,
                       read_threads: int | None = None,
                       drop_remainder: bool = True,
                       split_data: SplitData | None = None) -> grain.IterDataset:
  """Batches of consecutive frame triplets for depth-network training.

  Yields ``{'frames': (B, 3, H, W, 3) float32 (t-1, t, t+1), 'frames_aug':
  same shape, colour-jittered, 'skipped': (B,) int32}``; see
  :class:`~dagan_jax.input.samplers.TripletSampler` and the module docstring.
  """
  ds = build_record_dataset(
      dataset_params, kind="depth", split=split, seed=seed,
      num_repeats=num_repeats, skip_bad=skip_bad, process_index=process_index,
      process_count=process_count, num_epochs=num_epochs, augment=augment,
      shuffle=shuffle, split_data=split_data)
  return _finish(ds, batch_size, num_workers, read_threads, drop_remainder)


# --------------------------------------------------------------------------
# Evaluation: FOMM's reconstruction protocol
# --------------------------------------------------------------------------


class LazyClip:
  """A clip whose frames are decoded only when asked for.

  ``len(clip)`` frames; ``iter(clip)`` streams ``(H, W, 3)`` float32 frames in
  order (one decoded frame in memory at a time); ``clip.read(indices)`` ->
  ``(k, H, W, 3)``; ``clip.read_all()`` -> ``(T, H, W, 3)``; ``clip.fps`` is
  None for frame folders. Frames are converted to RGB like
  :func:`media.read_image` (with a notice) rather than rejected.
  """

  def __init__(self, path: str, info: clips_lib.ClipInfo,
               frame_width: int | None = None):
    self.path = path
    self.name = info.name
    self.info = info
    self.fps = info.fps
    self.frame_hw = (info.height, info.width)
    self._frame_width = frame_width

  def __len__(self) -> int:
    return self.info.num_frames

  def __iter__(self) -> Iterator[np.ndarray]:
    for _, f in media.iter_native_frames(self.path, None, kind=self.info.kind,
                                         frame_width=self._frame_width,
                                         num_frames=self.info.num_frames):
      yield media.to_float_rgb(f, self.path)

  def read(self, indices: Sequence[int]) -> np.ndarray:
    frames = media.read_native_frames(self.path, indices, kind=self.info.kind,
                                      frame_width=self._frame_width)
    return np.stack([media.to_float_rgb(f, self.path) for f in frames])

  def read_all(self) -> np.ndarray:
    return np.stack(list(self))

  def __repr__(self) -> str:
    return (f"LazyClip({self.path!r}, frames={len(self)}, "
            f"size={self.frame_hw[0]}x{self.frame_hw[1]})")


def reconstruction_videos(root: str | os.PathLike, split: str = "test", *,
                          layout: str = "vox",
                          cache_dir: str | os.PathLike | None = None,
                          frame_width: int | None = None,
                          skip_bad: bool = False,
                          limit: int | None = None
                          ) -> Iterator[tuple[str, LazyClip]]:
  """Yields ``(clip name, LazyClip)`` for the clips of ``root/split`` sorted
  by name (FOMM's reconstruction: frame 0 is the source, every frame a
  driving frame). Unreadable clips are an error listing them, or skipped with
  a warning when ``skip_bad``. ``limit``: at most this many clips
  (``reconstruction_params.num_videos``).
  """
  index = clips_lib.scan_split(root, split, layout, cache_dir=cache_dir,
                               frame_width=frame_width)
  if index.bad:
    if not skip_bad:
      raise DataError(f"{len(index.bad)} unreadable clip(s) in "
                      f"{index.split_dir}:\n{clips_lib.format_bad(index.bad)}")
    log.warning("skipping %d unreadable clip(s) in %s:\n%s", len(index.bad),
                index.split_dir, clips_lib.format_bad(index.bad))
  for i, info in enumerate(index.clips):
    if limit is not None and i >= limit:
      return
    yield info.name, LazyClip(index.path(i), info, frame_width)


def dataset_params_for(root: str | os.PathLike, layout: str = "vox", **overrides
                       ) -> dict[str, Any]:
  """A ``dataset_params`` dict for ``root`` with FOMM's augmentation defaults
  (handy for tools and tests); ``overrides`` replace keys."""
  params: dict[str, Any] = {
      "root_dir": str(root), "layout": layout,
      "frame_shape": list(clips_lib.DEFAULT_FRAME_SHAPE.get(layout, (256, 256, 3))),
      "id_sampling": True,
      "augmentation_params": {
          "flip_param": {"horizontal_flip": True, "time_flip": True},
          "jitter_param": {"brightness": 0.1, "contrast": 0.1,
                           "saturation": 0.1, "hue": 0.1}},
  }
  params.update(overrides)
  return params

