"""Which form computes a convolution on XLA:CPU, decided from static shapes.

:func:`conv2d` routes a stride-1, ungrouped, undilated convolution to the
form measured fastest for its shape on the project's 2-core CPU (forward +
both gradients; figures beside each threshold, more in BENCHMARKS.md); every
other convolution is XLA's own. All forms compute the same convolution
(equal up to float rounding).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from dagan_jax.backends import xla as xla_kernels
from dagan_jax.backends.xla_cpu import winograd
from dagan_jax.backends.xla_cpu.conv_common import output_size
from dagan_jax.backends.xla_cpu.im2col_conv import conv_im2col
from dagan_jax.backends.xla_cpu.narrow_conv import conv_narrow_out
from dagan_jax.backends.xla_cpu.tiled_dw_conv import conv_tiled_dw

Array = jax.Array

#: Output channels up to which a "same"-padded conv uses
#: :func:`~dagan_jax.backends.xla_cpu.narrow_conv.conv_narrow_out` (forward
#: + gradients of 7x7 64 -> 3 at 2x256x256 384 -> 126 ms, 7x7 128 -> 16 at
#: 2x64x64 91 -> 38 ms; at 32 outputs the gain depends on the input width,
#: at 60 it is a loss).
NARROW_MAX_OUT = 16

#: ... and from this many input channels: the route's matmuls contract over
#: the input channels, and with fewer (an RGB or depth stem at test widths)
#: they gain nothing, while its forward (a sum of ``kh * kw`` shifted slices)
#: is fused by XLA into every consumer of the conv's output: the 7x7 3 -> 4
#: stems of a 32x32 toy generator became 116 fusions of 49 slices each, and
#: the toy training step compiled in 36 s (25 s with this bound).
NARROW_MIN_IN = 8

#: Wide convs on tiny maps run as
#: :func:`~dagan_jax.backends.xla_cpu.im2col_conv.conv_im2col`: on maps of
#: at most ``IM2COL_ALWAYS_PIXELS`` pixels per image with a kernel of at
#: least ``IM2COL_MIN_WEIGHTS`` entries (XLA compiles a 3x3 conv on a 2x2
#: map as a generic loop convolution: 512 -> 512 on 2x2x2, forward +
#: gradients, 39 -> 4 ms; 8x2x2 140 -> 6 ms), and where the output has at
#: most ``IM2COL_MAX_ROWS`` pixels in the whole batch and the kernel at least
#: ``IM2COL_WIDE_WEIGHTS`` entries (the hourglass bottoms: 1024 -> 1024 on
#: 2x4x4 83 -> 38 ms, 512 -> 1024 31 -> 14 ms). On the whole DaGAN step at
#: batch 2 it pays about 5% (same-time A/B, 2026-12-07, BENCHMARKS.md).
IM2COL_ALWAYS_PIXELS = 4
IM2COL_MIN_WEIGHTS = 9 * 256 * 256
IM2COL_MAX_ROWS = 64
IM2COL_WIDE_WEIGHTS = 9 * 512 * 1024

#: Stride-1 convs on batches of at most ``TILED_DW_MAX_BATCH`` images with an
#: even-sided output of at least ``TILED_DW_MIN_PIXELS`` pixels run as
#: :func:`~dagan_jax.backends.xla_cpu.tiled_dw_conv.conv_tiled_dw` with 2x2
#: tiles (same forward; the weight gradient sees 4x the batch). Forward +
#: both gradients at batch 2: 3x3 256 -> 256 on 64x64 161 -> 152 ms,
#: 128 -> 256 on 128x128 343 -> 316 ms, 64 -> 64 on 64x64 17 -> 11 ms,
#: 7x7 3 -> 64 on 256x256 178 -> 167 ms; at batch 8 it is a loss (608 -> 638
#: ms for the first).
TILED_DW_MAX_BATCH = 4
TILED_DW_MIN_PIXELS = 256
#: ... and at least this many multiply-adds (smaller convs gain nothing
#: measurable and would only add ops to compile).
TILED_DW_MIN_MACS = 10 ** 8

#: Winograd F(2x2, 3x3) (:func:`~dagan_jax.backends.xla_cpu.winograd.conv3x3_f23`)
#: runs a 3x3, stride-1, padding-1 float32 conv when both channel counts are
#: at least ``WINOGRAD_MIN_CHANNELS`` and the output has at least
#: ``WINOGRAD_MIN_PIXELS`` pixels per image. Forward + both gradients at
#: batch 2 (C allocator keeping freed memory), XLA's convolution ->
#: Winograd: 256 -> 256 on 64x64 261 -> 137 ms, 512 -> 512 on 32x32
#: 289 -> 197, on 8x8 29 -> 24, 128 -> 128 on 128x128 290 -> 175, 64 -> 64
#: on 256x256 346 -> 276 (forward alone even), 64 -> 64 on 64x64 40 -> 20;
#: on 4x4 maps (15.8 vs 15.3 ms) it gains nothing.
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_MIN_PIXELS = 64


def _narrow(x: Array, kernel: Array, padding: tuple[int, int]) -> bool:
  kh, kw, cin, cout = kernel.shape
  return (cout <= NARROW_MAX_OUT and cin >= NARROW_MIN_IN and min(kh, kw) >= 3
          and kh % 2 == 1 and kw % 2 == 1
          and padding == ((kh - 1) // 2, (kw - 1) // 2))


def _im2col(x: Array, kernel: Array, padding: tuple[int, int]) -> bool:
  ho, wo = output_size(x.shape, kernel.shape, padding)
  weights = math.prod(kernel.shape)
  if ho < 1 or wo < 1 or weights < IM2COL_MIN_WEIGHTS:
    return False
  return (ho * wo <= IM2COL_ALWAYS_PIXELS
          or (x.shape[0] * ho * wo <= IM2COL_MAX_ROWS
              and weights >= IM2COL_WIDE_WEIGHTS))


def _winograd(x: Array, kernel: Array, padding: tuple[int, int]) -> bool:
  return (kernel.shape[:2] == (3, 3) and padding == (1, 1)
          and x.dtype == jnp.float32
          and min(kernel.shape[2], kernel.shape[3]) >= WINOGRAD_MIN_CHANNELS
          and x.shape[1] * x.shape[2] >= WINOGRAD_MIN_PIXELS)


def _tiled_dw(x: Array, kernel: Array, padding: tuple[int, int]) -> bool:
  ho, wo = output_size(x.shape, kernel.shape, padding)
  return (x.shape[0] <= TILED_DW_MAX_BATCH and ho * wo >= TILED_DW_MIN_PIXELS
          and ho % 2 == 0 and wo % 2 == 0
          and x.shape[0] * ho * wo * math.prod(kernel.shape) >= TILED_DW_MIN_MACS)


def conv_form(x: Array, kernel: Array, *, stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int],
              groups: int) -> str:
  """The form :func:`conv2d` uses: 'narrow', 'im2col', 'winograd',
  'tiled_dw' or 'xla', in that order of precedence."""
  if groups != 1 or stride != (1, 1) or dilation != (1, 1):
    return "xla"
  if _narrow(x, kernel, padding):
    return "narrow"
  if _im2col(x, kernel, padding):
    return "im2col"
  if _winograd(x, kernel, padding):
    return "winograd"
  if _tiled_dw(x, kernel, padding):
    return "tiled_dw"
  return "xla"


def conv2d(x: Array, kernel: Array, *, stride: tuple[int, int],
           padding: tuple[int, int], dilation: tuple[int, int], groups: int,
           precision: Any) -> Array:
  """The convolution of :func:`dagan_jax.backends.xla.conv2d`, by the form
  :func:`conv_form` picks:

  * 'im2col': wide kernels on tiny maps as matmuls over the patch matrix
    (no transposed copy of the kernel in the input gradient);
  * 'narrow': narrow output heads as
    :func:`~dagan_jax.backends.xla_cpu.narrow_conv.conv_narrow_out` (their
    weight gradient a matmul, 3-25x faster);
  * 'winograd': wide 3x3 "same" float32 convs as Winograd F(2x2, 3x3)
    (2.25x fewer multiply-adds forward and backward);
  * 'tiled_dw': other large convs on small batches with XLA's forward and
    the weight gradient over 2x2 tiles of each image;
  * 'xla': XLA's own convolution.
  """
  form = conv_form(x, kernel, stride=stride, padding=padding,
                   dilation=dilation, groups=groups)
  if form == "narrow":
    with jax.named_scope("xla_cpu_narrow_conv"):
      return conv_narrow_out(x, kernel, padding, precision)
  if form == "im2col":
    with jax.named_scope("xla_cpu_im2col_conv"):
      return conv_im2col(x, kernel, padding, precision)
  if form == "winograd":
    with jax.named_scope("xla_cpu_winograd"):
      return winograd.conv3x3_f23(x, kernel, precision=precision)
  if form == "tiled_dw":
    with jax.named_scope("xla_cpu_tiled_dw_conv"):
      return conv_tiled_dw(x, kernel, padding, 2, precision)
  return xla_kernels.conv2d(x, kernel, stride=stride, padding=padding,
                            dilation=dilation, groups=groups,
                            precision=precision)
