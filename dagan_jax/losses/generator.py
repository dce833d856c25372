"""Keypoint-detector / generator / discriminator losses of DaGAN and DaGAN++.

Each function is pure and returns a dict of *named terms* using the official
log names (``perceptual``, ``gen_gan``, ``feature_matching``,
``equivariance_value``, ``equivariance_jacobian``, ``kp_distance``,
``disc_gan``). Scalar loss weights are applied in one place,
:func:`dagan_jax.losses.weights.apply_loss_weights`; the per-layer weight
lists of the perceptual and feature-matching losses are part of those terms'
definitions and are passed to them here (official ``GeneratorFullModel``).

Conventions: NHWC images in [0, 1]; keypoints ``{'value': (B, K, 2),
'jacobian': (B, K, 2, 2)}`` with (x, y) in [-1, 1]; discriminator outputs
``{'prediction_map_<s>': (B, h, w, 1), 'feature_maps_<s>': [maps]}``;
pyramids ``{'prediction_<s>': (B, H_s, W_s, C)}``.

What sits under ``stop_gradient`` (as the official ``.detach()``):
the real image's VGG features (perceptual); the real discriminator feature
maps (feature matching -- they do not depend on the generator either way).
The trainer must itself pass ``stop_gradient(prediction)`` and detached
keypoints to the discriminator for its own step, and detached ``kp_driving``
to the discriminator in the generator step (official ``detach_kp``).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Sequence

import jax
import jax.numpy as jnp

from dagan_jax import ops
from dagan_jax.compute import mean_all

Array = jax.Array
KP = Mapping[str, Array]


def _scale_of(key: str, prefix: str) -> float:
  return float(key[len(prefix):].replace("-", "."))


def _keys(d: Mapping[str, Any], prefix: str) -> list[str]:
  """Keys starting with ``prefix``, in decreasing scale (1, 0.5, ...)."""
  return sorted((k for k in d if k.startswith(prefix)),
                key=lambda k: -_scale_of(k, prefix))


def perceptual_pyramid_loss(vgg_apply: Callable[[Array], Sequence[Array]],
                            real_pyramid: Mapping[str, Array],
                            fake_pyramid: Mapping[str, Array],
                            weights: Sequence[float], *,
                            shared_batch: bool = False) -> dict[str, Array]:
  """Multi-scale VGG perceptual loss (FOMM Sec. 3.3; DaGAN++ Eq. 15).

    perceptual = sum_s sum_i w_i * mean |V_i(fake_s) - sg(V_i(real_s))|

  over the pyramid scales ``s`` (keys ``prediction_<s>`` of
  ``fake_pyramid``) and the first ``len(weights)`` VGG outputs ``i``;
  ``sg`` = stop_gradient (official ``y_vgg[i].detach()``), the mean is over
  all of (B, h, w, C). ``vgg_apply(images) -> list of feature maps`` must
  treat samples independently (no batch statistics): with ``shared_batch``
  the real and fake images of a scale go through it as one batch. That is
  not the default: the backward pass of a shared batch computes the input
  gradient of the real half too (XLA cannot slice through the convolutions),
  about 125 GFLOP of waste in a DaGAN 256x256 step at batch 2.
  """
  total = jnp.zeros((), jnp.float32)
  for key in _keys(fake_pyramid, "prediction_"):
    fake = fake_pyramid[key]
    real = jax.lax.stop_gradient(real_pyramid[key])
    if shared_batch:
      feats = vgg_apply(jnp.concatenate([fake, real], axis=0))
      b = fake.shape[0]
      fake_feats = [f[:b] for f in feats]
      real_feats = [f[b:] for f in feats]
    else:
      fake_feats, real_feats = vgg_apply(fake), vgg_apply(real)
    if len(weights) > len(fake_feats):
      raise ValueError(f"{len(weights)} perceptual weights for "
                       f"{len(fake_feats)} VGG layers")
    for w, f, r in zip(weights, fake_feats, real_feats):
      total = total + w * mean_all(jnp.abs(f - jax.lax.stop_gradient(r)))
  return {"perceptual": total}


def lsgan_generator_loss(disc_fake: Mapping[str, Any]) -> dict[str, Array]:
  """LSGAN generator term: sum over scales of mean (1 - D(fake))^2."""
  total = jnp.zeros((), jnp.float32)
  for key in _keys(disc_fake, "prediction_map_"):
    total = total + jnp.mean((1.0 - disc_fake[key]) ** 2)
  return {"gen_gan": total}


def lsgan_discriminator_loss(disc_real: Mapping[str, Any],
                             disc_fake: Mapping[str, Any]) -> dict[str, Array]:
  """LSGAN discriminator term: sum over scales of
  mean[(1 - D(real))^2 + D(fake)^2] (official ``DiscriminatorFullModel``).

  ``disc_fake`` must come from ``stop_gradient(prediction)``.
  """
  total = jnp.zeros((), jnp.float32)
  for key in _keys(disc_real, "prediction_map_"):
    total = total + jnp.mean((1.0 - disc_real[key]) ** 2 + disc_fake[key] ** 2)
  return {"disc_gan": total}


def feature_matching_loss(real_maps: Mapping[str, Any],
                          fake_maps: Mapping[str, Any],
                          weights: Sequence[float]) -> dict[str, Array]:
  """Discriminator feature matching (pix2pixHD; FOMM Sec. 3.3).

    feature_matching = sum_s sum_i w_i * mean |sg(D_i(real_s)) - D_i(fake_s)|

  over scales ``s`` (``feature_maps_<s>``) and blocks ``i``; layers with
  weight 0 are skipped like the official loop. ``real_maps`` / ``fake_maps``
  are full discriminator outputs (dicts). The real maps do not depend on the
  generator (the discriminator sees detached keypoints), so the stop_gradient
  changes no generator gradient; it keeps this term from ever reaching the
  discriminator.
  """
  total = jnp.zeros((), jnp.float32)
  for key in _keys(fake_maps, "feature_maps_"):
    reals, fakes = real_maps[key], fake_maps[key]
    if len(weights) < len(fakes):
      raise ValueError(f"{len(weights)} feature_matching weights for "
                       f"{len(fakes)} discriminator feature maps ({key})")
    for w, a, b in zip(weights, reals, fakes):
      if w == 0:
        continue
      total = total + w * mean_all(jnp.abs(jax.lax.stop_gradient(a) - b))
  return {"feature_matching": total}


def equivariance_losses(kp_driving: KP, transformed_kp: KP,
                        tps_params: Any) -> dict[str, Array]:
  """Equivariance of keypoints under a random TPS T (FOMM Eq. 7-8;
  DaGAN++ Eq. 16), exactly as the official ``GeneratorFullModel``.

  ``transformed_kp`` are the keypoints detected on ``T(driving)`` (the frame
  pulled through ``ops.warp_frame(tps_params, driving)``), so T maps them
  back onto the driving keypoints:

    equivariance_value    = mean |kp_d - T(kp_t)|
    equivariance_jacobian = mean |I - J_d^{-1} (J_T(kp_t) J_t)|

  means over (B, K, 2) and (B, K, 2, 2); J_d^{-1} is ``ops.inverse_2x2``
  (torch.inverse's arithmetic). J_T is the TPS Jacobian at the
  transformed keypoints (``ops.tps_jacobian``), differentiable w.r.t. them
  as the official ``create_graph=True``. Gradients flow into both keypoint
  sets (nothing detached). The Jacobian term is returned only when both
  keypoint dicts have a ``'jacobian'``.
  """
  warped = ops.warp_coordinates(tps_params, transformed_kp["value"])
  out = {"equivariance_value":
         jnp.mean(jnp.abs(kp_driving["value"] - warped))}
  if "jacobian" in kp_driving and "jacobian" in transformed_kp:
    j_tps = ops.tps_jacobian(tps_params, transformed_kp["value"])  # (B,K,2,2)
    j_transformed = j_tps @ transformed_kp["jacobian"]
    value = ops.inverse_2x2(kp_driving["jacobian"]) @ j_transformed
    eye = jnp.eye(2, dtype=value.dtype)
    out["equivariance_jacobian"] = jnp.mean(jnp.abs(eye - value))
  return out


KpDistanceForm = Literal["sign", "hinge"]


def keypoint_distance_loss(kp_values: Array, threshold: float = 0.2,
                           form: KpDistanceForm = "sign") -> Array:
  """Penalty on keypoint pairs closer than ``threshold`` (DaGAN++ Eq. 17).

  With d_ij = sqrt(|x_i - x_j|^2 + 1e-8) (Euclidean; the paper writes an L1
  norm and a sum, the official code uses this L2 and a mean):

  ``'sign'`` (official): mean_{b,i,j} [1 - sign(d_ij + thr*[i=j] - thr)],
      i.e. 2 per pair closer than ``thr`` (1 at exactly ``thr``), 0 on the
      diagonal; the mean includes the K diagonal entries. Piecewise constant:
      its gradient is zero everywhere, so it only *reports* clustering (the
      official code adds it to the loss, which changes nothing).
  ``'hinge'`` (ours, differentiable): mean_{b,i,j, i!=j} relu(thr - d_ij),
      normalised by B*K*K like the official form (diagonal entries are 0).

  Args:
    kp_values: (B, K, 2) keypoints.
  Returns:
    scalar.
  """
  k = kp_values.shape[-2]
  diff = kp_values[..., :, None, :] - kp_values[..., None, :, :]  # (B,K,K,2)
  dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1) + 1e-8)  # (B, K, K)
  eye = jnp.eye(k, dtype=dist.dtype)
  if form == "sign":
    return jnp.mean(1.0 - jnp.sign(dist + eye * threshold - threshold))
  if form == "hinge":
    return jnp.mean(jax.nn.relu(threshold - dist) * (1.0 - eye))
  raise ValueError(f"kp_distance form {form!r}; expected 'sign' or 'hinge'")


def keypoint_distance_terms(kp_source: KP, kp_driving: KP,
                            threshold: float = 0.2,
                            form: KpDistanceForm = "sign") -> dict[str, Array]:
  """``kp_distance`` = loss(source keypoints) + loss(driving keypoints)."""
  return {"kp_distance":
          keypoint_distance_loss(kp_source["value"], threshold, form)
          + keypoint_distance_loss(kp_driving["value"], threshold, form)}
