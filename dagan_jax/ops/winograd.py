"""3x3 convolutions by Winograd's minimal filtering (Lavin & Gray, CVPR 2016).

``conv3x3_winograd(x, kernel, bias, m)`` computes exactly what
``conv2d(x, kernel, bias, padding=1)`` computes for a 3x3 kernel, stride 1,
zero padding 1 (NHWC input, HWIO kernel), with the algorithm F(m x m, 3 x 3):

* the input, padded by 1, is cut into overlapping ``(m + 2) x (m + 2)``
  tiles with stride ``m`` (``T`` tiles per image);
* input tiles and the kernel are transformed, ``V = B^T d B`` and
  ``U = G g G^T``, and the convolution becomes ``(m + 2)^2`` independent
  matrix products ``M_p = V_p (T, Cin) @ U_p (Cin, Cout)``, one per point
  ``p`` of the transformed tile;
* the output tiles are ``Y = A^T M A`` (``m x m`` pixels each).

Multiplies per output pixel and channel pair: ``(m + 2)^2 / m^2`` instead of
9, i.e. 2.25x fewer for F(2x2, 3x3) (16 / 4 = 4 products per pixel) and 4x
fewer for F(4x4, 3x3) (36 / 16). The products are plain batched matmuls,
which XLA:CPU runs faster than its direct convolution
(``benchmarks/run.py`` measures both). The transforms are additions and a
few small constants; they cost memory traffic, not arithmetic.

Exact in real arithmetic. In float32 the result differs from the direct
convolution by rounding only; F(2x2, 3x3)'s transforms use the constants
0, +-1 and 1/2 (exactly representable) and its error is of the order of the
direct convolution's. F(4x4, 3x3) uses the points 0, +-1, +-2 and has a
larger error constant (about 10x F(2,3)'s, still ~1e-6 relative in
float32); it is offered for measurement.

Differentiable (the backward pass is again batched matmuls and
transforms); the kernel transform is computed per call, so it works with
traced parameters.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@functools.lru_cache(maxsize=None)
def winograd_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(B^T, G, A^T)`` of F(m, 3) as float64 numpy arrays.

  ``B^T`` is ``(m+2, m+2)``, ``G`` is ``(m+2, 3)``, ``A^T`` is ``(m, m+2)``.
  F(2, 3) uses the points (0, 1, -1, inf) and F(4, 3) the points
  (0, 1, -1, 2, -2, inf), in Lavin & Gray's scaling.
  """
  if m == 2:
    bt = np.array([[1, 0, -1, 0],
                   [0, 1, 1, 0],
                   [0, -1, 1, 0],
                   [0, 1, 0, -1]], np.float64)
    g = np.array([[1, 0, 0],
                  [.5, .5, .5],
                  [.5, -.5, .5],
                  [0, 0, 1]], np.float64)
    at = np.array([[1, 1, 1, 0],
                   [0, 1, -1, -1]], np.float64)
  elif m == 4:
    bt = np.array([[4, 0, -5, 0, 1, 0],
                   [0, -4, -4, 1, 1, 0],
                   [0, 4, -4, -1, 1, 0],
                   [0, -2, -1, 2, 1, 0],
                   [0, 2, -1, -2, 1, 0],
                   [0, 4, 0, -5, 0, 1]], np.float64)
    g = np.array([[1 / 4, 0, 0],
                  [-1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6],
                  [0, 0, 1]], np.float64)
    at = np.array([[1, 1, 1, 1, 1, 0],
                   [0, 1, -1, 2, -2, 0],
                   [0, 1, 1, 4, 4, 0],
                   [0, 1, -1, 8, -8, 1]], np.float64)
  else:
    raise ValueError(f"Winograd F({m}x{m}, 3x3) is not implemented; use m=2 or 4")
  return bt, g, at


def _combine(terms: list[Array], coeffs) -> Array:
  """``sum_k coeffs[k] * terms[k]`` skipping zero coefficients (unit ones
  without a multiply)."""
  out = None
  for c, t in zip(coeffs, terms):
    c = float(c)
    if c == 0:
      continue
    if c == 1:
      term = t
    elif c == -1:
      term = -t
    else:
      term = t * jnp.asarray(c, t.dtype)
    out = term if out is None else out + term
  if out is None:
    return jnp.zeros_like(terms[0])
  return out


def _outer_combine(terms: list[list[Array]], left: np.ndarray,
                   right: np.ndarray) -> Array:
  """``sum_{r,s} left[r] * right[s] * terms[r][s]``: one expression of the
  inputs (no shared intermediates), so XLA fuses every output point and
  their stacking into a single loop over the input."""
  flat, coeffs = [], []
  for r, lr in enumerate(left):
    for s, rs in enumerate(right):
      if lr != 0 and rs != 0:
        flat.append(terms[r][s])
        coeffs.append(lr * rs)
  return _combine(flat, coeffs)


def winograd_kernel(kernel: Array, m: int = 2) -> Array:
  """``U = G g G^T`` of a ``(3, 3, Cin, Cout)`` kernel: ``((m+2)^2, Cin,
  Cout)``, points in row-major order (elementwise sums of the 9 taps)."""
  _, g, _ = winograd_matrices(m)
  n = m + 2
  taps = [[kernel[r, s] for s in range(3)] for r in range(3)]
  return jnp.stack([_outer_combine(taps, g[i], g[j])
                    for i in range(n) for j in range(n)])


def winograd_input(x: Array, m: int = 2) -> tuple[Array, tuple[int, int]]:
  """``V = B^T d B`` of every tile of ``x`` (B, H, W, C) padded by 1.

  Returns ``(V ((m+2)^2, B * th * tw, C), (th, tw))`` with ``th = ceil(H /
  m)`` tiles down and ``tw`` across (the input is zero-padded at the bottom
  and right to whole tiles; those outputs are cropped later).
  """
  bt, _, _ = winograd_matrices(m)
  n = m + 2
  b, h, w, c = x.shape
  th, tw = -(-h // m), -(-w // m)
  xp = jnp.pad(x, ((0, 0), (1, 1 + th * m - h), (1, 1 + tw * m - w), (0, 0)))
  # d[r][s] = the tile pixel (r, s) of every tile: a strided slice of xp.
  d = [[jax.lax.slice(xp, (0, r, s, 0),
                      (b, r + m * (th - 1) + 1, s + m * (tw - 1) + 1, c),
                      (1, m, m, 1)) for s in range(n)] for r in range(n)]
  v = jnp.stack([_outer_combine(d, bt[i], bt[j])
                 for i in range(n) for j in range(n)])
  return v.reshape(n * n, b * th * tw, c), (th, tw)


def winograd_output(mm: Array, batch: int, tiles: tuple[int, int],
                    out_hw: tuple[int, int], m: int = 2) -> Array:
  """``Y = A^T M A`` of the products ``mm`` ((m+2)^2, B * th * tw, Cout),
  interleaved to (B, H, W, Cout) and cropped to ``out_hw``."""
  _, _, at = winograd_matrices(m)
  n = m + 2
  th, tw = tiles
  co = mm.shape[-1]
  mm = mm.reshape(n, n, batch, th, tw, co)
  pts = [[mm[i, j] for j in range(n)] for i in range(n)]
  rows = [jnp.stack([_outer_combine(pts, at[a], at[bb]) for bb in range(m)],
                    axis=3) for a in range(m)]  # each (B, th, tw, m, C)
  y = jnp.stack(rows, axis=2)  # (B, th, m, tw, m, C)
  y = y.reshape(batch, th * m, tw * m, co)
  return y[:, :out_hw[0], :out_hw[1]]


def conv3x3_winograd(x: Array, kernel: Array, bias: Array | None = None, *,
                     m: int = 2, precision=None,
                     preferred_element_type=None,
                     split_points: bool = False) -> Array:
  """``conv2d(x, kernel, bias, padding=1)`` (3x3, stride 1) by F(m x m, 3x3).

  Args:
    x: (B, H, W, Cin) NHWC.
    kernel: (3, 3, Cin, Cout) HWIO.
    bias: (Cout,) or None.
    m: output tile size, 2 (default) or 4.
    precision: of the batched matmuls.
    preferred_element_type: accumulation type of the matmuls (e.g. float32
      for bfloat16 inputs).
    split_points: one matmul per transformed point instead of one batched
      matmul (XLA:CPU runs some batched shapes slower).
  Returns:
    (B, H, W, Cout), the dtype of ``x`` (or ``preferred_element_type``).
  """
  if kernel.shape[:2] != (3, 3):
    raise ValueError(f"conv3x3_winograd needs a 3x3 kernel; got {kernel.shape}")
  b, h, w, _ = x.shape
  u = winograd_kernel(kernel.astype(x.dtype), m)  # (P, Cin, Cout)
  v, tiles = winograd_input(x, m)  # (P, T, Cin)
  if split_points:
    mm = jnp.stack([jnp.dot(v[p], u[p], precision=precision,
                            preferred_element_type=preferred_element_type)
                    for p in range(v.shape[0])])
  else:
    mm = jnp.einsum("ptc,pco->pto", v, u, precision=precision,
                    preferred_element_type=preferred_element_type)
  y = winograd_output(mm, b, tiles, (h, w), m)
  if bias is not None:
    y = y + bias.astype(y.dtype)
  return y
