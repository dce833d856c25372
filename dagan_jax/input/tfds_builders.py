"""TFDS builders for the VoxCeleb and HDTF layouts (ArrayRecord, no TensorFlow).

``dagan_vox_frames`` and ``dagan_hdtf_frames`` read ``manual_dir`` = a
dataset root of the ``'vox'`` or ``'hdtf'`` layout (:mod:`dagan_jax.input.clips`)
and write ArrayRecord files with **one record per frame**::

  {'clip': str, 'person': str, 'index': int32, 'frame': encoded image bytes}

Frames of a clip are consecutive records (``disable_shuffling=True``: records
are stored in key order, and keys count frames clip by clip in name order), so
a sampler reads and decodes exactly the frames it needs, two for a pair. The
clip table ``[name, person, kind, num_frames, height, width, fps, offset]`` of
each split sits in the dataset's ``metadata.json`` (``info.metadata['clips']``):
start-up reads one JSON file. Frames from image folders keep their original
PNG/JPEG bytes; frames decoded from videos, GIFs, strips or ``.npy`` are
encoded as PNG (config ``png``, lossless, the default) or JPEG quality 95
(config ``jpeg``, about 4x smaller). Every frame is decoded and checked while
building (8-bit RGB, one size per clip, ``frame_shape`` when given), so a
built dataset holds no unreadable frames; a bad clip is an error naming it,
or with ``skip_bad`` is left out and listed in ``info.metadata['excluded']``.
Clips are buffered whole while being checked (fine for VoxCeleb/HDTF clips).

Reading back uses ``deserialize_method=RAW_BYTES`` and parses the
``tf.train.Example`` protobuf with TFDS's bundled proto module, never
TensorFlow. Each read checks that the record is the expected clip and frame.

Build: ``dagan-jax data build-tfds --root ROOT --layout vox --data-dir DIR``
or :func:`build_tfds`. Train from it with ``dataset_params.layout='tfds'``,
``root_dir=DIR`` and ``tfds_name='dagan_vox_frames'`` (or
``'dagan_vox_frames/jpeg'``). Building is single-process Python (about as
fast as decoding every frame once); for 100k clips use TFDS's Beam support or
build per shard of clips.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from dagan_jax.errors import DataError
from dagan_jax.input import clips as clips_lib
from dagan_jax.input import media
from dagan_jax.input.samplers import check_frame

log = logging.getLogger("dagan_jax.input")

_HOMEPAGE = "https://github.com/harlanhong/CVPR2022-DaGAN"


class _FramesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared builder of one-record-per-frame clip datasets."""

  LAYOUT = "vox"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "One record per frame; clip table in metadata."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="png", description=(
          "Frames decoded from videos are stored as PNG (lossless).")),
      tfds.core.BuilderConfig(name="jpeg", description=(
          "Frames decoded from videos are stored as JPEG, quality 95.")),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Point manual_dir at a dataset root holding train/ and test/ folders, "
      "one entry (video file or folder of frames) per clip.")

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS derives this from the module's package via the importlib_resources
    # backport, which is not installed; this file is the answer it wants.
    return epath.Path(__file__)

  def __init__(self, *, skip_bad: bool = False,
               frame_shape: Sequence[int] | None = None,
               cache_dir: str | os.PathLike | None = None,
               splits: Sequence[str] = ("train", "test"), **kwargs):
    self._skip_bad = skip_bad
    self._frame_hw = tuple(frame_shape[:2]) if frame_shape is not None else None
    self._cache_dir = cache_dir
    self._splits = tuple(splits)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f"Talking-head clips ({self.LAYOUT} layout), one record "
                     f"per frame, for dagan_jax."),
        features=tfds.features.FeaturesDict({
            "clip": tfds.features.Text(),
            "person": tfds.features.Text(),
            "index": np.int32,
            "frame": tfds.features.Image(shape=(None, None, 3)),
        }),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
        homepage=_HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    root = dl_manager.manual_dir
    self.info.metadata["layout"] = self.LAYOUT
    self.info.metadata["clips"] = {}
    self.info.metadata["excluded"] = {}
    return {split: self._generate_examples(str(root), split)
            for split in self._splits}

  def _generate_examples(self, root: str, split: str) -> Iterator[tuple[int, dict]]:
    index = clips_lib.scan_split(root, split, self.LAYOUT,
                                 cache_dir=self._cache_dir)
    sel = index.select(min_frames=1, frame_hw=self._frame_hw)
    table: list[list[Any]] = []
    excluded = [list(b) for b in sel.bad]
    self.info.metadata["clips"][split] = table
    self.info.metadata["excluded"][split] = excluded
    if sel.bad and not self._skip_bad:
      raise DataError(f"{len(sel.bad)} bad clip(s) in {index.split_dir}:\n"
                      f"{clips_lib.format_bad(sel.bad)}")
    fmt = self.builder_config.name if self.builder_config else "png"
    key = 0
    for cid, clip in enumerate(sel.clips):
      path = sel.path(cid)
      try:
        encoded, hw = _encode_clip(path, clip, fmt, self._frame_hw)
      except DataError as e:
        if not self._skip_bad:
          raise
        log.warning("leaving out bad clip (skip_bad): %s", e)
        excluded.append([path, str(e)])
        continue
      table.append([clip.name, clip.person, clip.kind, len(encoded), hw[0],
                    hw[1], clip.fps, key])
      for i, data in enumerate(encoded):
        yield key, {"clip": clip.name, "person": clip.person, "index": i,
                    "frame": data}
        key += 1
    if not table:
      raise DataError(f"no usable clips in {index.split_dir}")


def _encode_clip(path: str, clip: clips_lib.ClipInfo, fmt: str,
                 frame_hw: tuple[int, int] | None
                 ) -> tuple[list[bytes], tuple[int, int]]:
  """Every frame of a clip as checked encoded bytes, and the frame size."""
  import cv2  # pylint: disable=import-outside-toplevel
  out: list[bytes] = []
  hw = frame_hw
  if clip.kind == "folder":
    for name in media.list_frame_files(path):
      f = os.path.join(path, name)
      with open(f, "rb") as fh:
        data = fh.read()
      frame = check_frame(media.decode_image_bytes(data, f), f, hw)
      hw = hw or frame.shape[:2]
      out.append(data)
  else:
    for i, frame in media.iter_native_frames(path, None, kind=clip.kind):
      frame = check_frame(frame, f"{path} frame {i}", hw)
      hw = hw or frame.shape[:2]
      bgr = np.ascontiguousarray(frame[..., ::-1])
      if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
      else:
        ok, buf = cv2.imencode(".png", bgr)
      if not ok:
        raise DataError(f"{path} frame {i}: cannot encode as {fmt}")
      out.append(buf.tobytes())
  if len(out) != clip.num_frames:
    raise DataError(f"{path}: decoded {len(out)} frames; the header says "
                    f"{clip.num_frames}")
  return out, tuple(hw)


class DaganVoxFrames(_FramesBuilder):
  """VoxCeleb clips as FOMM's preprocessing writes them (module docstring)."""
  LAYOUT = "vox"


class DaganHdtfFrames(_FramesBuilder):
  """HDTF frame folders (module docstring)."""
  LAYOUT = "hdtf"


BUILDERS = {"vox": DaganVoxFrames, "hdtf": DaganHdtfFrames}


def build_tfds(root: str | os.PathLike, layout: str,
               data_dir: str | os.PathLike, *, config: str = "png",
               skip_bad: bool = False,
               frame_shape: Sequence[int] | None = None,
               cache_dir: str | os.PathLike | None = None,
               splits: Sequence[str] = ("train", "test")) -> pathlib.Path:
  """Builds ``dagan_<layout>_frames/<config>`` into ``data_dir`` from ``root``.

  Returns the dataset directory (``data_dir/<name>/<config>/<version>``).
  """
  if layout not in BUILDERS:
    raise DataError(f"layout {layout!r}; expected one of {sorted(BUILDERS)}")
  builder = BUILDERS[layout](data_dir=str(data_dir), config=config,
                             file_format="array_record",
                             skip_bad=skip_bad, frame_shape=frame_shape,
                             cache_dir=cache_dir, splits=splits)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  return pathlib.Path(builder.data_dir)


def _dataset_dir(data_dir: str | os.PathLike, name: str) -> pathlib.Path:
  """``data_dir/<builder>/<config>/<newest version>`` for ``name`` =
  ``builder`` or ``builder/config`` (config default ``png``)."""
  builder, _, config = name.partition("/")
  if builder not in {b.name for b in BUILDERS.values()}:
    raise DataError(f"unknown TFDS dataset {builder!r}; expected one of "
                    f"{sorted(b.name for b in BUILDERS.values())}")
  base = pathlib.Path(data_dir) / builder / (config or "png")
  versions = sorted((p for p in base.glob("*.*.*")
                     if (p / "dataset_info.json").is_file()),
                    key=lambda p: tuple(int(x) for x in p.name.split(".")))
  if not versions:
    raise DataError(f"TFDS dataset {name} is not built in {data_dir} (no "
                    f"{base}/<version>/dataset_info.json); build it with "
                    f"`dagan-jax data build-tfds`")
  return versions[-1]


class TfdsFrameReader:
  """Reads checked frames of a built dataset by (clip id, frame index).

  Opens the ArrayRecord data source lazily, so it pickles small and each
  Grain worker opens its own.
  """

  def __init__(self, dataset_dir: str, split: str, names: Sequence[str],
               offsets: Sequence[int], num_frames: Sequence[int],
               frame_hw: Sequence[int] | None, resize: bool = False):
    self.dataset_dir = str(dataset_dir)
    self.split = split
    self.names = list(names)
    self.offsets = list(int(o) for o in offsets)
    self.num_frames = list(int(n) for n in num_frames)
    self.frame_hw = tuple(frame_hw) if frame_hw is not None else None
    self.resize = resize
    self._source = None

  def __getstate__(self) -> dict:
    state = dict(self.__dict__)
    state["_source"] = None
    return state

  def __repr__(self) -> str:
    return (f"TfdsFrameReader({self.dataset_dir!r}, {self.split!r}, "
            f"clips={len(self.names)})")

  def subset(self, names: Sequence[str]) -> "TfdsFrameReader":
    pos = {n: i for i, n in enumerate(self.names)}
    idx = [pos[n] for n in names]
    return TfdsFrameReader(self.dataset_dir, self.split, names,
                           [self.offsets[i] for i in idx],
                           [self.num_frames[i] for i in idx], self.frame_hw,
                           self.resize)

  def _src(self):
    if self._source is None:
      builder = tfds.builder_from_directory(self.dataset_dir)
      self._source = builder.as_data_source(
          split=self.split,
          deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    return self._source

  def describe(self, clip_id: int) -> str:
    return f"{self.dataset_dir}[{self.split}] clip {self.names[clip_id]}"

  def read(self, clip_id: int, indices: Sequence[int]) -> list[np.ndarray]:
    from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=import-outside-toplevel
    name = self.names[clip_id]
    got = {}
    for i in set(int(i) for i in indices):
      where = f"{self.describe(clip_id)} frame {i}"
      if not 0 <= i < self.num_frames[clip_id]:
        raise DataError(f"{where}: the clip has {self.num_frames[clip_id]} frames")
      try:
        raw = self._src()[self.offsets[clip_id] + i]
        feats = tf_example_pb2.Example.FromString(raw).features.feature
        rec_clip = feats["clip"].bytes_list.value[0].decode()
        rec_index = int(feats["index"].int64_list.value[0])
        data = feats["frame"].bytes_list.value[0]
      except (IndexError, KeyError, ValueError, OSError) as e:
        raise DataError(f"{where}: cannot read the record: {e}") from e
      if (rec_clip, rec_index) != (name, i):
        raise DataError(f"{where}: record holds {rec_clip} frame {rec_index}; "
                        f"the dataset's clip table does not match its records")
      got[i] = check_frame(media.decode_image_bytes(data, where), where,
                           self.frame_hw, self.resize)
    return [got[int(i)] for i in indices]


def open_tfds_split(data_dir: str | os.PathLike, name: str, split: str, *,
                    frame_hw: Sequence[int] | None, resize: bool = False
                    ) -> tuple[clips_lib.ClipIndex, TfdsFrameReader]:
  """The clip table of a built split (from its metadata) and a reader."""
  ddir = _dataset_dir(data_dir, name)
  builder = tfds.builder_from_directory(str(ddir))
  meta = builder.info.metadata or {}
  table = (meta.get("clips") or {}).get(split)
  if table is None:
    raise DataError(f"TFDS dataset {ddir} has no split {split!r} (splits: "
                    f"{sorted((meta.get('clips') or {}).keys())})")
  if not table:
    raise DataError(f"TFDS dataset {ddir} split {split!r} holds no clips")
  infos = [clips_lib.ClipInfo(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]),
                              r[6], "RGB") for r in table]
  index = clips_lib.ClipIndex(
      pathlib.Path(ddir) / split, meta.get("layout", "vox"), infos, [],
      {"cached": len(infos), "probed": 0, "seconds": 0.0})
  reader = TfdsFrameReader(str(ddir), split, [c.name for c in infos],
                           [r[7] for r in table], [c.num_frames for c in infos],
                           frame_hw, resize)
  return index, reader
