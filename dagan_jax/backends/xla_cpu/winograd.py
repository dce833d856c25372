"""3x3 convolutions by Winograd's minimal filtering (Lavin & Gray, CVPR 2016).

:func:`conv3x3_f23` computes exactly what ``conv2d(x, kernel, bias,
padding=1)`` computes for a 3x3 kernel, stride 1, zero padding 1 (NHWC
input, HWIO kernel), with the algorithm F(2x2, 3x3):

* the input, padded by 1, is cut into overlapping 4x4 tiles with stride 2
  (``T`` tiles per image);
* input tiles and the kernel are transformed, ``V = B^T d B`` and
  ``U = G g G^T``, and the convolution becomes 16 independent matrix
  products ``M_p = V_p (T, Cin) @ U_p (Cin, Cout)``, one per point ``p`` of
  the transformed tile;
* the output tiles are ``Y = A^T M A`` (2x2 pixels each).

Multiplies per output pixel and channel pair: 16 / 4 = 4 instead of 9,
2.25x fewer.

The form (what :func:`dagan_jax.backends.xla_cpu.conv.conv2d` routes wide
3x3 convolutions to, in training and in inference) is written for XLA:CPU:

* the 16 points are 16 separate arrays and 16 plain matmuls. Stacking them
  into one ``(16, T, C)`` operand made XLA emit the transform as one
  concatenating loop that ran at under 1 GB/s (48 ms for the input
  transform of a 2x64x64x256 map; 3.5 ms as 16 outputs of one fusion);
* tile pixels are read as the four row / column phases of the unpadded
  input, shifted by at most one tile, instead of strided slices of a padded
  copy (no padded copy is written);
* the backward pass is written out (``jax.custom_vjp``): the input gradient
  is ``dV_p = dM_p U_p^T`` followed by the transpose of the input
  transform, the weight gradient ``dU_p = V_p^T dM_p`` (the forward's
  transformed tiles are its residuals) followed by the transpose of the
  kernel transform. Both are again 16 matmuls with 2.25x fewer
  multiply-adds than XLA's convolution gradients, and neither depends on
  the batch size.

On the project's 2-core CPU (``benchmarks/run.py`` and BENCHMARKS.md for
the whole training step) forward + both gradients of a 3x3 256 -> 256 conv
on 2x64x64 take 137 ms against 261 ms for XLA's convolution, 512 -> 512 on
2x32x32 197 against 289 ms, with a C allocator that keeps freed memory
(``dagan_jax.allocator``); with glibc's ``malloc``, which maps the
program's larger temporary buffers afresh at every call, the larger
transformed tiles cost page faults and the gain shrinks (1.6x instead of
1.9x at 256 channels; a loss on 256x256 maps with 64 channels).

Exact in real arithmetic. In float32 the result differs from the direct
convolution by rounding only; F(2x2, 3x3)'s transforms use the constants
0, +-1 and 1/2 (exactly representable) and its error is of the order of the
direct convolution's. (F(4x4, 3x3), which would save more multiplies,
uses the points 0, +-1, +-2 with a larger error constant; a stacked form of
it was measured and dropped: nothing ran it.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


# --------------------------------------------------------------------------
# F(2x2, 3x3) for XLA:CPU

#: Rows of B^T of F(2, 3) as (tile pixel, coefficient) pairs.
_BT = (((0, 1.0), (2, -1.0)), ((1, 1.0), (2, 1.0)),
       ((1, -1.0), (2, 1.0)), ((1, 1.0), (3, -1.0)))
#: Rows of A^T as (point, coefficient) pairs.
_AT = (((0, 1.0), (1, 1.0), (2, 1.0)), ((1, 1.0), (2, -1.0), (3, -1.0)))
#: G of F(2, 3): point i of the transformed kernel = sum_r G[i][r] g[r].
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
#: Tile pixel r (0..3) of tile t reads input row 2t + r - 1, i.e. phase
#: ``(2t + r - 1) % 2`` of the (tiles, 2) view of the rows, at tile
#: ``t - shift``.
_PIXEL_PHASE = ((1, 1), (0, 0), (1, 0), (0, -1))  # r -> (phase, shift)


def _lin(terms):
  """``sum c * a`` over ``(c, a)`` pairs (zero coefficients skipped, unit
  ones without a multiply)."""
  out = None
  for c, a in terms:
    if c == 0:
      continue
    a = a if c == 1 else (-a if c == -1 else a * jnp.asarray(c, a.dtype))
    out = a if out is None else out + a
  return out


def _shift(a: Array, axis: int, s: int) -> Array:
  """``out[t] = a[t - s]`` along ``axis`` with zeros shifted in (|s| <= 1)."""
  if s == 0:
    return a
  n = a.shape[axis]
  pad = [(0, 0)] * a.ndim
  pad[axis] = (1, 0) if s > 0 else (0, 1)
  start = 0 if s > 0 else 1
  return jax.lax.slice_in_dim(jnp.pad(a, pad), start, start + n, axis=axis)


def _phases(x: Array) -> list[list[Array]]:
  """(B, 2th, 2tw, C) -> its four phases ``[p][q]``, each (B, th, tw, C):
  ``x[:, 2i + p, 2j + q]``."""
  b, h, w, c = x.shape
  xr = x.reshape(b, h // 2, 2, w // 2, 2, c)
  return [[xr[:, :, p, :, q] for q in range(2)] for p in range(2)]


def _interleave(ph: list[list[Array]]) -> Array:
  """Inverse of :func:`_phases`."""
  b, th, tw, c = ph[0][0].shape
  y = jnp.stack([jnp.stack(row, axis=3) for row in ph], axis=2)
  return y.reshape(b, 2 * th, 2 * tw, c)


def _input_points(x: Array) -> list[Array]:
  """``V = B^T d B`` of every 4x4 tile (stride 2) of ``x`` padded by 1, as
  16 arrays ``(B * th * tw, C)``, points in row-major order; ``x`` has even
  height and width."""
  b, h, w, c = x.shape
  ph = _phases(x)
  d = [[_shift(_shift(ph[_PIXEL_PHASE[r][0]][_PIXEL_PHASE[s][0]],
                      1, _PIXEL_PHASE[r][1]), 2, _PIXEL_PHASE[s][1])
        for s in range(4)] for r in range(4)]
  rows = b * (h // 2) * (w // 2)
  return [_lin([(ci * cj, d[r][s]) for r, ci in _BT[i] for s, cj in _BT[j]]
               ).reshape(rows, c) for i in range(4) for j in range(4)]


def _input_points_t(dv: list[Array], shape: tuple[int, ...]) -> Array:
  """Transpose of :func:`_input_points`: 16 ``(T, C)`` -> (B, H, W, C)."""
  b, h, w, c = shape
  dv = [v.reshape(b, h // 2, w // 2, c) for v in dv]
  acc = [[None, None], [None, None]]
  for r in range(4):
    for s in range(4):
      g = _lin([(ci * cj, dv[4 * i + j])
                for i in range(4) for rr, ci in _BT[i] if rr == r
                for j in range(4) for ss, cj in _BT[j] if ss == s])
      (pr, sr), (ps, ss_) = _PIXEL_PHASE[r], _PIXEL_PHASE[s]
      g = _shift(_shift(g, 1, -sr), 2, -ss_)
      acc[pr][ps] = g if acc[pr][ps] is None else acc[pr][ps] + g
  return _interleave(acc)


def _kernel_points(kernel: Array) -> list[Array]:
  """``U = G g G^T`` of a (3, 3, Cin, Cout) kernel: 16 arrays (Cin, Cout)."""
  return [_lin([(_G[i][r] * _G[j][s], kernel[r, s])
                for r in range(3) for s in range(3)])
          for i in range(4) for j in range(4)]


def _kernel_points_t(du: list[Array]) -> Array:
  """Transpose of :func:`_kernel_points`: 16 (Cin, Cout) -> (3, 3, Cin, Cout)."""
  return jnp.stack([jnp.stack([_lin([(_G[i][r] * _G[j][s], du[4 * i + j])
                                     for i in range(4) for j in range(4)])
                               for s in range(3)]) for r in range(3)])


def _output_points(m: list[Array], shape: tuple[int, ...]) -> Array:
  """``Y = A^T M A``: 16 ``(T, Cout)`` products -> (B, H, W, Cout)."""
  b, h, w = shape[:3]
  co = m[0].shape[-1]
  m = [p.reshape(b, h // 2, w // 2, co) for p in m]
  return _interleave([[_lin([(ca * cb, m[4 * i + j]) for i, ca in _AT[a]
                             for j, cb in _AT[q]]) for q in range(2)]
                      for a in range(2)])


def _output_points_t(dy: Array) -> list[Array]:
  """Transpose of :func:`_output_points`: (B, H, W, Cout) -> 16 (T, Cout)."""
  b, h, w, co = dy.shape
  ph = _phases(dy)
  rows = b * (h // 2) * (w // 2)
  out = []
  for i in range(4):
    for j in range(4):
      out.append(_lin([(ca * cb, ph[a][q])
                       for a in range(2) for ii, ca in _AT[a] if ii == i
                       for q in range(2) for jj, cb in _AT[q] if jj == j]
                      ).reshape(rows, co))
  return out


def _even(x: Array) -> Array:
  """``x`` zero-padded at the bottom / right to even height and width."""
  _, h, w, _ = x.shape
  if h % 2 or w % 2:
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
  return x


def _dots(a: list[Array], b: list[Array], dims, precision, dtype) -> list[Array]:
  return [jax.lax.dot_general(p, q, (dims, ((), ())), precision=precision,
                              preferred_element_type=dtype)
          for p, q in zip(a, b)]


_NN = ((1,), (0,))   # (T, Ci) @ (Ci, Co)
_NT = ((1,), (1,))   # (T, Co) @ (Ci, Co)^T
_TN = ((0,), (0,))   # (T, Ci)^T @ (T, Co)


def _f23_forward(x, kernel, precision, dtype):
  xe = _even(x)
  v = _input_points(xe)
  u = _kernel_points(kernel)
  y = _output_points(_dots(v, u, _NN, precision, dtype), xe.shape)
  return y[:, :x.shape[1], :x.shape[2]], (v, u)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _f23(x: Array, kernel: Array, precision, dtype) -> Array:
  return _f23_forward(x, kernel, precision, dtype)[0]


def _f23_fwd(x, kernel, precision, dtype):
  y, residuals = _f23_forward(x, kernel, precision, dtype)
  return y, residuals


def _f23_bwd(precision, dtype, residuals, dy):
  v, u = residuals
  b, h, w, _ = dy.shape
  dye = _even(dy.astype(v[0].dtype))
  dm = _output_points_t(dye)
  dv = _dots(dm, u, _NT, precision, dtype)
  du = _dots(v, dm, _TN, precision, dtype)
  dx = _input_points_t(dv, (b, dye.shape[1], dye.shape[2], v[0].shape[-1]))
  return (dx[:, :h, :w].astype(v[0].dtype),
          _kernel_points_t(du).astype(u[0].dtype))


_f23.defvjp(_f23_fwd, _f23_bwd)


def conv3x3_f23(x: Array, kernel: Array, bias: Array | None = None, *,
                precision=None, preferred_element_type=None) -> Array:
  """``conv2d(x, kernel, bias, padding=1)`` (3x3, stride 1) by F(2x2, 3x3)
  in the form described in the module docstring (16 matmuls, written-out
  backward pass). Any height and width (odd ones are padded to even and
  cropped). ``preferred_element_type``: accumulation type of the matmuls."""
  if x.ndim != 4 or kernel.shape[:2] != (3, 3) or kernel.shape[2] != x.shape[-1]:
    raise ValueError(f"conv3x3_f23 needs NHWC input and a (3, 3, Cin, Cout) "
                     f"kernel; got {x.shape} and {kernel.shape}")
  y = _f23(x, kernel.astype(x.dtype), precision, preferred_element_type)
  if bias is not None:
    y = y + bias.astype(y.dtype)
  return y
