"""Tolerances for float32 results, derived from float32 arithmetic.

Two float32 computations of the same real-valued function (ours and torch's,
or ours compiled two ways) agree only up to rounding, and how the rounding
falls depends on the machine: whether products are fused into adds (FMA),
the vector width that sets the order of long sums, which library kernel
runs. A test that asks for bit equality, or for a bound just above what one
run measured, tests the machine. These helpers state bounds in units of
float32's machine epsilon instead, relative to the magnitude of the values
compared, so that the same bound holds on any machine and any input whose
conditioning is the same.
"""

from __future__ import annotations

import numpy as np

#: float32 machine epsilon, 2^-23 (one ulp at 1.0).
EPS32 = float(np.finfo(np.float32).eps)


def assert_within_ulps(got, want, ulps: float, *, scale=None,
                       err_msg: str = "") -> None:
  """``|got - want| <= ulps * EPS32 * scale`` elementwise.

  ``scale`` (broadcast against the arrays) is the magnitude the rounding is
  relative to; by default ``max(|want|)`` over the whole array, at least 1e-30,
  which suits results of sums and products whose terms are of that size.
  """
  got = np.asarray(got, np.float64)
  want = np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape, err_msg)
  if scale is None:
    scale = max(float(np.max(np.abs(want))), 1e-30) if want.size else 1.0
  bound = ulps * EPS32 * np.asarray(scale, np.float64)
  err = np.abs(got - want)
  bad = ~(err <= bound)
  if np.any(bad):
    worst = np.unravel_index(np.argmax(np.where(bad, err / bound, 0)), err.shape)
    raise AssertionError(
        f"{int(bad.sum())} of {err.size} elements differ by more than "
        f"{ulps} ulps of their scale; worst at {worst}: got {got[worst]!r}, "
        f"want {want[worst]!r}, error {err[worst]:.3e} > bound "
        f"{np.broadcast_to(bound, err.shape)[worst]:.3e}. {err_msg}")


def warp_scale(image, grid_extent: float) -> float:
  """The magnitude a bilinear warp's rounding is relative to.

  A few ulps of a sampling grid whose coordinates reach ``grid_extent`` (in
  [-1, 1] units; include any amplification, e.g. a condition number) move a
  sample by ulps * EPS32 * grid_extent * W / 2 pixels, which changes the
  value by that times the image's largest step between neighbouring pixels;
  the blend itself adds a few ulps of the largest value. ``image`` is NHWC.
  """
  image = np.asarray(image, np.float64)
  steps = max(float(np.abs(np.diff(image, axis=a)).max()) for a in (1, 2))
  shift = grid_extent * image.shape[2] / 2
  return shift * steps + float(np.abs(image).max())
