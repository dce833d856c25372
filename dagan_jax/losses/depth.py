"""Self-supervised face-depth losses (DaGAN Sec. 3.1; DaGAN++ Sec. 3.2,
Eq. 5-8), with monodepth2 / Face-Depth-Network conventions.

Images are NHWC in [0, 1]; per-pixel maps are (B, H, W, 1); several source
frames are stacked on a leading axis S: (S, B, H, W, C). The target view
I_i is reconstructed from each source I_s by the geometric warp of Eq. 3-4
(done by the caller with the camera ops), giving ``warped[s]``.

Terms (unweighted; :func:`weighted_depth_terms` applies the weights):

``photometric``  Eq. 5 error, minimum over sources, auto-masked.
    Without an uncertainty map this is monodepth2's value exactly:
    mean over pixels of min(identity errors + noise, reprojection errors).
    With an uncertainty map U it is Eq. 7's first term,
    mean_p M_a(p) * pe(p) / U(p).
``smoothness``   Eq. 6 edge-aware smoothness of the mean-normalised
    disparity (means over pixels, as the code; the paper writes sums).
``uncertainty``  Eq. 7's last term, mean_p M_a(p) * log U(p) (see
    :func:`uncertainty_weighted_loss` for the exact form and why the auto-mask
    also covers it).

Weights (``DEFAULT_DEPTH_WEIGHTS``): lambda_1 = 1 on ``photometric``,
lambda_2 = 1e-3 / 2^scale on ``smoothness`` (Face-Depth-Network's
``disparity_smoothness`` with monodepth2's per-scale halving), lambda_3 = 1 on
``uncertainty`` (the paper does not give lambda_1..3; with lambda_1 =
lambda_3 the optimal U equals the photometric error, which lies in [0, 1]
like the sigmoid output of Eq. 8). monodepth2 averages the per-scale totals
over its 4 scales.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

Array = jax.Array

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2
DEFAULT_DEPTH_WEIGHTS = {"photometric": 1.0, "smoothness": 1e-3,
                         "uncertainty": 1.0}
#: U is floored here before 1/U and log U (a sigmoid can underflow to 0).
MIN_UNCERTAINTY = 1e-7


def _avg_pool3(x: Array) -> Array:
  """3x3 mean, stride 1, after reflection padding by 1 (same size out)."""
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1),
                            "VALID")
  return s / 9.0


def ssim_map(x: Array, y: Array, *, c1: float = SSIM_C1,
             c2: float = SSIM_C2) -> Array:
  """Per-pixel, per-channel SSIM index (Wang et al. 2004) with monodepth2's
  window: 3x3 uniform mean after reflection padding, population variances.

    SSIM = (2 mu_x mu_y + c1)(2 s_xy + c2) / ((mu_x^2 + mu_y^2 + c1)(s_x + s_y + c2))

  Args: x, y: (B, H, W, C). Returns: (B, H, W, C), 1 where x == y.
  """
  mu_x, mu_y = _avg_pool3(x), _avg_pool3(y)
  s_x = _avg_pool3(x * x) - mu_x ** 2
  s_y = _avg_pool3(y * y) - mu_y ** 2
  s_xy = _avg_pool3(x * y) - mu_x * mu_y
  num = (2 * mu_x * mu_y + c1) * (2 * s_xy + c2)
  den = (mu_x ** 2 + mu_y ** 2 + c1) * (s_x + s_y + c2)
  return num / den


def photometric_error(pred: Array, target: Array, alpha: float = 0.85, *,
                      ssim_halved: bool = True) -> Array:
  """Photometric reconstruction error (DaGAN++ Eq. 5), per pixel.

  ``ssim_halved=True`` (default; monodepth2 and the released
  Face-Depth-Network ``compute_reprojection_loss``):
      alpha * clip((1 - SSIM) / 2, 0, 1) + (1 - alpha) * |pred - target|
  with alpha = 0.85. ``ssim_halved=False`` is Eq. 5 as printed,
      alpha * (1 - SSIM) + (1 - alpha) * |pred - target|,
  for which the paper states alpha = 0.8. Both terms are channel means.
  ``alpha=0`` is the plain L1 (monodepth2 ``--no_ssim``).

  Returns: (B, H, W, 1).
  """
  l1 = jnp.mean(jnp.abs(target - pred), axis=-1, keepdims=True)
  if alpha == 0:
    return l1
  dssim = 1.0 - ssim_map(pred, target)
  if ssim_halved:  # torch.clamp: gradient 1 on [0, 1], limits included
    dssim = dssim / 2.0
    dssim = jnp.where(dssim < 0.0, 0.0, jnp.where(dssim > 1.0, 1.0, dssim))
  dssim = jnp.mean(dssim, axis=-1, keepdims=True)
  return alpha * dssim + (1.0 - alpha) * l1


def edge_aware_smoothness(disp: Array, image: Array, *,
                          normalize: bool = True) -> Array:
  """Edge-aware disparity smoothness (DaGAN++ Eq. 6; monodepth2).

    mean |d_x D| exp(-mean_c |d_x I|) + mean |d_y D| exp(-mean_c |d_y I|)

  with forward differences, and D = disp / (spatial mean of disp + 1e-7)
  when ``normalize`` (monodepth2's mean-normalised disparity, which removes
  the scale ambiguity). Args: disp (B, H, W, 1); image (B, H, W, C) at the
  same resolution. Returns a scalar.
  """
  if disp.shape[1:3] != image.shape[1:3]:
    raise ValueError(f"smoothness: disparity {disp.shape} and image "
                     f"{image.shape} differ in size")
  if normalize:
    disp = disp / (jnp.mean(disp, axis=(1, 2), keepdims=True) + 1e-7)
  gdx = jnp.abs(disp[:, :, :-1] - disp[:, :, 1:])  # (B, H, W-1, 1)
  gdy = jnp.abs(disp[:, :-1] - disp[:, 1:])  # (B, H-1, W, 1)
  gix = jnp.mean(jnp.abs(image[:, :, :-1] - image[:, :, 1:]), -1, keepdims=True)
  giy = jnp.mean(jnp.abs(image[:, :-1] - image[:, 1:]), -1, keepdims=True)
  return jnp.mean(gdx * jnp.exp(-gix)) + jnp.mean(gdy * jnp.exp(-giy))


def min_over_sources(errors: Array) -> tuple[Array, Array]:
  """Per-pixel minimum over source frames (monodepth2, occlusion handling).

  The minimum is read at the argmin (the first source on ties), so its
  gradient reaches that one source, as ``torch.min(x, dim)``'s does. JAX's
  own gradient of ``jnp.min`` finds the minimum again by testing the
  operand for bitwise equality with the result and divides by the number of
  matches: where XLA computes the operand twice with different rounding (it
  recomputes elementwise producers inside each consuming fusion, and code
  generation may contract a multiply-add in one copy and not the other), no
  element matches and the gradient is 0/0 = NaN. That happened to the
  photometric error of the depth stage compiled with LLVM at -O0.

  Args: errors (S, B, H, W, 1). Returns (min (B, H, W, 1), argmin (B, H, W, 1)).
  """
  best = jnp.argmin(errors, axis=0)
  return _take_source(errors, best), best


def _take_source(x: Array, index: Array) -> Array:
  """``x[index[p], p]`` for every pixel p: (S, ...) and (...) -> (...)."""
  return jnp.take_along_axis(x, index[None], axis=0)[0]


def _smaller(a: Array, b: Array) -> Array:
  """Elementwise ``a if a < b else b`` (ties -> ``b``), with the gradient
  routed by that one comparison (``jnp.minimum``'s gradient compares the
  operands with the result again; see :func:`min_over_sources`)."""
  return jnp.where(a < b, a, b)


def automask(reprojection_errors: Array, identity_errors: Array, *,
             key: Array | None = None, noise_std: float = 1e-5
             ) -> dict[str, Array]:
  """monodepth2 auto-masking of stationary pixels (DaGAN++ M_a, Eq. 7).

  A pixel is kept when warping explains it better than not warping at all:
  M_a = [min_s reproj_s < min_s identity_s + noise], where identity_s is the
  photometric error between the *unwarped* source and the target and the
  noise (N(0, noise_std^2), from ``key``; none if ``key`` is None) breaks
  ties as in monodepth2. Ties go to the identity (masked), like
  ``torch.min`` over ``cat(identity, reprojection)``.

  Args: (S, B, H, W, 1) each. Returns a dict with ``mask`` (B, H, W, 1)
  float (no gradient), ``min_reprojection``, ``min_identity`` (noisy) and
  ``combined`` = min(min_identity, min_reprojection) (monodepth2's
  ``to_optimise``), all (B, H, W, 1).
  """
  min_id = jax.lax.stop_gradient(jnp.min(identity_errors, axis=0))
  if key is not None:
    min_id = min_id + noise_std * jax.random.normal(key, min_id.shape,
                                                    min_id.dtype)
  min_rep, _ = min_over_sources(reprojection_errors)
  mask = jax.lax.stop_gradient((min_rep < min_id).astype(min_rep.dtype))
  return {"mask": mask, "min_reprojection": min_rep, "min_identity": min_id,
          "combined": _smaller(min_rep, min_id)}


def uncertainty_weighted_loss(error: Array, uncertainty: Array,
                              mask: Array | None = None, *,
                              mask_regularizer: bool = True
                              ) -> dict[str, Array]:
  """Uncertainty-weighted photometric loss, DaGAN++ Eq. 7 (U from Eq. 8).

  Eq. 7 is L = lambda_1 (M_a / U) L_pe + lambda_2 L_D + lambda_3 log U.
  We implement, per pixel p, averaged over all B*H*W pixels:

    photometric = mean_p  M_a(p) * pe(p) / U(p)
    uncertainty = mean_p  M_a(p) * log U(p)      (mask_regularizer=True)
                  mean_p  log U(p)               (mask_regularizer=False)

  so that lambda_1 * photometric + lambda_3 * uncertainty has, at each kept
  pixel, d/dU = M_a (-lambda_1 pe / U^2 + lambda_3 / U), zero at the single
  minimum U* = lambda_1 pe / lambda_3: a large error raises the uncertainty
  and lowers that pixel's weight 1/U (non-rigid regions), a small one lowers
  it (rigid regions, Fig. 10). The paper writes log U unmasked
  (``mask_regularizer=False``); there, on masked pixels only lambda_3 log U
  remains, which decreases without bound as U -> 0 (for a sigmoid U the logit
  is pushed down forever, d/dz log sigmoid(z) -> 1), so by default the
  auto-mask covers the regulariser too ("ignore stationary pixels").
  U is floored at ``MIN_UNCERTAINTY`` before 1/U and log U.

  Args:
    error: (B, H, W, 1) photometric error pe (Eq. 5), min over sources.
    uncertainty: (B, H, W, 1) U in (0, 1].
    mask: (B, H, W, 1) M_a in {0, 1}; None keeps every pixel.
  """
  u = jnp.where(uncertainty > MIN_UNCERTAINTY, uncertainty, MIN_UNCERTAINTY)
  m = jnp.ones_like(error) if mask is None else mask
  reg_mask = m if mask_regularizer else jnp.ones_like(m)
  return {"photometric": jnp.mean(m * error / u),
          "uncertainty": jnp.mean(reg_mask * jnp.log(u))}


def depth_losses(target: Array, warped: Array, sources: Array, disp: Array,
                 color: Array | None = None, *,
                 uncertainty: Array | None = None,
                 key: Array | None = None,
                 use_automask: bool = True,
                 alpha: float = 0.85, ssim_halved: bool = True,
                 mask_regularizer: bool = True
                 ) -> tuple[dict[str, Array], dict[str, Array]]:
  """Depth-learning terms at one decoder scale (DaGAN++ Eq. 5-7).

  Args:
    target: (B, H, W, 3) target frame I_i.
    warped: (S, B, H, W, 3) target view reconstructed from each source
      (Eq. 3-4), at full resolution (monodepth2 upsamples every scale's
      depth before warping).
    sources: (S, B, H, W, 3) the unwarped source frames (auto-masking).
    disp: (B, h, w, 1) this scale's disparity (smoothness).
    color: (B, h, w, 3) the target at the disparity's size; default
      ``target`` (then h, w must be H, W).
    uncertainty: optional U (Eq. 8), (B, H, W, 1) shared by all sources or
      (S, B, H, W, 1) one per (target, source) pair; each pixel then uses the
      U of the source that gave its minimum error.
    key: PRNG key of the auto-mask tie-breaking noise (None: no noise).
    use_automask: monodepth2 auto-masking (off: plain min over sources).
    alpha, ssim_halved: :func:`photometric_error` options.
    mask_regularizer: :func:`uncertainty_weighted_loss` option.
  Returns:
    ``(terms, aux)``: terms ``photometric``, ``smoothness`` and, with U,
    ``uncertainty`` (scalars, unweighted); aux ``automask`` (B, H, W, 1;
    ones if off), ``automask_fraction`` and ``min_reprojection`` for logging.
  """
  if warped.ndim != 5:
    raise ValueError(f"warped must be (S, B, H, W, C); got {warped.shape}")
  pe = lambda p: photometric_error(p, target, alpha, ssim_halved=ssim_halved)
  reproj = jax.vmap(pe)(warped)  # (S, B, H, W, 1)
  min_rep, best = min_over_sources(reproj)
  if use_automask:
    if sources.shape != warped.shape:
      raise ValueError(f"sources {sources.shape} and warped {warped.shape} "
                       "differ")
    am = automask(reproj, jax.vmap(pe)(sources), key=key)
    mask, combined = am["mask"], am["combined"]
  else:
    mask, combined = jnp.ones_like(min_rep), min_rep

  terms: dict[str, Array] = {}
  if uncertainty is None:
    terms["photometric"] = jnp.mean(combined)
  else:
    if uncertainty.ndim == 5:  # per source: the U of the winning source
      uncertainty = _take_source(uncertainty, best)
    terms.update(uncertainty_weighted_loss(
        min_rep, uncertainty, mask if use_automask else None,
        mask_regularizer=mask_regularizer))
  terms["smoothness"] = edge_aware_smoothness(
      disp, target if color is None else color)
  aux = {"automask": mask, "automask_fraction": jnp.mean(mask),
         "min_reprojection": min_rep}
  return terms, aux


def weighted_depth_terms(terms: Mapping[str, Array],
                         weights: Mapping[str, float] | None = None,
                         scale: int = 0) -> dict[str, Array]:
  """Applies lambda_1..3 (``DEFAULT_DEPTH_WEIGHTS`` unless given); the
  smoothness weight is divided by 2^scale (monodepth2). Sum the result for
  this scale's total; average the totals over scales."""
  w = dict(DEFAULT_DEPTH_WEIGHTS, **(weights or {}))
  factor = {"photometric": w["photometric"],
            "smoothness": w["smoothness"] / (2 ** scale),
            "uncertainty": w["uncertainty"]}
  unknown = set(terms) - set(factor)
  if unknown:
    raise KeyError(f"unknown depth loss terms {sorted(unknown)}")
  return {k: factor[k] * v for k, v in terms.items()}
