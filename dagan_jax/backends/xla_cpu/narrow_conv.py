"""Convolutions with few output channels (stride 1), as matmuls where XLA's
convolution is slow.

The output heads of the networks are wide-input, narrow-output convolutions
on large maps: the generator's final 7x7 64 -> 3 conv at 256x256, the 7x7
mask and occlusion heads of the dense motion network at 64x64 (the keypoint
detector's unpadded heatmap and Jacobian heads keep XLA's convolution:
``layers.conv2d`` routes "same"-padded convs only). XLA:CPU runs their weight gradient at 7-40 GFLOP/s
(the machine reaches ~200): a 7x7 64 -> 3 weight gradient on 2x256x256
takes 341 ms, more than the 3x3 256 -> 256 conv at 64x64 that does 4x the
work.

:func:`conv_narrow_out` computes the same convolution with a custom
gradient:

* weight gradient: ``dW[i, j, c, o] = sum_s x[s, c] g[s + pad - (i, j), o]``
  -- the ``kh * kw`` shifted copies of the (narrow) output gradient ``g``
  side by side, then one matmul with ``x`` contracting over every pixel
  (92 ms instead of 341 for the final conv);
* forward, when there are at most ``MATMUL_FORWARD_MAX_OUT`` output
  channels: ``z = x @ W`` with ``W`` reshaped to ``(Cin, kh * kw * Cout)``,
  then the ``kh * kw`` shifted slices of ``z`` summed (76 ms instead of 116);
  wider outputs keep XLA's convolution;
* input gradient: XLA's own (transposed) convolution.

Exact in real arithmetic; float32 differs by rounding only.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from dagan_jax.backends.xla_cpu.conv_common import lax_conv, output_size

Array = jax.Array

#: Forward as matmul + shifted sum up to this many output channels
#: (measured: 7x7 64 -> 3 at 256x256 1.5x faster; 7x7 128 -> 16 at 64x64
#: 2x slower than XLA's convolution).
MATMUL_FORWARD_MAX_OUT = 4


def _matmul_forward(x: Array, kernel: Array, padding: tuple[int, int],
                    precision: Any) -> Array:
  kh, kw, ci, co = kernel.shape
  b, h, w, _ = x.shape
  ph, pw = padding
  ho, wo = output_size(x.shape, kernel.shape, padding)
  wmat = kernel.transpose(2, 0, 1, 3).reshape(ci, kh * kw * co)
  z = jnp.einsum("bhwc,cq->bhwq", x, wmat, precision=precision)
  z = jnp.pad(z.reshape(b, h, w, kh, kw, co),
              ((0, 0), (ph, ph), (pw, pw), (0, 0), (0, 0), (0, 0)))
  out = None
  for i in range(kh):
    for j in range(kw):
      term = z[:, i:i + ho, j:j + wo, i, j]
      out = term if out is None else out + term
  return out


def _weight_grad(x: Array, g: Array, kshape: tuple[int, ...],
                 padding: tuple[int, int], precision: Any) -> Array:
  """``dW`` of the conv from its input ``x`` and output gradient ``g``."""
  kh, kw, ci, co = kshape
  _, h, w, _ = x.shape
  ph, pw = padding
  # g[s + ph - i] for s in [0, h): pad g by kh - 1 - ph on both sides, then
  # the slice for tap i starts at kh - 1 - i.
  qh, qw = kh - 1 - ph, kw - 1 - pw
  if qh < 0 or qw < 0:
    raise ValueError(f"conv_narrow_out: padding {padding} exceeds kernel - 1 "
                     f"({kshape[:2]})")
  gp = jnp.pad(g, ((0, 0), (qh, qh), (qw, qw), (0, 0)))
  shifted = jnp.concatenate(
      [gp[:, kh - 1 - i:kh - 1 - i + h, kw - 1 - j:kw - 1 - j + w]
       for i in range(kh) for j in range(kw)], axis=-1)  # (B, h, w, kh kw co)
  dw = jnp.einsum("bhwc,bhwq->cq", x, shifted, precision=precision)
  return dw.reshape(ci, kh, kw, co).transpose(1, 2, 0, 3).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_narrow_out(x: Array, kernel: Array, padding: tuple[int, int] = (0, 0),
                    precision: Any = None) -> Array:
  """``conv2d(x, kernel, padding=padding)`` (stride 1, no groups, NHWC /
  HWIO, zero padding of at most ``k - 1``) with the gradients above."""
  if kernel.shape[-1] <= MATMUL_FORWARD_MAX_OUT:
    return _matmul_forward(x, kernel, padding, precision)
  return lax_conv(x, kernel, padding, precision)


def _fwd(x, kernel, padding, precision):
  return conv_narrow_out(x, kernel, padding, precision), (x, kernel)


def _bwd(padding, precision, res, g):
  x, kernel = res
  _, pull_x = jax.vjp(lambda v: lax_conv(v, kernel, padding, precision), x)
  (dx,) = pull_x(g)
  dw = _weight_grad(x, g, kernel.shape, padding, precision)
  return dx, dw.astype(kernel.dtype)


conv_narrow_out.defvjp(_fwd, _bwd)
