"""Evaluation pair lists in DaGAN's CSV format.

DaGAN's ``data/vox_evaluation.csv`` (same identity) and
``data/vox_cross_id_evaluation.csv`` (cross identity) have the header
``source,driving,frame`` and rows of **two** fields: the path of a source
frame and the path of a driving frame, in the frames layout
``<root>/test/<video>.mp4/<7-digit index>.png`` (the ``frame`` column is left
empty).  Same-identity rows take both frames from one video; cross-identity
rows take them from videos of two different persons (the person is the video
name up to the first ``#``, e.g. ``id10283``).  DaGAN's
``vox_cross_id_animate.csv`` uses ``source_frame,driving_video`` with a whole
driving video.

Reading here (:func:`read_pair_list`, on top of the project's one CSV reader
:func:`dagan_jax.input.pairs.read_pairs_csv`) accepts these headers, and
turns each path into a :class:`FrameRef` ``(video, frame)``:

* ``.../<video>/<digits>.png|jpg`` -> ``(".../<video>", int(digits))``; the
  video may be a folder of frames *or* an mp4 file of the same name (both are
  layouts of FOMM's preprocessing), the index is 0-based.
* any other path -> ``(path, None)``: the whole video.
* a row's ``frame`` value (FOMM-style lists) picks the source frame when the
  source is a whole video.

Relative paths are taken under the data root given to :func:`resolve_video`;
absolute paths that do not exist (DaGAN's lists carry the authors' paths,
``/data/.../vox1_frames/test/<video>/<frame>.png``) are re-rooted from their
split folder (``train`` or ``test``) on.

The files this project ships, ``data/vox_mini_test_pairs.csv`` and
``data/vox_mini_test_cross_id_pairs.csv``, were written by
:func:`make_pair_lists` with paths relative to the data root.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import Iterable, Sequence

import numpy as np

from dagan_jax.errors import DataError
from dagan_jax.input.pairs import read_pairs_csv

_FRAME_RE = re.compile(r"^(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)
_SPLITS = ("test", "train")


@dataclasses.dataclass(frozen=True)
class FrameRef:
  """A video (folder of frames or video file) and a 0-based frame index, or
  ``frame=None`` for the whole video."""

  video: str
  frame: int | None = None

  def __str__(self) -> str:
    return self.video if self.frame is None else f"{self.video}/{self.frame:07d}.png"


@dataclasses.dataclass(frozen=True)
class Pair:
  """One row of a pair list."""

  source: FrameRef
  driving: FrameRef

  @property
  def name(self) -> str:
    """A readable id: ``<source video>[<frame>] <- <driving video>[<frame>]``."""
    def short(r: FrameRef) -> str:
      base = os.path.basename(r.video.rstrip("/"))
      return base if r.frame is None else f"{base}[{r.frame}]"
    return f"{short(self.source)}<-{short(self.driving)}"


def parse_frame_ref(path: str) -> FrameRef:
  """``'.../<video>/0000013.png'`` -> ``FrameRef('.../<video>', 13)``; any other
  path is a whole video."""
  path = path.strip()
  head, tail = os.path.split(path.rstrip("/"))
  m = _FRAME_RE.match(tail)
  if m and head:
    return FrameRef(head, int(m.group(1)))
  return FrameRef(path.rstrip("/"), None)


def person_id(video: str) -> str:
  """The person of a FOMM-named video: its base name up to the first ``#``."""
  return os.path.basename(video.rstrip("/")).split("#", 1)[0]


def read_pair_list(path: str | os.PathLike) -> list[Pair]:
  """Rows of a DaGAN / FOMM pair list as :class:`Pair` objects.

  The CSV is read by :func:`dagan_jax.input.pairs.read_pairs_csv` (headers
  ``source,driving[,frame|best_frame]``, ``source_frame,driving_video``;
  errors name the file and line); each field is then parsed with
  :func:`parse_frame_ref`, and a whole-video source takes its frame from the
  ``frame`` column when that is filled in. A list with no rows is an error.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"pair list not found: {path}")
  pairs = []
  for line, row in enumerate(read_pairs_csv(path), start=2):
    source = parse_frame_ref(row.source)
    frame = (row.extra or {}).get("frame", "")
    if source.frame is None and frame:
      try:
        source = FrameRef(source.video, int(float(frame)))
      except ValueError as e:
        raise DataError(
            f"pair list {path}, row {line - 1}: frame {frame!r} is not a number") from e
    pairs.append(Pair(source, parse_frame_ref(row.driving)))
  if not pairs:
    raise DataError(f"pair list {path} has no rows")
  return pairs


def resolve_video(root: str | os.PathLike | None, video: str) -> str:
  """Path of ``video`` under the data root.

  Relative paths are joined to ``root``; an absolute path is used when it
  exists, else re-rooted from its last ``train``/``test`` component (DaGAN's
  lists carry the authors' absolute paths).  Raises :class:`DataError` when
  the result does not exist.
  """
  candidates = []
  if not os.path.isabs(video):
    candidates.append(os.path.join(os.fspath(root or "."), video))
  else:
    candidates.append(video)
    parts = video.split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
      if parts[i] in _SPLITS and root is not None:
        candidates.append(os.path.join(os.fspath(root), *parts[i:]))
        break
  for c in candidates:
    if os.path.exists(c):
      return c
  raise DataError(f"video {video!r} not found (looked at {', '.join(candidates)})")


# ---------------------------------------------------------------------------
# Writing pair lists.


def write_pair_list(path: str | os.PathLike, pairs: Iterable[Pair]) -> None:
  """Write ``pairs`` in DaGAN's format: header ``source,driving,frame`` and two
  fields per row (frame paths ``<video>/<7-digit>.png`` or whole videos)."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["source", "driving", "frame"])
    for p in pairs:
      w.writerow([str(p.source), str(p.driving)])


def make_same_id_pairs(videos: dict[str, int], pairs_per_video: int,
                       seed: int = 0) -> list[Pair]:
  """Same-identity frame pairs: source and driving frames of one video.

  ``videos`` maps a video path (as it should appear in the list) to its
  number of frames.  For each video (sorted), ``pairs_per_video`` pairs of two
  distinct frames drawn with ``numpy.random.default_rng(seed)``.
  """
  rng = np.random.default_rng(seed)
  pairs = []
  for video in sorted(videos):
    n = videos[video]
    if n < 2:
      raise DataError(f"video {video} has {n} frame(s); a same-identity pair needs 2")
    for _ in range(pairs_per_video):
      s, d = rng.choice(n, size=2, replace=False)
      pairs.append(Pair(FrameRef(video, int(s)), FrameRef(video, int(d))))
  return pairs


def make_cross_id_pairs(videos: dict[str, int], pairs_per_video: int,
                        seed: int = 0, whole_driving_video: bool = False) -> list[Pair]:
  """Cross-identity pairs: for each video (sorted) as source, ``pairs_per_video``
  rows whose driving frame (or whole video, ``whole_driving_video``) comes
  from a video of another person (``person_id``), drawn with
  ``numpy.random.default_rng(seed)``."""
  rng = np.random.default_rng(seed)
  names = sorted(videos)
  pairs = []
  for video in names:
    others = [v for v in names if person_id(v) != person_id(video)]
    if not others:
      raise DataError(f"no video of a person other than {person_id(video)} for a cross-identity pair")
    for _ in range(pairs_per_video):
      s = int(rng.integers(videos[video]))
      other = others[int(rng.integers(len(others)))]
      driving = FrameRef(other, None if whole_driving_video else int(rng.integers(videos[other])))
      pairs.append(Pair(FrameRef(video, s), driving))
  return pairs


def count_frames(path: str) -> int:
  """Frames of a video: files ``<digits>.png|jpg`` in a folder, or decoded
  frames of a video file (OpenCV)."""
  if os.path.isdir(path):
    return sum(1 for f in os.listdir(path) if _FRAME_RE.match(f))
  import cv2
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    raise DataError(f"cannot open video {path}")
  n = 0
  while cap.grab():
    n += 1
  cap.release()
  return n


def make_pair_lists(root: str | os.PathLike, split: str, out_dir: str | os.PathLike,
                    prefix: str, pairs_per_video: int = 8, seed: int = 0) -> list[str]:
  """Write ``<prefix>_pairs.csv`` (same identity) and
  ``<prefix>_cross_id_pairs.csv`` (cross identity) for ``root/split``.

  Paths in the lists are relative to ``root`` (``<split>/<video>/<frame>.png``).
  Returns the written paths.
  """
  split_dir = os.path.join(os.fspath(root), split)
  if not os.path.isdir(split_dir):
    raise DataError(f"split folder not found: {split_dir}")
  videos = {f"{split}/{v}": count_frames(os.path.join(split_dir, v))
            for v in sorted(os.listdir(split_dir))}
  if not videos:
    raise DataError(f"no videos in {split_dir}")
  same = os.path.join(os.fspath(out_dir), f"{prefix}_pairs.csv")
  cross = os.path.join(os.fspath(out_dir), f"{prefix}_cross_id_pairs.csv")
  write_pair_list(same, make_same_id_pairs(videos, pairs_per_video, seed))
  write_pair_list(cross, make_cross_id_pairs(videos, pairs_per_video, seed))
  return [same, cross]


def frame_indices(ref: FrameRef) -> Sequence[int] | None:
  """The indices to read for ``ref``: ``[frame]`` or ``None`` (all frames)."""
  return None if ref.frame is None else [ref.frame]
