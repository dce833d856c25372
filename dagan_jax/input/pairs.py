"""Pair lists in DaGAN's CSV format (same- and cross-identity evaluation).

DaGAN's ``data/vox_evaluation.csv`` (same identity) and
``data/vox_cross_id_evaluation.csv`` (cross identity) have the header
``source,driving,frame`` and rows of two absolute paths to frame images
inside FOMM-style frame folders, e.g.
``/data/.../vox1_frames/test/id10282#Zbz058o9j6s#004557#004656.mp4/0000013.png``;
the ``frame`` column is left empty (rows have two fields).
``vox_cross_id_evaluation_best_frame.csv`` adds a third path column
``best_frame``; ``vox256.csv`` holds clip names and ``frame`` = ``0.0``;
``vox_cross_id_animate.csv`` names its columns ``source_frame,driving_video``.

:func:`read_pairs_csv` reads all of these: the first column named ``source``
or ``source_frame`` is the source, the first named ``driving``,
``driving_video`` or ``driving_frame`` the driving; other columns go to
``PairRow.extra`` (missing trailing fields read as ``''``).
:func:`write_pairs_csv` writes the header ``source,driving`` plus the extra
columns of the rows (``frame`` when there are none, as DaGAN's files do) and
one full row per pair (empty fields stay empty), which pandas and this reader
read back unchanged.

Paths in these files are from the authors' machines. :func:`resolve_frame`
maps a reference onto a local dataset root: it keeps the clip name (the
folder holding the frame) and the frame number (the digits of the file name,
taken as the 0-based frame index), and finds ``root/<split>/<clip>`` whether
the clip is stored as a frame folder or as a video. ``<split>`` is the
``train``/``test`` folder named in the reference when there is one (DaGAN's
paths and relative paths like ``test/<clip>/0000013.png``), else the
``split`` argument.
"""

from __future__ import annotations

import csv
import os
import re
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from dagan_jax.errors import DataError
from dagan_jax.input import media

SOURCE_COLUMNS = ("source", "source_frame")
DRIVING_COLUMNS = ("driving", "driving_video", "driving_frame")


class PairRow(NamedTuple):
  """One pair: ``source`` and ``driving`` references and extra columns."""
  source: str
  driving: str
  extra: Mapping[str, str] = {}


def read_pairs_csv(path: str | os.PathLike) -> list[PairRow]:
  """Reads a DaGAN pair list (see the module docstring)."""
  try:
    with open(path, newline="") as f:
      rows = list(csv.reader(f))
  except OSError as e:
    raise DataError(f"cannot read pair list {path}: {e.strerror or e}") from e
  except (csv.Error, UnicodeDecodeError) as e:
    raise DataError(f"pair list {path} is not a readable CSV file: {e}") from e
  if not rows:
    raise DataError(f"pair list {path} is empty (expected a header "
                    f"'source,driving,frame')")
  header = [h.strip() for h in rows[0]]
  src_col = next((header.index(c) for c in SOURCE_COLUMNS if c in header), None)
  drv_col = next((header.index(c) for c in DRIVING_COLUMNS if c in header), None)
  if src_col is None or drv_col is None:
    raise DataError(f"pair list {path}: header {header} needs a source column "
                    f"({'/'.join(SOURCE_COLUMNS)}) and a driving column "
                    f"({'/'.join(DRIVING_COLUMNS)})")
  out = []
  for line, row in enumerate(rows[1:], start=2):
    if not row or all(not x.strip() for x in row):
      continue
    if len(row) > len(header):
      raise DataError(f"pair list {path} line {line}: {len(row)} fields but the "
                      f"header has {len(header)}")
    row = [x.strip() for x in row] + [""] * (len(header) - len(row))
    if not row[src_col] or not row[drv_col]:
      raise DataError(f"pair list {path} line {line}: empty source or driving")
    extra = {h: v for i, (h, v) in enumerate(zip(header, row))
             if i not in (src_col, drv_col)}
    out.append(PairRow(row[src_col], row[drv_col], extra))
  return out


def write_pairs_csv(path: str | os.PathLike,
                    rows: Iterable[PairRow | Sequence[str] | Mapping[str, Any]]
                    ) -> None:
  """Writes a pair list in DaGAN's format (see the module docstring).

  ``rows``: :class:`PairRow`, ``(source, driving)`` tuples or dicts with
  ``source`` and ``driving`` keys (other keys become extra columns).
  """
  norm: list[PairRow] = []
  for r in rows:
    if isinstance(r, PairRow):
      norm.append(r)
    elif isinstance(r, Mapping):
      extra = {k: "" if v is None else str(v) for k, v in r.items()
               if k not in ("source", "driving")}
      norm.append(PairRow(str(r["source"]), str(r["driving"]), extra))
    else:
      src, drv, *rest = r
      if rest:
        raise ValueError("tuples must be (source, driving); use PairRow or a "
                         "dict for extra columns")
      norm.append(PairRow(str(src), str(drv)))
  extra_cols: list[str] = []
  for r in norm:
    for k in r.extra:
      if k not in extra_cols:
        extra_cols.append(k)
  if not extra_cols:
    extra_cols = ["frame"]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["source", "driving"] + extra_cols)
    for r in norm:
      w.writerow([r.source, r.driving] + [r.extra.get(k, "") for k in extra_cols])


class FrameRef(NamedTuple):
  """A resolved reference: the clip, and a frame index or a frame file.

  ``frame_file`` is set when the frame exists as its own image file;
  ``frame_index`` when it must be read from ``clip_path`` (a video, strip or
  folder); both None when the reference names a whole clip.
  """
  clip_path: str
  frame_index: int | None
  frame_file: str | None


_FRAME_RE = re.compile(r"(\d+)$")


def resolve_frame(ref: str, root: str | os.PathLike, split: str = "test") -> FrameRef:
  """Maps a pair-list reference onto ``root/split`` (module docstring)."""
  parts = [p for p in ref.replace("\\", "/").split("/") if p]
  if not parts:
    raise DataError(f"empty frame reference {ref!r}")
  last = parts[-1]
  stem, ext = os.path.splitext(last)
  is_frame = ext.lower() in media.IMAGE_EXTS and len(parts) >= 2 and _FRAME_RE.search(stem)
  clip = parts[-2] if is_frame else last
  at = len(parts) - (3 if is_frame else 2)
  if at >= 0 and parts[at] in ("train", "test"):
    split = parts[at]
  clip_path = os.path.join(root, split, clip)
  if not os.path.exists(clip_path):
    if os.path.isfile(ref):  # A local path outside the dataset root.
      return FrameRef(os.path.dirname(ref), None, ref)
    raise DataError(f"pair list refers to {ref!r}: clip {clip!r} not found in "
                    f"{os.path.join(root, split)}")
  if not is_frame:
    return FrameRef(clip_path, None, None)
  if os.path.isdir(clip_path):
    f = os.path.join(clip_path, last)
    if os.path.isfile(f):
      return FrameRef(clip_path, None, f)
  return FrameRef(clip_path, int(_FRAME_RE.search(stem).group(1)), None)


def read_ref_frame(ref: str, root: str | os.PathLike, split: str = "test", *,
                   default_index: int = 0) -> np.ndarray:
  """The ``(H, W, 3)`` float32 frame a reference points at (a whole-clip
  reference gives frame ``default_index``)."""
  r = resolve_frame(ref, root, split)
  if r.frame_file is not None:
    return media.read_image(r.frame_file)
  idx = default_index if r.frame_index is None else r.frame_index
  return media.read_frames(r.clip_path, [idx])[0]


def read_pair_frames(row: PairRow, root: str | os.PathLike, split: str = "test"
                     ) -> tuple[np.ndarray, np.ndarray]:
  """``(source, driving)`` frames of a pair-list row, each ``(H, W, 3)``.

  Whole-clip references (``vox256.csv``) use the row's ``frame`` column
  (default 0) as the frame index.
  """
  frame = row.extra.get("frame", "") if row.extra else ""
  try:
    idx = int(float(frame)) if frame else 0
  except ValueError:
    raise DataError(f"pair ({row.source}, {row.driving}): frame column "
                    f"{frame!r} is not a number") from None
  return (read_ref_frame(row.source, root, split, default_index=idx),
          read_ref_frame(row.driving, root, split, default_index=idx))
