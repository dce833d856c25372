"""Pictures for people: keypoints drawn on frames, depth maps, image grids.

Pure numpy on the host (no plotting library). Images are (H, W, 3) float in
[0, 1]; keypoints (K, 2) as (x, y) in [-1, 1] (pixel ``(x + 1) / 2 * (W - 1)``
, the inverse of :func:`dagan_jax.ops.make_coordinate_grid`).
"""

from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np


def keypoint_colors(num_kp: int) -> np.ndarray:
  """(K, 3) distinct colours sweeping the hue circle (like ``gist_rainbow``)."""
  hues = np.linspace(0.0, 0.83, max(num_kp, 1))
  return np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues[:num_kp]],
                  np.float32).reshape(num_kp, 3)


def to_pixels(kp: np.ndarray, height: int, width: int) -> np.ndarray:
  """(K, 2) normalised (x, y) -> (K, 2) pixel (col, row) coordinates."""
  kp = np.asarray(kp, np.float32)
  return np.stack([(kp[:, 0] + 1) / 2 * (width - 1),
                   (kp[:, 1] + 1) / 2 * (height - 1)], axis=-1)


def draw_keypoints(image: np.ndarray, kp: np.ndarray, radius: int = 3,
                   colors: np.ndarray | None = None) -> np.ndarray:
  """A copy of ``image`` with filled discs at the keypoints."""
  img = np.array(image, np.float32, copy=True)
  h, w = img.shape[:2]
  pts = to_pixels(kp, h, w)
  colors = keypoint_colors(len(pts)) if colors is None else colors
  yy, xx = np.mgrid[0:h, 0:w]
  for (cx, cy), color in zip(pts, colors):
    if not (np.isfinite(cx) and np.isfinite(cy)):
      continue
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2
    img[disc] = color
  return img


def colorize(values: np.ndarray, lo: float | None = None,
             hi: float | None = None) -> np.ndarray:
  """(H, W) or (H, W, 1) scalars -> (H, W, 3) with a perceptual-ish ramp
  (dark blue -> green -> yellow), normalised to [lo, hi] (default min/max)."""
  v = np.asarray(values, np.float32)
  if v.ndim == 3:
    v = v[..., 0]
  lo = float(np.nanmin(v)) if lo is None else lo
  hi = float(np.nanmax(v)) if hi is None else hi
  t = np.clip((v - lo) / max(hi - lo, 1e-8), 0.0, 1.0)
  stops = np.array([[0.27, 0.00, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55],
                    [0.37, 0.79, 0.38], [0.99, 0.91, 0.14]], np.float32)
  pos = t * (len(stops) - 1)
  i = np.minimum(pos.astype(int), len(stops) - 2)
  f = (pos - i)[..., None]
  return (1 - f) * stops[i] + f * stops[i + 1]


def to_rgb(image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
  """Any (H, W), (H, W, 1) or (H, W, 3) map -> (h, w, 3), nearest-resized."""
  img = np.asarray(image, np.float32)
  if img.ndim == 2 or img.shape[-1] == 1:
    img = colorize(img)
  if size is not None and img.shape[:2] != tuple(size):
    rows = (np.arange(size[0]) * img.shape[0] // size[0])
    cols = (np.arange(size[1]) * img.shape[1] // size[1])
    img = img[rows][:, cols]
  return img


def grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2,
         size: tuple[int, int] | None = None) -> np.ndarray:
  """Tiles a table of images (each row a list) into one (H, W, 3) image."""
  if size is None:
    size = np.asarray(rows[0][0]).shape[:2]
  ncol = max(len(r) for r in rows)
  h, w = size
  out = np.ones((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3),
                np.float32)
  for r, row in enumerate(rows):
    for c, img in enumerate(row):
      y, x = pad + r * (h + pad), pad + c * (w + pad)
      out[y:y + h, x:x + w] = to_rgb(img, size)
  return out


def save_png(path, image: np.ndarray) -> None:
  """Writes an (H, W, 3) float [0, 1] image as 8-bit PNG."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  img = (np.clip(np.asarray(image, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
  Image.fromarray(img).save(path)
