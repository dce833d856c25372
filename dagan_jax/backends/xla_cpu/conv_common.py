"""What the convolution forms of the CPU kernel set (``narrow_conv``,
``im2col_conv``, ``tiled_dw_conv``) and its router (``conv.conv2d``) share:
XLA's stride-1 NHWC/HWIO convolution with symmetric zero padding, and its
output size."""

from __future__ import annotations

from typing import Any, Sequence

import jax

Array = jax.Array


def output_size(x_shape: Sequence[int], kernel_shape: Sequence[int],
                padding: tuple[int, int]) -> tuple[int, int]:
  """(Ho, Wo) of a stride-1 conv of an NHWC input with an HWIO kernel and
  symmetric padding ``(ph, pw)``."""
  _, h, w, _ = x_shape
  kh, kw = kernel_shape[:2]
  ph, pw = padding
  return h + 2 * ph - kh + 1, w + 2 * pw - kw + 1


def lax_conv(x: Array, kernel: Array, padding: tuple[int, int],
             precision: Any = None) -> Array:
  """``lax.conv_general_dilated`` with stride 1, NHWC input, HWIO kernel and
  symmetric zero padding ``(ph, pw)``."""
  ph, pw = padding
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), ((ph, ph), (pw, pw)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)
