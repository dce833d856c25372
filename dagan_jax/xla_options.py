"""XLA compile options for the project's compiled steps.

On XLA:CPU (jax 0.10.2) large convolutions and dots are handed to YNNPACK by
default. For this model family that is the slower choice, and by a wide
margin for the weight gradients of convolutions on large maps (a few input
channels, many pixels), which YNNPACK computes as a convolution with the
256x256 map as its window. Measured on the 2-core development machine
(``benchmarks/run.py``; details in BENCHMARKS.md):

* 3x3 conv 64->128 on 2x256x256, weight gradient: 1.16 s with YNNPACK,
  0.17 s with XLA's Eigen kernels (17 vs 113 GFLOP/s); forward and input
  gradient are on par;
* the full DaGAN training step at batch 2: 16.0 s -> 12.6 s;
* animate's per-frame function at batch 1: 1.59 -> 1.90 frames/s.

So every step this package compiles (training, animate, evaluation) asks for
Eigen on the CPU backend. Set ``DAGAN_JAX_CPU_LIBRARY=ynnpack`` to keep
XLA's default. Other backends get no options.

``DAGAN_JAX_CPU_OPT_LEVEL=0`` (1, 2, 3) sets LLVM's optimisation level for
the same steps on CPU (``xla_backend_optimization_level``; unset: XLA's
default). It changes how machine code is generated for the already
optimised HLO, not the HLO: level 0 trades run time for compile time, which
pays off where programs are small and compiled once, as in the test suite
(the 32x32 toy training step compiles in 15 s instead of 25 and runs in
0.3 s instead of 0.2). Results agree with the default build to rounding
(fused multiply-adds are contracted differently), not bit for bit.

``DAGAN_JAX_CPU_FUSION_EMITTERS=0`` (or 1) switches XLA:CPU's MLIR fusion
emitters off (on) for the same steps (``xla_cpu_use_fusion_emitters``;
unset: XLA's default, on in jax 0.10.2). Off, fused loops are emitted by
XLA's older LLVM IR emitters, which compile faster: the toy training step
compiles in 8 s instead of 15 at -O0 and runs as fast (0.26 vs 0.28 s); at
the default level it compiles in 20 s instead of 24 but runs slower (0.18
vs 0.15 s), so it is a setting for the test suite, like the level above.

``DAGAN_JAX_WINOGRAD`` (:func:`winograd_convs`) is not a compile option
but a choice of program made while tracing: wide 3x3 convolutions as
Winograd F(2x2, 3x3) matmuls, on by default with the CPU backend.
"""

from __future__ import annotations

import os
from typing import Any

import jax

#: Environment variable choosing the CPU library: 'eigen' (default) or
#: 'ynnpack' (XLA's own default).
ENV = "DAGAN_JAX_CPU_LIBRARY"

#: XLA:CPU's own default value of the option (dots and convolutions to
#: YNNPACK).
YNNPACK_DEFAULT = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                   "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION")

#: Environment variable with LLVM's optimisation level on CPU (0-3).
OPT_LEVEL_ENV = "DAGAN_JAX_CPU_OPT_LEVEL"

#: Environment variable switching XLA:CPU's fusion emitters off (0) or on (1).
FUSION_EMITTERS_ENV = "DAGAN_JAX_CPU_FUSION_EMITTERS"

#: Environment variable for the Winograd route of wide 3x3 convolutions
#: (:func:`winograd_convs`): unset or 'auto' (on with the CPU backend), '1'
#: (on with every backend), '0' (off).
WINOGRAD_ENV = "DAGAN_JAX_WINOGRAD"

#: Every environment variable this module reads.
ENV_VARS = (ENV, OPT_LEVEL_ENV, FUSION_EMITTERS_ENV, WINOGRAD_ENV)

_CPU_OPTIONS = {
    "eigen": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "ynnpack": {"xla_cpu_experimental_ynn_fusion_type": YNNPACK_DEFAULT},
}


def compiler_options(backend: str | None = None) -> dict[str, Any] | None:
  """Options for ``jax.jit(..., compiler_options=...)`` on ``backend``
  (default: JAX's default backend); None where there are none.

  Raises:
    ValueError: ``DAGAN_JAX_CPU_LIBRARY`` names an unknown library,
      ``DAGAN_JAX_CPU_OPT_LEVEL`` is not one of 0-3, or
      ``DAGAN_JAX_CPU_FUSION_EMITTERS`` is not 0 or 1.
  """
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return None
  choice = os.environ.get(ENV, "eigen").strip().lower() or "eigen"
  if choice not in _CPU_OPTIONS:
    raise ValueError(f"{ENV}={choice!r}: expected one of {sorted(_CPU_OPTIONS)}")
  options = dict(_CPU_OPTIONS[choice])
  level = _env_choice(OPT_LEVEL_ENV, ("0", "1", "2", "3"),
                      "0, 1, 2 or 3 (LLVM's optimisation level)")
  if level:
    options["xla_backend_optimization_level"] = int(level)
  emitters = _env_choice(FUSION_EMITTERS_ENV, ("0", "1"),
                         "0 (XLA's older IR emitters), 1 (its MLIR fusion "
                         "emitters)")
  if emitters:
    options["xla_cpu_use_fusion_emitters"] = emitters == "1"
  return options


#: Options for a program that is compiled to be measured, never run (its
#: buffer assignment and FLOP count, ``dagan-jax info --memory``): LLVM at
#: -O0 and XLA:CPU's older loop emitters generate machine code much faster
#: from the same optimised HLO, so memory and FLOPs are those of the program
#: a run compiles.
ANALYSIS_ONLY = {"cpu": {"xla_backend_optimization_level": 0,
                         "xla_cpu_use_fusion_emitters": False}}


def analysis_options(backend: str | None = None) -> dict[str, Any] | None:
  """Extra compile options for a program compiled only for its analyses
  (:data:`ANALYSIS_ONLY`); None where there are none."""
  return ANALYSIS_ONLY.get(backend or jax.default_backend())


def _env_choice(name: str, allowed: tuple[str, ...], expected: str) -> str:
  """The value of environment variable ``name`` (stripped; '' when unset or
  empty), which must be one of ``allowed``; ``expected`` describes them."""
  value = os.environ.get(name, "").strip()
  if value and value not in allowed:
    raise ValueError(f"{name}={value!r}: expected {expected}, or unset for "
                     "XLA's default")
  return value


def winograd_convs(backend: str | None = None) -> bool:
  """Whether :func:`dagan_jax.models.layers.conv2d` runs wide 3x3 float32
  convolutions as Winograd F(2x2, 3x3) (:mod:`dagan_jax.ops.winograd`).

  An XLA:CPU measure (16 matmuls in place of XLA's convolution and its
  gradients), so by default only on the CPU backend; accelerators keep
  their own convolution kernels. ``DAGAN_JAX_WINOGRAD=0`` switches it off,
  ``=1`` on for every backend. Read when a function is traced.

  Raises:
    ValueError: ``DAGAN_JAX_WINOGRAD`` is not 'auto', 0 or 1.
  """
  value = _env_choice(WINOGRAD_ENV, ("auto", "0", "1"),
                      "auto (on with the CPU backend), 0 (off) or 1 (on)")
  if value in ("", "auto"):
    return (backend or jax.default_backend()) == "cpu"
  return value == "1"


def jit(fn, **kwargs):
  """``jax.jit`` with :func:`compiler_options` for the default backend."""
  return jax.jit(fn, compiler_options=compiler_options(), **kwargs)
