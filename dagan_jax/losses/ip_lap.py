"""IP_LAP's training losses (Zhong et al., CVPR 2023; official
``train_landmarks_generator.py``, ``train_video_renderer.py``, ``loss.py`` and
the ``PerceptualLoss`` of ``models/video_renderer.py``).

Pure functions returning named terms, unweighted; the trainers
(:mod:`dagan_jax.training.ip_lap_landmark`,
:mod:`dagan_jax.training.ip_lap_renderer`) apply the weights.

**Landmark generator** (:func:`landmark_losses`): on content landmarks
``(B, T, 57, 2)`` (x, y normalised to the face crop),

* ``l1``: mean absolute error over every coordinate (``nn.L1Loss``);
* ``velocity``: the frame-to-frame differences ``d_t = p_{t+1} - p_t`` of
  prediction and target, each frame's differences as one vector, and the mean
  over the ``B (T-1)`` pairs of ``|| d_pred - d_gt + 1e-6 ||_2`` (torch's
  ``pairwise_distance``, whose ``eps`` is added to the difference).
  ``velocity_on='all'`` takes all 57 points (114 numbers per pair), what the
  paper describes and the official code computes since its last commit;
  ``'official_3'`` takes only the first three content points (jaw points 0-2,
  6 numbers), what the official code computed before that fix
  (``range(3)`` over the points axis), for reproducing models trained then.

**Renderer** (:func:`perceptual_terms`): the official VGG19 perceptual loss
with ``num_scales=2``: at full size and at half size (bilinear,
``align_corners=False``: for even sizes the mean of each 2x2 block), the L1
distance (mean over all elements) of each of the 5 relu*_1 feature maps,
weight 1 each, summed over layers and scales (the target's features detached).
With ``style=True`` also the Gram term at full size only: per layer the L1
distance of the Gram matrices ``F F^T / (h w c)`` (``F`` of shape (c, h w) per
image). :func:`vgg_view` says what image the VGG sees.

**GAN** (pix2pixHD's ``GANLoss(use_lsgan=True)``): :func:`lsgan` sums over the
discriminator's scales the mean squared error of the last output of each
scale to 1 (real) or 0 (fake); :func:`feature_matching` sums over scales
``s`` and the first ``n_layers + 1`` outputs ``j`` (all but the patch
prediction) ``(1 / num_D) (4 / (n_layers + 1)) mean |D_sj(fake) -
sg(D_sj(real))|`` (the official ``D_weights * feat_weights``; the trainer's
``feature_matching`` weight, officially 2.5, multiplies the sum).
"""

from __future__ import annotations

from typing import Callable, Literal, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax import ops
from dagan_jax.compute import mean_all

Array = jax.Array

#: ``velocity_on`` choices (module docstring).
VELOCITY_CHOICES = ("all", "official_3")
#: ``vgg_input`` choices (:func:`vgg_view`).
VGG_INPUT_CHOICES = ("imagenet", "official_quirk")
#: torch's ``pairwise_distance`` epsilon.
PAIRWISE_EPS = 1e-6
#: Content points the pre-fix official velocity loss looked at.
OFFICIAL_VELOCITY_POINTS = 3


def velocity_loss(pred: Array, target: Array,
                  velocity_on: Literal["all", "official_3"] = "all") -> Array:
  """Mean over ``B (T-1)`` frame pairs of ``||d_pred - d_gt + 1e-6||_2``
  (module docstring). ``pred``, ``target``: ``(B, T, P, 2)``."""
  if velocity_on not in VELOCITY_CHOICES:
    raise ValueError(f"velocity_on is {velocity_on!r}; expected one of "
                     f"{VELOCITY_CHOICES}")
  if velocity_on == "official_3":
    pred = pred[:, :, :OFFICIAL_VELOCITY_POINTS]
    target = target[:, :, :OFFICIAL_VELOCITY_POINTS]
  b, t = pred.shape[:2]
  if t < 2:
    raise ValueError(f"velocity_loss needs windows of 2 frames or more; got {t}")
  d_pred = (pred[:, 1:] - pred[:, :-1]).reshape(b * (t - 1), -1)
  d_gt = (target[:, 1:] - target[:, :-1]).reshape(b * (t - 1), -1)
  diff = d_pred - d_gt + PAIRWISE_EPS
  return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1)))


def landmark_losses(pred: Array, target: Array, *,
                    velocity_on: Literal["all", "official_3"] = "all"
                    ) -> dict[str, Array]:
  """``{'l1', 'velocity'}`` of predicted vs target content landmarks
  ``(B, T, 57, 2)`` (module docstring)."""
  if pred.shape != target.shape:
    raise ValueError(f"landmark_losses: prediction {pred.shape} and target "
                     f"{target.shape} differ")
  return {"l1": mean_all(jnp.abs(pred - target)),
          "velocity": velocity_loss(pred, target, velocity_on)}


def vgg_view(images_bgr: Array,
             vgg_input: Literal["imagenet", "official_quirk"]) -> Array:
  """What the perceptual VGG is given for renderer images (**BGR**, [0, 1]);
  the VGG module itself then normalises by ImageNet's mean and std.

  * ``'imagenet'`` (default): the images flipped to RGB, in [0, 1]: what an
    ImageNet VGG expects;
  * ``'official_quirk'``: what the official loss feeds it: the BGR images as
    they are (cv2 order) and mapped by ``(x + 1) / 2`` to [0.5, 1] (its
    ``apply_imagenet_normalization`` assumes [-1, 1] input but the renderer
    works in [0, 1]).
  """
  if vgg_input == "imagenet":
    return images_bgr[..., ::-1]
  if vgg_input == "official_quirk":
    return (images_bgr + 1.0) / 2.0
  raise ValueError(f"vgg_input is {vgg_input!r}; expected one of "
                   f"{VGG_INPUT_CHOICES}")


def gram(features: Array) -> Array:
  """``F F^T / (h w c)`` per image of ``(B, h, w, c)`` features: ``(B, c, c)``."""
  b, h, w, c = features.shape
  f = features.reshape(b, h * w, c)
  return jnp.einsum("bnc,bnd->bcd", f, f) / (h * w * c)


def half_size(x: Array) -> Array:
  """torch's ``interpolate(scale_factor=0.5, mode='bilinear',
  align_corners=False, recompute_scale_factor=True)`` on NHWC."""
  h, w = x.shape[1:3]
  return ops.resize_bilinear(x, (h // 2, w // 2))


def perceptual_terms(vgg_apply: Callable[[Array], Sequence[Array]],
                     images: Array, target: Array, *, num_scales: int = 2,
                     style: bool = False) -> dict[str, Array]:
  """``{'perceptual'[, 'style']}``: the official ``PerceptualLoss`` of
  ``images`` against ``target`` (both already mapped by :func:`vgg_view`),
  unweighted (module docstring). ``vgg_apply(x) -> 5 feature maps``."""
  return shared_perceptual_terms(vgg_apply, {"x": (images, style)}, target,
                                 num_scales=num_scales)["x"]


def shared_perceptual_terms(vgg_apply: Callable[[Array], Sequence[Array]],
                            images: Mapping[str, tuple[Array, bool]],
                            target: Array, *, num_scales: int = 2
                            ) -> dict[str, dict[str, Array]]:
  """:func:`perceptual_terms` of several image batches against one
  ``target``: ``{name: (images, style)}`` -> ``{name: terms}``. The VGG
  runs once per scale on all of them and the target stacked on the batch
  axis (the target's features are computed once; the network treats every
  image alone, so the numbers are those of separate calls)."""
  names = list(images)
  sizes = [images[n][0].shape[0] for n in names]
  b = target.shape[0]
  sums = {n: {"perceptual": jnp.zeros((), jnp.float32)} for n in names}
  for n in names:
    if images[n][1]:
      sums[n]["style"] = jnp.zeros((), jnp.float32)
  x = jnp.concatenate([images[n][0] for n in names] + [target], axis=0)
  for scale in range(num_scales):
    for feat in vgg_apply(x):
      parts = jnp.split(feat, list(np.cumsum(sizes + [b])[:-1]), axis=0)
      ref = jax.lax.stop_gradient(parts[-1])
      for n, a in zip(names, parts[:-1]):
        sums[n]["perceptual"] = sums[n]["perceptual"] + mean_all(jnp.abs(a - ref))
        if images[n][1] and scale == 0:
          sums[n]["style"] = sums[n]["style"] + mean_all(
              jnp.abs(gram(a) - gram(ref)))
    if scale != num_scales - 1:
      x = half_size(x)
  return sums


def lsgan(outputs: Sequence[Sequence[Array]], real: bool) -> Array:
  """pix2pixHD's LSGAN term: sum over scales of ``mean((D_s[-1] - label)^2)``
  with label 1 (``real``) or 0."""
  label = 1.0 if real else 0.0
  return sum(mean_all(jnp.square(scale[-1] - label)) for scale in outputs)


def feature_matching(fake: Sequence[Sequence[Array]],
                     real: Sequence[Sequence[Array]], *, n_layers: int,
                     num_d: int) -> Array:
  """pix2pixHD's feature matching as IP_LAP weighs it, before its trainer's
  weight (module docstring); the real features are detached."""
  w = (1.0 / num_d) * (4.0 / (n_layers + 1))
  total = jnp.zeros((), jnp.float32)
  for f_scale, r_scale in zip(fake, real):
    for f, r in zip(f_scale[:-1], r_scale[:-1]):
      total = total + w * mean_all(jnp.abs(f - jax.lax.stop_gradient(r)))
  return total
