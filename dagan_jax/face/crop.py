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


def box_pixels(box) -> tuple[int, int, int]:
  """``[x0, y0, side]`` as whole pixels (nearest, halves up): crops are cut
  on the pixel grid, then resized, so a box the size of the output is a
  plain slice."""
  x0, y0, side = (int(np.floor(float(v) + 0.5)) for v in box)
  return x0, y0, side


def crop(frames: np.ndarray, box, size: int | tuple[int, int],
         where: str = "frame") -> np.ndarray:
  """Cuts the square ``box`` out of (N, H, W, C) or (H, W, C) frames (zeros
  where it leaves the frame) and resizes it to ``size`` (an int or
  (height, width)): area averaging when shrinking, bilinear otherwise; the
  dtype is kept (crop uint8 frames, then convert)."""
  import cv2  # pylint: disable=import-outside-toplevel
  frames = np.asarray(frames)
  single = frames.ndim == 3
  if single:
    frames = frames[None]
  out_h, out_w = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
  if not np.isfinite(np.asarray(box, np.float64)).all():
    raise DataError(f"{where}: crop box {list(box)} is not a finite square")
  x0, y0, side = box_pixels(box)
  h, w = frames.shape[1:3]
  ys, ye, xs, xe = max(y0, 0), min(y0 + side, h), max(x0, 0), min(x0 + side, w)
  if side < 1 or ys >= ye or xs >= xe:
    raise DataError(f"{where}: crop box {[float(v) for v in box]} does not "
                    f"overlap the {h}x{w} frame")
  cut = np.zeros((len(frames), side, side) + frames.shape[3:], frames.dtype)
  cut[:, ys - y0:ye - y0, xs - x0:xe - x0] = frames[:, ys:ye, xs:xe]
  if (side, side) != (out_h, out_w):
    interp = cv2.INTER_AREA if side * side > out_h * out_w else cv2.INTER_LINEAR
    cut = np.stack([cv2.resize(f, (out_w, out_h), interpolation=interp) for f in cut])
  return cut[0] if single else cut
