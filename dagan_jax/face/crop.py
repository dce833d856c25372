"""Square face crops from the mesh: one box per clip, or one per frame.

VoxCeleb-style clip crop (as FOMM's preprocessing cuts VoxCeleb): one fixed
square for the whole clip, so the head moves inside it as it does in the
training videos. Its centre is the median over the frames with a face of
the mesh's bounding-box centre, its side ``scale`` (1.9) times the median
face size (the longer side of the mesh box), and it is raised by ``raise_``
(6%) of the side so the crop holds the hair and not the neck. A per-frame
box (IP_LAP's face crops follow the face in each frame) uses the same rule
frame by frame.

A box is ``[x0, y0, side]`` in continuous pixel coordinates (the left edge
of pixel ``i`` is ``i``) and may reach outside the frame; :func:`crop`
fills what lies outside with zeros.
"""

from __future__ import annotations

import numpy as np

from dagan_jax.errors import DataError

SCALE = 1.9
RAISE = 0.06


def mesh_boxes(points: np.ndarray) -> np.ndarray:
  """(N, 4) ``[x0, y0, x1, y1]`` bounding boxes of (N, P, 2+) points (NaN
  rows give NaN boxes)."""
  xy = np.asarray(points)[..., :2]
  with np.errstate(invalid="ignore"):
    return np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=-1)


def _square(centre: np.ndarray, size: np.ndarray, scale: float,
            raise_: float) -> np.ndarray:
  side = scale * size
  x0 = centre[..., 0] - side / 2
  y0 = centre[..., 1] - side / 2 - raise_ * side
  return np.stack([x0, y0, side], axis=-1).astype(np.float32)


def frame_boxes(points: np.ndarray, *, scale: float = SCALE,
                raise_: float = RAISE) -> np.ndarray:
  """(N, 3) per-frame square boxes ``[x0, y0, side]`` (NaN where no face)."""
  b = mesh_boxes(points)
  centre = (b[:, :2] + b[:, 2:]) / 2
  size = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
  return _square(centre, size, scale, raise_)


def clip_box(points: np.ndarray, found: np.ndarray | None = None, *,
             scale: float = SCALE, raise_: float = RAISE,
             where: str = "clip") -> np.ndarray:
  """One square box ``[x0, y0, side]`` for a whole clip (module docstring).

  ``found`` selects the frames with a face (default: rows without NaN).
  Raises :class:`DataError` naming ``where`` when no frame has a face."""
  points = np.asarray(points)
  if found is None:
    found = np.isfinite(points[..., :2]).all(axis=(1, 2))
  found = np.asarray(found, bool)
  if not found.any():
    raise DataError(f"{where}: no frame has a face; cannot place a crop")
  b = mesh_boxes(points[found])
  centre = np.median((b[:, :2] + b[:, 2:]) / 2, axis=0)
  size = np.median(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))
  return _square(centre, np.asarray(size), scale, raise_)


def crop(frames: np.ndarray, box, size: int | tuple[int, int]) -> np.ndarray:
  """Cuts the square ``box`` out of (N, H, W, C) or (H, W, C) frames and
  resizes it to ``size`` (an int or (height, width)); area averaging when
  shrinking, bilinear otherwise; zeros outside the frame."""
  import cv2  # pylint: disable=import-outside-toplevel
  frames = np.asarray(frames)
  single = frames.ndim == 3
  if single:
    frames = frames[None]
  out_h, out_w = (size, size) if np.isscalar(size) else tuple(size)
  x0, y0, side = (float(v) for v in box)
  if not np.isfinite([x0, y0, side]).all() or side <= 0:
    raise DataError(f"crop box {box} is not a finite square")
  shrinking = side > max(out_h, out_w)
  # Continuous-coordinate affine from the output pixels to the box, turned
  # into cv2's pixel-centre indexing (index = coordinate - 0.5).
  sx, sy = side / out_w, side / out_h
  m = np.array([[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]])
  out = []
  for f in frames:
    if shrinking:
      # INTER_AREA needs a plain resize: cut (with zero padding) first.
      out.append(_cut_then_resize(f, x0, y0, side, (out_w, out_h)))
    else:
      out.append(cv2.warpAffine(f, m, (out_w, out_h),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0))
  out = np.stack(out)
  return out[0] if single else out


def _cut_then_resize(frame: np.ndarray, x0: float, y0: float, side: float,
                     wh: tuple[int, int]) -> np.ndarray:
  import cv2  # pylint: disable=import-outside-toplevel
  h, w = frame.shape[:2]
  ix0, iy0 = int(round(x0)), int(round(y0))
  n = max(1, int(round(side)))
  canvas = np.zeros((n, n) + frame.shape[2:], frame.dtype)
  sx0, sy0 = max(ix0, 0), max(iy0, 0)
  sx1, sy1 = min(ix0 + n, w), min(iy0 + n, h)
  if sx1 > sx0 and sy1 > sy0:
    canvas[sy0 - iy0:sy1 - iy0, sx0 - ix0:sx1 - ix0] = frame[sy0:sy1, sx0:sx1]
  return cv2.resize(canvas, wh, interpolation=cv2.INTER_AREA)
