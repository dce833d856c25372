"""Stride-1 convolutions whose weight gradient is computed over image tiles.

XLA:CPU computes a convolution's weight gradient as another convolution in
which the batch axis plays the part of the input channels: the matmul at
its core contracts over (pixels, batch) and reads the batch axis as its
innermost run. At batch 2 those runs are 2 floats long, and Eigen's patch
packing runs well below the machine's peak: the 3x3 256 -> 256 weight
gradient on 2x64x64 (DaGAN's bottleneck ResBlocks, twelve of them per
training step) reaches about 140 GFLOP/s where its forward reaches 200.

:func:`conv_tiled_dw` computes the same convolution, but its weight gradient
first cuts each image into ``tiles x tiles`` tiles (each with the ``kh - 1``
/ ``kw - 1`` pixels of halo its output pixels read), so the batch seen by
the weight-gradient convolution is ``tiles**2`` times larger, then runs
XLA's weight gradient on the tiles without padding. Every output pixel's
gradient lies in exactly one tile, and the halo gives each the same input
neighbourhood, so the sum over tiles is the same weight gradient. Measured
on the project's 2-core CPU: 68 -> 50 ms for 256 -> 256 on 2x64x64, 10 ->
4 ms for 64 -> 64 on 2x64x64. The forward pass and the input gradient are
XLA's own.

Exact in real arithmetic; float32 differs by rounding only.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from dagan_jax.backends.xla_cpu.conv_common import lax_conv, output_size

Array = jax.Array


def _check(x: Array, kernel: Array, padding: tuple[int, int], tiles: int
           ) -> None:
  if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"conv_tiled_dw: input {x.shape} (NHWC) does not match "
                     f"kernel {kernel.shape} (HWIO)")
  ho, wo = output_size(x.shape, kernel.shape, padding)
  if tiles < 1 or ho < tiles or wo < tiles:
    raise ValueError(f"conv_tiled_dw: a {ho}x{wo} output does not split "
                     f"into {tiles}x{tiles} tiles")


def tile_images(x: Array, tiles: int, tile_h: int, tile_w: int,
                step_h: int, step_w: int) -> Array:
  """(B, H, W, C) -> (B * tiles**2, tile_h, tile_w, C): tile ``(i, j)`` of
  image ``b`` starts at ``(i * step_h, j * step_w)`` (tiles overlap when
  ``tile > step``: the halo); image-major, then row-major over tiles."""
  b, _, _, c = x.shape
  parts = [x[:, i * step_h:i * step_h + tile_h, j * step_w:j * step_w + tile_w]
           for i in range(tiles) for j in range(tiles)]
  return jnp.stack(parts, axis=1).reshape(b * tiles * tiles, tile_h, tile_w, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_tiled_dw(x: Array, kernel: Array, padding: tuple[int, int],
                  tiles: int = 2, precision: Any = None) -> Array:
  """``lax.conv_general_dilated(x, kernel, (1, 1), ((ph, ph), (pw, pw)))``
  (NHWC, HWIO, stride 1) whose weight gradient is computed over
  ``tiles x tiles`` tiles of each image (see the module docstring)."""
  _check(x, kernel, padding, tiles)
  return lax_conv(x, kernel, padding, precision)


def _fwd(x, kernel, padding, tiles, precision):
  return conv_tiled_dw(x, kernel, padding, tiles, precision), (x, kernel)


def _bwd(padding, tiles, precision, res, g):
  x, kernel = res
  kh, kw = kernel.shape[:2]
  ph, pw = padding
  _, pull_x = jax.vjp(lambda v: lax_conv(v, kernel, padding, precision), x)
  (dx,) = pull_x(g)
  _, ho, wo, _ = g.shape
  # An output side that is not a multiple of ``tiles`` gets zero gradient
  # rows / columns appended (they add nothing to the sum), the input as
  # many zero rows / columns beyond its padding.
  th, tw = -(-ho // tiles), -(-wo // tiles)
  eh, ew = th * tiles - ho, tw * tiles - wo
  g = jnp.pad(g, ((0, 0), (0, eh), (0, ew), (0, 0)))
  xp = jnp.pad(x, ((0, 0), (ph, ph + eh), (pw, pw + ew), (0, 0)))
  x_tiles = tile_images(xp, tiles, th + kh - 1, tw + kw - 1, th, tw)
  g_tiles = tile_images(g, tiles, th, tw, th, tw)
  _, pull_w = jax.vjp(lambda k: lax_conv(x_tiles, k, (0, 0), precision),
                      kernel)
  (dw,) = pull_w(g_tiles)
  return dx, dw


conv_tiled_dw.defvjp(_fwd, _bwd)
