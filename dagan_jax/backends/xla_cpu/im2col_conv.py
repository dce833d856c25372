"""Convolutions on tiny maps with wide kernels, as matmuls over patches.

The bottom of every hourglass (the dense motion network's and the keypoint
detector's) runs 3x3 convolutions with 512-1024 channels on 4x4 maps. There
the kernel is far larger than the activations (3x3x1024x1024 is 38 MB, the
input 128 KB at batch 2), and XLA:CPU's convolution handles the backward
pass badly: the input gradient first writes the kernel out reversed with its
two channel axes swapped, a strided copy that takes longer than the
convolution itself (about 50 ms for 3x3x1024x1024 on the project's 2-core
CPU), and the weight gradient runs at about 30 GFLOP/s.

:func:`conv_im2col` computes the same convolution through the patch matrix
``P`` (``B*Ho*Wo`` rows, ``kh*kw*Cin`` columns: the ``kh*kw`` shifted views
of the padded input side by side), with a custom gradient:

* forward: ``y = P @ W`` with the HWIO kernel reshaped (free) to
  ``(kh*kw*Cin, Cout)``;
* input gradient: ``dP = g @ W^T`` (a matmul contracting the output
  channels: no transposed copy of the kernel), then each tap's slice of
  ``dP`` padded back into place and summed;
* weight gradient: ``P^T @ g``.

Forward + both gradients of a 3x3 1024 -> 1024 conv on 2x4x4: 83 ms with
XLA's convolution, 38 ms here. On 8x8 maps the two are even, and from
16x16 up XLA's convolution is faster; the CPU kernel set's router
(:mod:`dagan_jax.backends.xla_cpu.conv`) sends it only the shapes where
this wins.

Exact in real arithmetic; float32 differs by rounding only.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from dagan_jax.backends.xla_cpu.conv_common import output_size

Array = jax.Array


def _patches(x: Array, kh: int, kw: int, padding: tuple[int, int]) -> Array:
  """(B, H, W, C) -> (B, Ho, Wo, kh*kw*C): the shifted views of the padded
  input, tap-major (the order of an HWIO kernel's rows)."""
  ph, pw = padding
  ho, wo = output_size(x.shape, (kh, kw), padding)
  xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  return jnp.concatenate([xp[:, i:i + ho, j:j + wo]
                          for i in range(kh) for j in range(kw)], axis=-1)


def _check(x: Array, kernel: Array, padding: tuple[int, int]) -> None:
  if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"conv_im2col: input {x.shape} (NHWC) does not match "
                     f"kernel {kernel.shape} (HWIO)")
  ho, wo = output_size(x.shape, kernel.shape, padding)
  if ho < 1 or wo < 1 or min(padding) < 0:
    raise ValueError(f"conv_im2col: kernel {kernel.shape[:2]} with padding "
                     f"{padding} does not fit input {x.shape[1:3]}")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_im2col(x: Array, kernel: Array, padding: tuple[int, int],
                precision: Any = None) -> Array:
  """``lax.conv_general_dilated(x, kernel, (1, 1), ((ph, ph), (pw, pw)))``
  (NHWC input, HWIO kernel, stride 1, no dilation, no groups) as a matmul
  over the patch matrix, with matmul gradients (see the module docstring).
  """
  _check(x, kernel, padding)
  kh, kw, ci, co = kernel.shape
  p = _patches(x, kh, kw, padding)
  return jnp.dot(p, kernel.reshape(kh * kw * ci, co), precision=precision)


def _fwd(x, kernel, padding, precision):
  return conv_im2col(x, kernel, padding, precision), (x, kernel)


def _bwd(padding, precision, res, g):
  x, kernel = res
  kh, kw, ci, co = kernel.shape
  b, h, w, _ = x.shape
  ph, pw = padding
  ho, wo = output_size(x.shape, kernel.shape, padding)
  wmat = kernel.reshape(kh * kw * ci, co)
  # dP = g @ W^T, contracting the output channels of both operands.
  dp = jax.lax.dot_general(g, wmat, (((3,), (1,)), ((), ())),
                           precision=precision).reshape(b, ho, wo, kh * kw, ci)
  # Each tap's slice goes back to where it was read in the padded input.
  hp, wp = h + 2 * ph, w + 2 * pw
  dxp = sum(jnp.pad(dp[:, :, :, i * kw + j],
                    ((0, 0), (i, hp - ho - i), (j, wp - wo - j), (0, 0)))
            for i in range(kh) for j in range(kw))
  dx = dxp[:, ph:ph + h, pw:pw + w]
  p = _patches(x, kh, kw, padding)
  dw = jax.lax.dot_general(p, g, (((0, 1, 2), (0, 1, 2)), ((), ())),
                           precision=precision)
  return dx.astype(x.dtype), dw.reshape(kernel.shape).astype(kernel.dtype)


conv_im2col.defvjp(_fwd, _bwd)
