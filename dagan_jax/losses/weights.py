"""The one place where scalar loss weights meet loss terms.

``train_params.loss_weights`` (official ``vox-adv-256.yaml``) holds scalar
weights and two per-layer lists. The per-layer lists (``perceptual``,
``feature_matching``) are given to :func:`perceptual_pyramid_loss` and
:func:`feature_matching_loss`, whose terms therefore arrive here already
weighted; every other term is multiplied by its scalar weight below. The
results carry the official log names and values (the official code logs
weighted terms and optimises their sum).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

#: term name -> ``loss_weights`` key of its scalar weight (None: the term is
#: already weighted per layer by the function that made it).
TERM_WEIGHTS: dict[str, str | None] = {
    "perceptual": None,
    "feature_matching": None,
    "gen_gan": "generator_gan",
    "disc_gan": "discriminator_gan",
    "equivariance_value": "equivariance_value",
    "equivariance_jacobian": "equivariance_jacobian",
    "kp_distance": "kp_distance",
    "depth_constraint": "depth_constraint",
}

#: Terms whose gradient is identically zero (logged and summed like the
#: official code, but they cannot train anything): kp_distance in its
#: official 'sign' form.
ZERO_GRADIENT_TERMS = ("kp_distance (form='sign')",)


def apply_loss_weights(terms: Mapping[str, jax.Array],
                       loss_weights: Mapping[str, Any]) -> dict[str, jax.Array]:
  """Multiplies each term by its scalar weight (``TERM_WEIGHTS``).

  Raises ``KeyError`` naming a term this table does not know, so a new term
  cannot silently go unweighted.
  """
  out = {}
  for name, value in terms.items():
    if name not in TERM_WEIGHTS:
      raise KeyError(f"loss term {name!r} has no entry in "
                     f"dagan_jax.losses.weights.TERM_WEIGHTS")
    key = TERM_WEIGHTS[name]
    out[name] = value if key is None else float(loss_weights[key]) * value
  return out


def total_loss(weighted_terms: Mapping[str, jax.Array]) -> jax.Array:
  """Sum of the (already weighted) terms."""
  return sum((jnp.asarray(v) for v in weighted_terms.values()),
             jnp.zeros((), jnp.float32))
