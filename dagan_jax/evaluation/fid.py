"""Fréchet Inception Distance with a local Inception weights file.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge
to a Local Nash Equilibrium", NeurIPS 2017) fits a Gaussian to the pool3
features of Inception on each image set and reports

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).

Computed as pytorch-fid (mseitzer/pytorch-fid) computes it, so that numbers
compare with papers that use it:

* **Network**: TF's 2015 Inception in pytorch-fid's port
  (:mod:`dagan_jax.models.inception_fid`), weights from the user's local
  ``pt_inception-2015-12-05-6726825d.pth`` (:func:`load`; nothing is
  downloaded).
* **Input**: frames ``(N, H, W, 3)`` float in [0, 1] (uint8 is divided by
  255, as torchvision's ``ToTensor`` does for image files), resized to
  299x299 by ``F.interpolate(mode='bilinear', align_corners=False)`` --
  without anti-aliasing, torch's default, also when shrinking
  (:func:`dagan_jax.ops.resize_bilinear` is that resize) -- then scaled to
  [-1, 1] by ``2 x - 1``.
* **Statistics** in float64: the mean and ``np.cov(rowvar=False)`` (the
  unbiased covariance) of the float32 features.
* **Distance** (:func:`frechet_distance`): ``scipy.linalg.sqrtm`` of
  ``S_1 S_2``; if that is not finite, ``eps = 1e-6`` is added to both
  diagonals and it is taken again; an imaginary part on the diagonal above
  1e-3 is an error, a smaller one is dropped.

FID is biased for small sets and its covariance has rank below 2048 with
fewer than 2049 images: compare only numbers computed with the same number
of images. One 2048x2048 ``sqrtm`` takes tens of seconds on a 2-core CPU.

Typical use::

    model = fid.load("pt_inception-2015-12-05-6726825d.pth")
    score = fid.fid(real_frames, fake_frames, model)
    # or, over many videos: features per video, then one distance
    real = np.concatenate([model.features(v) for v in real_videos])
    fake = np.concatenate([model.features(v) for v in fake_videos])
    score = fid.fid_from_features(real, fake)
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Mapping, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax import compute
from dagan_jax.convert.inception_fid import load_weights
from dagan_jax.errors import DataError
from dagan_jax.models.inception_fid import FEATURE_DIM, INPUT_SIZE, FIDInceptionV3
from dagan_jax.ops import resize_bilinear

log = logging.getLogger("dagan_jax.evaluation")

#: pytorch-fid's diagonal offset for a singular covariance product.
EPS = 1e-6
#: Frames per compiled call (pytorch-fid's default batch is 50).
BATCH_SIZE = 32


def _check_frames(frames: Any, where: str) -> np.ndarray:
  """Frames as float32 ``(N, H, W, 3)`` in [0, 1], or a DataError."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
    raise DataError(f"{where}: expected frames (N, H, W, 3) with N, H, W > 0, "
                    f"got shape {frames.shape}")
  if frames.dtype == np.uint8:
    return frames.astype(np.float32) / np.float32(255)
  if not np.issubdtype(frames.dtype, np.floating):
    raise DataError(f"{where}: expected float frames in [0, 1] or uint8, "
                    f"got {frames.dtype}")
  frames = frames.astype(np.float32)
  lo, hi = float(frames.min()), float(frames.max())
  # A little slack for frames that went through float arithmetic.
  if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
    raise DataError(f"{where}: frames must lie in [0, 1], got values in "
                    f"[{lo:.4g}, {hi:.4g}] (divide 8-bit values by 255)")
  return frames


def _pool3(module: FIDInceptionV3, variables: Mapping[str, Any],
           frames: jax.Array) -> jax.Array:
  """[0, 1] frames -> pool3 features, with pytorch-fid's resize and scaling."""
  x = resize_bilinear(frames, (INPUT_SIZE, INPUT_SIZE))
  return module.apply(variables, 2 * x - 1)


class FIDInception:
  """The FID Inception with its weights; :meth:`features` runs it.

  Build with :func:`load` (from pytorch-fid's weights file) or from
  converted ``variables`` (``{'params', 'batch_stats'}`` of
  :class:`~dagan_jax.models.inception_fid.FIDInceptionV3`).
  """

  def __init__(self, variables: Mapping[str, Any], *, source: str = "<variables>",
               batch_size: int = BATCH_SIZE,
               precision: jax.lax.Precision | None = jax.lax.Precision.HIGHEST):
    if batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    self.source = source
    self.batch_size = int(batch_size)
    self.variables = jax.tree.map(jnp.asarray, dict(variables))
    # Inference rewrites on: BatchNorm folded into each conv (exact in real
    # arithmetic). One trace per (batch, H, W).
    self._run = compute.jit(functools.partial(_pool3, FIDInceptionV3(precision)),
                            inference=True)

  def features(self, frames: Any) -> np.ndarray:
    """``(N, H, W, 3)`` frames in [0, 1] (or uint8) -> ``(N, 2048)`` float32.

    Runs in batches of ``min(batch_size, N)`` frames; the last batch is
    padded with copies of its last frame (dropped from the output), so a
    frame size compiles once.
    """
    frames = _check_frames(frames, f"FID features ({self.source})")
    n = frames.shape[0]
    bs = min(self.batch_size, n)
    out = []
    for start in range(0, n, bs):
      chunk = frames[start:start + bs]
      if chunk.shape[0] < bs:
        pad = np.repeat(chunk[-1:], bs - chunk.shape[0], axis=0)
        chunk = np.concatenate([chunk, pad])
      out.append(np.asarray(self._run(self.variables, chunk)))
    return np.concatenate(out)[:n].astype(np.float32)


def load(path: str | os.PathLike, *, batch_size: int = BATCH_SIZE) -> FIDInception:
  """The FID Inception from pytorch-fid's weights file at ``path``.

  Errors name the file (missing, unreadable, torch not installed, keys or
  shapes not those of the FID network); see
  :func:`dagan_jax.convert.inception_fid.load_weights`.
  """
  return FIDInception(load_weights(path), source=os.fspath(path),
                      batch_size=batch_size)


def statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
  """``(N, D)`` features -> float64 mean ``(D,)`` and unbiased covariance
  ``(D, D)`` (pytorch-fid's ``np.mean`` / ``np.cov(rowvar=False)``)."""
  act = np.asarray(features, np.float64)
  if act.ndim != 2 or act.shape[0] < 2:
    raise DataError(f"FID statistics need features (N, D) with N >= 2, got "
                    f"shape {act.shape}")
  return act.mean(axis=0), np.cov(act, rowvar=False)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any,
                     eps: float = EPS) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), pytorch-fid's
  ``calculate_frechet_distance`` (see the module doc for the eps and
  imaginary-part rules). Computed in float64."""
  from scipy import linalg  # pylint: disable=import-outside-toplevel

  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.shape != (d,) or mu2.shape != (d,):
    raise DataError(f"Fréchet distance: means must be vectors of one length, "
                    f"got {mu1.shape} and {mu2.shape}")
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise DataError(f"Fréchet distance: covariances must be ({d}, {d}) like "
                    f"the means, got {sigma1.shape} and {sigma2.shape}")
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    log.warning("FID: the covariance product is singular; adding %g to the "
                "diagonals", eps)
    offset = np.eye(d) * eps
    covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise DataError("Fréchet distance: sqrtm(sigma1 sigma2) has an imaginary "
                      f"part up to {np.abs(covmean.imag).max():.3g} (are the "
                      "covariances positive semi-definite?)")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2 * np.trace(covmean))


def fid_from_features(real: Any, fake: Any) -> float:
  """FID between two sets of features ``(N, D)`` (``N >= 2`` each)."""
  real, fake = np.asarray(real), np.asarray(fake)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise DataError(f"FID: feature sets must be (N, D) with one D, got "
                    f"{real.shape} and {fake.shape}")
  return frechet_distance(*statistics(real), *statistics(fake))


class _HasFeatures(Protocol):
  def features(self, frames: Any) -> np.ndarray: ...


def fid(real_frames: Any, fake_frames: Any, model: _HasFeatures) -> float:
  """FID between two frame sets ``(N, H, W, 3)`` in [0, 1] (sizes may differ
  between the sets; each needs at least 2 frames), with ``model`` from
  :func:`load`."""
  return fid_from_features(model.features(real_frames),
                           model.features(fake_frames))


__all__ = ["BATCH_SIZE", "EPS", "FEATURE_DIM", "FIDInception", "fid",
           "fid_from_features", "frechet_distance", "load", "statistics"]
