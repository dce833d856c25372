"""The XLA:CPU kernel set: forms of the same operations that are faster on
XLA:CPU, and the compile options that go with them.

Chosen by ``compute.kernels`` ('auto' on the CPU backend, or 'cpu'); see
:mod:`dagan_jax.compute`. Each piece stays only while the whole-step
benchmark shows it pays for itself (BENCHMARKS.md):

* :mod:`.conv`: convolutions routed by shape to Winograd F(2x2, 3x3)
  (:mod:`.winograd`), matmul weight gradients for narrow heads
  (:mod:`.narrow_conv`), patch-matrix matmuls on tiny maps
  (:mod:`.im2col_conv`) and tiled weight gradients (:mod:`.tiled_dw_conv`);
* :func:`conv3d`: a 3-D convolution as a sum of 2-D ones over its depth
  taps (Audio2Head's hourglass);
* :mod:`.reductions`: long sums in two stages (BatchNorm, InstanceNorm,
  biases, losses, gradient norms);
* :func:`materialize`: an optimisation barrier where XLA:CPU would fuse a
  kernel's preparation into a convolution and fall back to a slow loop;
* :func:`compiler_options`: XLA's Eigen convolutions instead of YNNPACK.

Every op these emit is traced under a name scope starting with
``xla_cpu`` (:data:`SCOPE`), so a compiled program shows which of them it
uses.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from dagan_jax.backends.xla_cpu import reductions
from dagan_jax.backends.xla_cpu.conv import conv2d, conv_form

__all__ = ["NAME", "SCOPE", "conv2d", "conv3d", "conv_form", "block_sum",
           "block_broadcast", "materialize", "compiler_options"]

NAME = "cpu"

#: Prefix of the name scopes of every op of this kernel set.
SCOPE = "xla_cpu"

#: XLA:CPU's own default of ``xla_cpu_experimental_ynn_fusion_type``: dots
#: and convolutions handed to YNNPACK. For this model family that is the
#: slower choice, by a wide margin for the weight gradients of convolutions
#: on large maps (a few input channels, many pixels), which YNNPACK computes
#: as a convolution with the 256x256 map as its window: 3x3 conv 64 -> 128
#: on 2x256x256, weight gradient 1.16 s with YNNPACK, 0.17 s with Eigen; the
#: DaGAN training step at batch 2 16.0 -> 12.6 s; animate 1.59 -> 1.90
#: frames/s (jax 0.10.2, the 2-core development machine).
YNNPACK_DEFAULT = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                   "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION")

#: The options this kernel set compiles with on the CPU platform: Eigen's
#: convolutions and dots (no YNNPACK fusions).
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def conv3d(x: jax.Array, kernel: jax.Array, *, padding: tuple[int, int, int],
           precision: Any) -> jax.Array:
  """A stride-1 3-D convolution (NDHWC, DHWIO) as the sum over the ``kd``
  depth taps of 2-D convolutions (frames on the batch axis, each through
  :func:`conv2d`) of the depth-padded input shifted by each tap. XLA:CPU
  runs 3-D convolutions as a slow generic loop: on the 2-core development
  machine Audio2Head's 7x7x7 keypoint head over 12 windows of 16x64x64x14
  took 21-27 s as one 3-D convolution and 2-3 s as seven 2-D ones; a 3x3x3
  8 -> 8 on 16x64x64, 0.8 s vs 0.3 s. Same numbers up to summation order."""
  pd, ph, pw = padding
  b, t, h, w, c = x.shape
  kd = kernel.shape[0]
  t_out = t + 2 * pd - kd + 1
  with jax.named_scope(SCOPE + "_conv3d_taps"):
    xp = jnp.pad(x, ((0, 0), (pd, pd), (0, 0), (0, 0), (0, 0))) if pd else x
    y = None
    for d in range(kd):
      frames = xp[:, d:d + t_out].reshape(b * t_out, h, w, c)
      part = conv2d(frames, kernel[d], stride=(1, 1), padding=(ph, pw),
                    dilation=(1, 1), groups=1, precision=precision)
      y = part if y is None else y + part
    return y.reshape((b, t_out) + y.shape[1:])


def block_sum(x: jax.Array, start: int, stop: int) -> jax.Array:
  """Sum over the axes ``start, ..., stop - 1`` in two fused stages
  (:func:`.reductions.block_sum`)."""
  with jax.named_scope(SCOPE + "_staged_sum"):
    return reductions.block_sum(x, start, stop)


def block_broadcast(v: jax.Array, shape: Sequence[int], start: int,
                    stop: int) -> jax.Array:
  """Broadcast whose gradient is a staged sum
  (:func:`.reductions.block_broadcast`)."""
  with jax.named_scope(SCOPE + "_staged_broadcast"):
    return reductions.block_broadcast(v, tuple(shape), start, stop)


def materialize(tree: Any) -> Any:
  """``lax.optimization_barrier``: computes ``tree`` in full before its
  consumers (XLA:CPU would otherwise fuse e.g. a folded kernel's scaling
  into the convolution, which then runs as a slow generic loop)."""
  with jax.named_scope(SCOPE + "_barrier"):
    return jax.lax.optimization_barrier(tree)


def compiler_options(platform: str) -> dict[str, Any] | None:
  """:data:`CPU_OPTIONS` on the CPU platform, None elsewhere."""
  return dict(CPU_OPTIONS) if platform == "cpu" else None
