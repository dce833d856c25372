"""Sums over large axes as short staged reductions (fast on XLA:CPU).

XLA:CPU rewrites every reduction whose reduced dimension is longer than 32
into a ``reduce-window`` followed by a reduce (``TreeReductionRewriter``,
for accuracy). The ``reduce-window`` is not fused with the op that produces
its input: the input is first written out in full, then read back by a slow
generic loop. A training-mode BatchNorm over (2, 256, 256, 128) spends most
of its time there (forward + backward: 172 ms plain, 63 ms staged on the
project's 2-core CPU).

:func:`block_sum` sums a contiguous block of axes in two stages (see
:func:`_staged`): groups of 32 summed in one pass fused with the producer,
then the partial sums added by a matmul with ones. The result is as
accurate as XLA's rewrite (the tests compare both with float64).
:func:`block_broadcast` is its transpose; it is a custom VJP so that the
backward pass of ``x - mean`` and friends also reduces in stages instead of
producing fresh long reductions.

Exact in real arithmetic; float32 results differ from ``jnp.sum`` by
rounding only.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

#: Longest axis one stage reduces (XLA:CPU's TreeReductionRewriter leaves
#: reductions of at most this many elements alone).
STAGE = 32

#: Arrays with fewer elements are summed by ``jnp.sum`` (XLA's own
#: reduction): staging gains nothing measurable there and adds ops to
#: compile (the small models of the tests and the smoke configs).
STAGED_MIN_ELEMENTS = 1 << 16


def _staged(x3: Array) -> Array:
  """(a, n, b) -> (a, b): sum over the middle axis.

  Stage 1 sums groups of ``STAGE`` (fused with the producer of ``x3``: one
  pass over it); an optimisation barrier keeps XLA from merging that into
  the rest (it folds a reduce of a reduce into one long reduction, which it
  would rewrite again); the ``n / STAGE`` partial sums are then added by a
  dot with ones (XLA's reduce emitter is slow on those shapes).
  """
  a, n, b = x3.shape
  if n <= STAGE:
    return x3.sum(axis=1)
  pad = -n % STAGE
  if pad:
    x3 = jnp.pad(x3, ((0, 0), (0, pad), (0, 0)))
  m = (n + pad) // STAGE
  part = jax.lax.optimization_barrier(x3.reshape(a, m, STAGE, b).sum(axis=2))
  ones = jnp.ones((1, m), part.dtype)
  # (1, m) @ (m, b) per outer index: row-major operands, so layout
  # assignment adds no transposes around the partial sums.
  return jax.vmap(lambda p: jnp.dot(ones, p, precision=jax.lax.Precision.HIGHEST)[0]
                  )(part)


def _check_block(ndim: int, start: int, stop: int) -> None:
  if not 0 <= start <= stop <= ndim:
    raise ValueError(f"block_sum: axes [{start}, {stop}) are not a block of "
                     f"a {ndim}-d array")


def block_sum(x: Array, start: int, stop: int) -> Array:
  """``x.sum(axis=tuple(range(start, stop)))`` in two fused stages (a
  plain sum below ``STAGED_MIN_ELEMENTS`` elements).

  Args:
    x: any array.
    start, stop: the summed axes are ``start, ..., stop - 1`` (contiguous).
  Returns:
    ``x`` without those axes.
  """
  _check_block(x.ndim, start, stop)
  if x.size < STAGED_MIN_ELEMENTS:
    return x.sum(axis=tuple(range(start, stop)))
  shape = x.shape
  outer, n, inner = (math.prod(shape[:start]), math.prod(shape[start:stop]),
                     math.prod(shape[stop:]))
  out = _staged(x.reshape(outer, n, inner))
  return out.reshape(shape[:start] + shape[stop:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def block_broadcast(v: Array, shape: Sequence[int], start: int, stop: int
                    ) -> Array:
  """Broadcasts ``v`` to ``shape`` by inserting the axes ``start, ...,
  stop - 1`` (the inverse of :func:`block_sum`); its gradient is a staged
  :func:`block_sum` over those axes.

  ``block_broadcast(mean, x.shape, 0, 3)`` with ``mean`` of shape ``(C,)``
  and ``x`` of shape ``(B, H, W, C)`` is ``jnp.broadcast_to(mean, x.shape)``.
  """
  shape = tuple(shape)
  if len(shape) != v.ndim + stop - start or \
      shape[:start] + shape[stop:] != tuple(v.shape):
    raise ValueError(f"block_broadcast: {v.shape} does not broadcast to "
                     f"{shape} along axes [{start}, {stop})")
  expanded = v.reshape(v.shape[:start] + (1,) * (stop - start) + v.shape[start:])
  return jnp.broadcast_to(expanded, shape)


def _bb_fwd(v, shape, start, stop):
  return block_broadcast(v, shape, start, stop), None


def _bb_bwd(shape, start, stop, _, g):
  del shape
  return (block_sum(g, start, stop),)


block_broadcast.defvjp(_bb_fwd, _bb_bwd)
