"""The one seam between the plain program and backend-specific kernels.

Models, losses and training steps are written once, in plain JAX, and call
this module for the few operations whose fastest form depends on the
backend: convolutions (:func:`conv2d`, :func:`conv3d`), long sums (:func:`block_sum` and
what is built on it) and materialisation points (:func:`materialize`).
Which kernel set answers is chosen by one config field,
``compute.kernels``:

* ``'xla'``: :mod:`dagan_jax.backends.xla`, the plain program
  (``lax.conv_general_dilated``, ``jnp.sum``, ``optax.tree.norm``, no
  optimisation barriers, XLA's default compile options);
* ``'cpu'``: :mod:`dagan_jax.backends.xla_cpu`, forms measured faster on
  XLA:CPU (Winograd and matmul convolutions, staged sums, Eigen instead of
  YNNPACK); same numbers up to float rounding;
* ``'auto'`` (default): ``'cpu'`` when ``jax.default_backend()`` is the
  CPU, else ``'xla'``; GPUs and TPUs run the plain program.

The choice is made while a function is traced: :func:`jit` wraps a step so
that its kernels are fixed when it is built (and passes the kernel set's
compile options); :func:`use` sets them for a block of code. Outside both,
``'auto'`` applies. No environment variable is read.

The same context carries ``inference``: exact eval-mode rewrites of the
layer library (BatchNorm folded into the preceding convolution, nearest
x2 upsampling + 3x3 conv as four 2x2 phase convolutions; see
:func:`dagan_jax.models.layers.conv_bn`). They are switched on in one place,
where a model is prepared for inference (``animate``, frozen networks in a
training step), never by a module's constructor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import optax

from dagan_jax.backends import xla as xla_kernels
from dagan_jax.backends import xla_cpu as cpu_kernels
from dagan_jax.config import KERNEL_CHOICES

Array = jax.Array

_SETS = {"xla": xla_kernels, "cpu": cpu_kernels}

#: Extra compile options for a program compiled only for its analyses
#: (its buffer assignment and FLOP count, ``dagan-jax info --memory``),
#: by platform: on CPU, LLVM at -O0 and XLA:CPU's older loop emitters
#: generate machine code much faster from the same optimised HLO, so
#: memory and FLOPs are those of the program a run compiles.
ANALYSIS_ONLY = {"cpu": {"xla_backend_optimization_level": 0,
                         "xla_cpu_use_fusion_emitters": False}}


def resolve(kernels: str, platform: str | None = None) -> str:
  """'xla' or 'cpu' for a ``compute.kernels`` value on ``platform``
  (default: JAX's default backend).

  Raises:
    ValueError: ``kernels`` is not one of :data:`KERNEL_CHOICES`.
  """
  if kernels not in KERNEL_CHOICES:
    raise ValueError(f"compute.kernels is {kernels!r}; expected one of "
                     f"{', '.join(KERNEL_CHOICES)}")
  if kernels == "auto":
    return "cpu" if (platform or jax.default_backend()) == "cpu" else "xla"
  return kernels


@dataclasses.dataclass(frozen=True)
class Settings:
  """What :func:`use` sets: the kernel set ('auto', 'xla', 'cpu') and
  whether the layer library's exact inference rewrites apply."""
  kernels: str = "auto"
  inference: bool = False


_STACK: list[Settings] = [Settings()]


def current() -> Settings:
  """The settings in force (innermost :func:`use`)."""
  return _STACK[-1]


@contextlib.contextmanager
def use(kernels: str | None = None, *, inference: bool | None = None
        ) -> Iterator[Settings]:
  """Sets the kernel set and/or the inference rewrites for the code traced
  inside the block; an argument left None keeps the enclosing value.

  It acts on tracing: a function that JAX has already traced for the same
  argument shapes keeps its trace (JAX caches traces by function, and these
  settings are not part of the key). Build steps with :func:`jit`, which
  binds the settings to a function of its own.
  """
  outer = current()
  if kernels is not None:
    resolve(kernels)  # validate early, with the field's name
  inner = Settings(kernels=outer.kernels if kernels is None else kernels,
                   inference=outer.inference if inference is None
                   else bool(inference))
  _STACK.append(inner)
  try:
    yield inner
  finally:
    _STACK.pop()


def kernel_set(kernels: str | None = None):
  """The kernel-set module for ``kernels`` (default: the one in use)."""
  return _SETS[resolve(current().kernels if kernels is None else kernels)]


def compiler_options(kernels: str, platform: str | None = None
                     ) -> dict[str, Any] | None:
  """Compile options of the kernel set ``kernels`` on ``platform``."""
  platform = platform or jax.default_backend()
  return _SETS[resolve(kernels, platform)].compiler_options(platform)


def analysis_options(platform: str | None = None) -> dict[str, Any] | None:
  """:data:`ANALYSIS_ONLY` for ``platform``; None where there are none."""
  return ANALYSIS_ONLY.get(platform or jax.default_backend())


def jit(fun: Callable, *, kernels: str | None = None,
        inference: bool | None = None, **jit_kwargs) -> Callable:
  """``jax.jit(fun)`` traced under ``use(kernels, inference=inference)``
  and compiled with that kernel set's options; ``jit_kwargs`` go to
  ``jax.jit`` (``donate_argnums``, ``static_argnames``, ...). An argument
  left None takes its value from the settings in force when ``jit`` is
  called (not when the function is traced)."""
  outer = current()
  resolved = resolve(outer.kernels if kernels is None else kernels)
  inference = outer.inference if inference is None else bool(inference)

  @functools.wraps(fun)
  def traced(*args, **kwargs):
    with use(resolved, inference=inference):
      return fun(*args, **kwargs)

  return jax.jit(traced, compiler_options=compiler_options(resolved),
                 **jit_kwargs)


# --------------------------------------------------------------------------
# The operations (dispatched to the kernel set in use)

def conv2d(x: Array, kernel: Array, *, stride: tuple[int, int] = (1, 1),
           padding: tuple[int, int] = (0, 0),
           dilation: tuple[int, int] = (1, 1), groups: int = 1,
           precision: Any = None) -> Array:
  """``F.conv2d`` without bias: NHWC input, HWIO kernel (cast to the
  input's dtype), symmetric zero padding ``(ph, pw)``."""
  return kernel_set().conv2d(x, kernel.astype(x.dtype), stride=tuple(stride),
                             padding=tuple(padding), dilation=tuple(dilation),
                             groups=groups, precision=precision)


def conv3d(x: Array, kernel: Array, *, padding: Sequence[int] = (0, 0, 0),
           precision: Any = None) -> Array:
  """``F.conv3d`` with stride 1 and no bias: NDHWC input, DHWIO kernel (cast
  to the input's dtype), symmetric zero padding ``(pd, ph, pw)``."""
  return kernel_set().conv3d(x, kernel.astype(x.dtype), padding=tuple(padding),
                             precision=precision)


def block_sum(x: Array, start: int, stop: int) -> Array:
  """``x.sum`` over the contiguous axes ``start, ..., stop - 1``."""
  if not 0 <= start <= stop <= x.ndim:
    raise ValueError(f"block_sum: axes [{start}, {stop}) are not a block of "
                     f"a {x.ndim}-d array")
  return kernel_set().block_sum(x, start, stop)


def block_mean(x: Array, start: int, stop: int) -> Array:
  """:func:`block_sum` divided by the number of summed elements."""
  n = math.prod(x.shape[start:stop])
  return block_sum(x, start, stop) / jnp.asarray(n, x.dtype)


def mean_all(x: Array) -> Array:
  """``jnp.mean(x)``, a scalar."""
  return block_mean(x.reshape(-1), 0, 1)


def block_broadcast(v: Array, shape: Sequence[int], start: int, stop: int
                    ) -> Array:
  """``v`` broadcast to ``shape`` by inserting the axes ``start, ...,
  stop - 1`` (the transpose of :func:`block_sum`)."""
  shape = tuple(shape)
  if len(shape) != v.ndim + stop - start or \
      shape[:start] + shape[stop:] != tuple(v.shape):
    raise ValueError(f"block_broadcast: {v.shape} does not broadcast to "
                     f"{shape} along axes [{start}, {stop})")
  return kernel_set().block_broadcast(v, shape, start, stop)


def add_bias(y: Array, bias: Array | None) -> Array:
  """``y + bias`` over the last (channel) axis."""
  if bias is None:
    return y
  return y + block_broadcast(bias.astype(y.dtype), y.shape, 0, y.ndim - 1)


def materialize(tree: Any) -> Any:
  """``tree``, computed in full before its consumers where the kernel set
  needs that (an optimisation barrier on CPU; the identity otherwise)."""
  return kernel_set().materialize(tree)


def global_norm(tree: Any) -> Array:
  """``optax.tree.norm`` (optax.global_norm): sqrt of the sum of squares of every entry."""
  if resolve(current().kernels) == "xla":
    return optax.tree.norm(tree)
  leaves = [block_sum(jnp.square(jnp.ravel(x)), 0, 1)
            for x in jax.tree_util.tree_leaves(tree)]
  return jnp.sqrt(sum(leaves)) if leaves else jnp.zeros(())


def all_finite(tree: Any) -> Array:
  """Whether every entry of ``tree`` is finite (a boolean scalar):
  ``sum(x * 0)`` is 0 for finite ``x`` and NaN as soon as one entry is inf
  or NaN, summed per leaf with :func:`block_sum`."""
  leaves = [block_sum(jnp.ravel(x) * 0, 0, 1)
            for x in jax.tree_util.tree_leaves(tree)]
  return jnp.isfinite(sum(leaves)) if leaves else jnp.array(True)
