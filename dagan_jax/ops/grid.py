"""Normalised coordinate grids.

Convention (FOMM's ``make_coordinate_grid``, used everywhere in dagan_jax):
a grid of spatial size ``(H, W)`` holds, at row ``i`` and column ``j``, the
pair ``(x, y)`` with

  x = 2 * j / (W - 1) - 1,   y = 2 * i / (H - 1) - 1,

so ``x`` runs along the width, ``y`` along the height, and the centres of the
first and last pixels sit exactly at -1 and +1.  Note that this is the
``align_corners=True`` placement of pixel centres, while the official code
samples with ``grid_sample(..., align_corners=False)``: a warp by the identity
grid therefore resamples the image very slightly (scale (W-1)/W about the
centre), exactly as the PyTorch code does.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def make_coordinate_grid(spatial_size: tuple[int, int],
                         dtype=jnp.float32) -> jnp.ndarray:
  """Returns the (H, W, 2) grid of (x, y) pixel-centre coordinates in [-1, 1].

  Args:
    spatial_size: ``(H, W)``; each must be >= 2 for the formula to be defined
      (a size of 1 would divide by zero, as in the official code).
    dtype: floating dtype of the result.

  Returns:
    ``grid`` with ``grid[i, j] = (2 j / (W - 1) - 1, 2 i / (H - 1) - 1)``.
  """
  h, w = int(spatial_size[0]), int(spatial_size[1])
  # Built in numpy at trace time (a constant under jit) with true division in
  # the target precision, so it is bit-equal to torch's construction (XLA
  # would turn ``/ (w - 1)`` into a multiplication by a rounded reciprocal).
  np_dtype = np.dtype(jnp.dtype(dtype))
  x = 2 * (np.arange(w, dtype=np_dtype) / np_dtype.type(w - 1)) - 1  # (W,)
  y = 2 * (np.arange(h, dtype=np_dtype) / np_dtype.type(h - 1)) - 1  # (H,)
  xx = np.broadcast_to(x[None, :], (h, w))
  yy = np.broadcast_to(y[:, None], (h, w))
  return jnp.asarray(np.stack([xx, yy], axis=-1).astype(np_dtype))
