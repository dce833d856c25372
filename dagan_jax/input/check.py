"""``dagan-jax data check``: validate a dataset before a long run.

For each split (by default the layout's, :data:`.clips.DEFAULT_SPLITS`) it
lists the split folder (LRS2: reads the split's filelist), re-reads every
clip's header and frame count (refreshing the clip-index cache, so that
training starts fast afterwards), checks them against what training needs
(at least ``min_frames`` frames, ``frame_shape`` unless ``resize_frames``,
8-bit RGB), and decodes ``num_sample_frames`` frames of every clip (first, last, and
evenly spaced ones between; the last frame catches truncated videos whose
header promises more frames than they hold), checking each decoded frame as
the training pipeline does. With ``audio``, each clip's sound (its
sidecar ``.wav`` or its video's audio stream,
:mod:`dagan_jax.audio.sources`) must exist, decode, and last as long as
the picture to within one frame, and (with the face extra installed) the
sound must not be plainly out of sync with the lips: each clip's
audio-visual offset is estimated from the mouth opening of the face mesh
against the speech energy over lags of +-15 frames
(:mod:`dagan_jax.audio.sync`), reported per clip, and a confident offset
beyond what viewers notice (185 ms) makes the clip bad. The report counts clips, persons and
frames and lists every bad file by name with what is wrong. A missing or
empty split folder (or LRS2 filelist), and a clip a filelist names that does
not exist, count as bad entries.

:func:`contact_sheet` draws sampled training pairs after augmentation.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import threading
from typing import Any, Sequence

import numpy as np

from dagan_jax.errors import ConfigError, DataError
from dagan_jax.input import clips as clips_lib
from dagan_jax.input.samplers import FileFrameReader


@dataclasses.dataclass
class SplitReport:
  """What :func:`check_dataset` found in one split."""
  split: str
  clips: int = 0
  persons: int = 0
  frames: int = 0
  kinds: dict[str, int] = dataclasses.field(default_factory=dict)
  sizes: dict[str, int] = dataclasses.field(default_factory=dict)
  bad: list[clips_lib.BadClip] = dataclasses.field(default_factory=list)
  seconds: float = 0.0
  #: clip name -> (offset in frames, confidence), with ``audio``.
  offsets: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CheckReport:
  root: str
  layout: str
  frame_shape: tuple[int, int, int]
  resize: bool
  splits: list[SplitReport]
  #: why offsets were not estimated (``audio`` without the face extra)
  sync_note: str | None = None

  @property
  def bad(self) -> list[clips_lib.BadClip]:
    return [b for s in self.splits for b in s.bad]

  @property
  def ok(self) -> bool:
    return not self.bad

  def format(self) -> str:
    h, w, c = self.frame_shape
    lines = [f"dataset {self.root} (layout {self.layout}, frame shape "
             f"{h}x{w}x{c}{', resized to fit' if self.resize else ''})"]
    for s in self.splits:
      kinds = ", ".join(f"{n} {k}" for k, n in sorted(s.kinds.items()))
      sizes = ", ".join(f"{k} ({n})" for k, n in sorted(s.sizes.items()))
      lines.append(f"  {s.split}: {s.clips} clips, {s.persons} persons, "
                   f"{s.frames} frames" + (f" [{kinds}]" if kinds else "")
                   + (f"; sizes {sizes}" if sizes else "")
                   + f"; {len(s.bad)} bad; {s.seconds:.1f} s")
      lines.extend(_offset_lines(s.offsets))
    if self.sync_note:
      lines.append(f"  {self.sync_note}")
    bad = self.bad
    if bad:
      lines.append(f"bad files ({len(bad)}):")
      lines.append(clips_lib.format_bad(bad, limit=len(bad)))
      lines.append(f"FAILED: {len(bad)} bad file(s)")
    else:
      lines.append("OK: no bad files")
    return "\n".join(lines)


#: Clips listed one per line in the offset report; larger splits get a summary.
OFFSET_LINES = 40


def _offset_lines(offsets: dict[str, tuple[int, float]]) -> list[str]:
  if not offsets:
    return []
  from dagan_jax.audio import sync  # pylint: disable=import-outside-toplevel
  sure = {k: v for k, v in offsets.items() if v[1] >= sync.MIN_CONFIDENCE}
  hist = collections.Counter(o for o, _ in sure.values())
  lines = [f"    audio-visual offset (frames, + = sound later; confident "
           f"estimates of {len(sure)}/{len(offsets)} clips): "
           + ", ".join(f"{o:+d}: {n}" for o, n in sorted(hist.items()))]
  if len(offsets) <= OFFSET_LINES:
    for name, (o, c) in sorted(offsets.items()):
      lines.append(f"      {name}: {o:+d} (confidence {c:.1f}"
                   f"{'' if c >= sync.MIN_CONFIDENCE else ', not confident'})")
  return lines


def sample_indices(n: int, k: int) -> list[int]:
  """``k`` frame indices of ``n``: first, last, evenly spaced between."""
  if n <= 0 or k <= 0:
    return []
  if k == 1:
    return [n - 1]
  return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def check_dataset(root: str | os.PathLike, layout: str = "vox", *,
                  splits: Sequence[str] | None = None,
                  frame_shape: Sequence[int] | None = None,
                  resize: bool = False, num_sample_frames: int = 3,
                  min_frames: int = 2,
                  cache_dir: str | os.PathLike | None = None,
                  threads: int = 4, audio: bool = False) -> CheckReport:
  """Checks ``root`` (see the module docstring). Raises :class:`DataError`
  only if ``root`` itself is missing. ``splits``: None checks the layout's
  splits."""
  import time  # pylint: disable=import-outside-toplevel
  if layout not in clips_lib.LAYOUTS:
    raise ConfigError(f"dataset layout {layout!r}; expected one of "
                      f"{clips_lib.LAYOUTS}")
  if not os.path.isdir(root):
    raise DataError(f"dataset root {root} does not exist or is not a folder")
  if splits is None:
    splits = clips_lib.DEFAULT_SPLITS[layout]
  shape = tuple(frame_shape or clips_lib.DEFAULT_FRAME_SHAPE[layout])
  report = CheckReport(str(root), layout, shape, resize, [])
  sync_ok = False
  if audio:
    from dagan_jax.face import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
    sync_ok = mesh_lib.face_available()
    if not sync_ok:
      report.sync_note = ("audio-visual offsets not estimated: the face mesh "
                          'needs the face extra (pip install -e ".[face]")')
  for split in splits:
    t0 = time.perf_counter()
    sr = SplitReport(split)
    report.splits.append(sr)
    try:
      index = clips_lib.scan_split(root, split, layout, cache_dir=cache_dir,
                                   use_cache=False, threads=threads)
    except DataError as e:
      where = clips_lib.split_listing(root, split, layout)
      sr.bad.append(clips_lib.BadClip(str(where), str(e)))
      sr.seconds = time.perf_counter() - t0
      continue
    sel = index.select(min_frames=min_frames,
                       frame_hw=None if resize else shape[:2])
    reader = FileFrameReader(index.split_dir, sel.clips, shape[:2],
                             resize=resize, frame_width=index.frame_width)
    meshes = threading.local()   # a TFLite interpreter per thread

    def decode(cid: int) -> str | None:
      clip = sel.clips[cid]
      try:
        reader.read(cid, sample_indices(clip.num_frames, num_sample_frames))
      except DataError as e:
        return str(e)
      if not audio:
        return None
      from dagan_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
      from dagan_jax.audio import sources, sync  # pylint: disable=import-outside-toplevel
      from dagan_jax.input import clip_faces  # pylint: disable=import-outside-toplevel
      # The sound is decoded once, for the length check and the lip sync.
      source = sources.audio_source(sel.path(cid))
      samples = None
      if source is not None:
        try:
          samples = audio_io.read_speech(source)
        except DataError as e:
          return str(e)
      err = sources.check_clip_audio(sel.path(cid), clip.num_frames, clip.fps,
                                     samples=samples)
      if err or not sync_ok:
        return err
      if not hasattr(meshes, "mesh"):
        from dagan_jax.face import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
        meshes.mesh = mesh_lib.FaceMesh()
      try:
        est = clip_faces.clip_offset(sel.path(cid), meshes.mesh, samples=samples)
      except DataError as e:
        return str(e)
      sr.offsets[clip.name] = (int(est.offset), float(est.confidence))
      return sync.offset_problem(est)

    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
      errors = list(pool.map(decode, range(len(sel.clips))))
    good = []
    sr.bad.extend(sel.bad)
    for cid, err in enumerate(errors):
      if err:
        sr.bad.append(clips_lib.BadClip(sel.path(cid), err))
      else:
        good.append(sel.clips[cid])
    sr.clips = len(good)
    sr.persons = len({c.person for c in good})
    sr.frames = sum(c.num_frames for c in good)
    sr.kinds = dict(collections.Counter(c.kind for c in good))
    sr.sizes = dict(collections.Counter(f"{c.height}x{c.width}" for c in good))
    sr.seconds = time.perf_counter() - t0
  return report


def contact_sheet(path: str | os.PathLike, dataset_params: Any, *,
                  split: str = "train", num_pairs: int = 8, seed: int = 0,
                  tile: int = 128) -> np.ndarray:
  """Writes a PNG of ``num_pairs`` augmented training pairs (column ``i``:
  source above driving) and returns the image ``(H, W, 3)`` uint8.

  Bad clips are skipped (``skip_bad``) so that a sheet can be drawn from a
  dataset that still has problems.
  """
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import pipeline  # pylint: disable=import-outside-toplevel
  ds = pipeline.make_pair_dataset(
      dataset_params, split=split, seed=seed, batch_size=num_pairs,
      num_repeats=1, skip_bad=True, process_index=0, process_count=1,
      read_threads=1)
  batch = next(iter(ds))
  margin = 56
  h, w = batch["source"].shape[1:3]
  th, tw = (tile, max(1, round(tile * w / h))) if h >= w else (max(1, round(tile * h / w)), tile)
  sheet = Image.new("RGB", (margin + num_pairs * (tw + 2), 2 * (th + 2)),
                    (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  for row, key in enumerate(("source", "driving")):
    draw.text((4, row * (th + 2) + th // 2 - 5), key, fill=(0, 0, 0))
    for i in range(num_pairs):
      img = Image.fromarray((np.clip(batch[key][i], 0, 1) * 255 + 0.5).astype(np.uint8))
      sheet.paste(img.resize((tw, th), Image.BILINEAR),
                  (margin + i * (tw + 2), row * (th + 2)))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  sheet.save(path)
  return np.asarray(sheet)
