"""The plain kernel set: what XLA does with the program as written.

Every function is the textbook JAX form of its operation; this is the
program on GPUs and TPUs (``compute.kernels`` 'auto' there, or 'xla'
anywhere). See :mod:`dagan_jax.backends` for the interface.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

NAME = "xla"


def conv2d(x: Array, kernel: Array, *, stride: tuple[int, int],
           padding: tuple[int, int], dilation: tuple[int, int], groups: int,
           precision: Any) -> Array:
  """``lax.conv_general_dilated``: NHWC input, HWIO kernel, symmetric zero
  padding ``(ph, pw)``, no bias."""
  ph, pw = padding
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=stride, padding=((ph, ph), (pw, pw)),
      rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups, precision=precision)


def conv3d(x: Array, kernel: Array, *, padding: tuple[int, int, int],
           precision: Any) -> Array:
  """``lax.conv_general_dilated`` in 3-D: NDHWC input, DHWIO kernel, stride
  1, symmetric zero padding ``(pd, ph, pw)``, no bias."""
  pd, ph, pw = padding
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1, 1),
      padding=((pd, pd), (ph, ph), (pw, pw)),
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), precision=precision)


def block_sum(x: Array, start: int, stop: int) -> Array:
  """``x.sum`` over the axes ``start, ..., stop - 1``."""
  return x.sum(axis=tuple(range(start, stop)))


def block_broadcast(v: Array, shape: Sequence[int], start: int, stop: int
                    ) -> Array:
  """``v`` broadcast to ``shape`` by inserting the axes ``start, ...,
  stop - 1``."""
  expanded = v.reshape(v.shape[:start] + (1,) * (stop - start) + v.shape[start:])
  return jnp.broadcast_to(expanded, tuple(shape))


def materialize(tree: Any) -> Any:
  """The identity: XLA decides what to keep in memory."""
  return tree


def compiler_options(platform: str) -> dict[str, Any] | None:
  """No options: XLA's defaults on every platform."""
  del platform
  return None
