"""Loss terms: pure functions returning dicts of named terms.

* :mod:`.generator` -- perceptual pyramid, LSGAN, feature matching,
  equivariance, keypoint distance (DaGAN / DaGAN++ Sec. 3.4, Eq. 14-17).
* :mod:`.depth` -- self-supervised depth learning (DaGAN++ Sec. 3.2, Eq. 5-8).
* :mod:`.weights` -- the one place where scalar loss weights are applied.
"""

from dagan_jax.losses.depth import (DEFAULT_DEPTH_WEIGHTS, automask,
                                    depth_losses, edge_aware_smoothness,
                                    min_over_sources, photometric_error,
                                    ssim_map, uncertainty_weighted_loss,
                                    weighted_depth_terms)
from dagan_jax.losses.generator import (equivariance_losses,
                                        feature_matching_loss,
                                        keypoint_distance_loss,
                                        keypoint_distance_terms,
                                        lsgan_discriminator_loss,
                                        lsgan_generator_loss,
                                        perceptual_pyramid_loss)
from dagan_jax.losses.weights import (TERM_WEIGHTS, apply_loss_weights,
                                      total_loss)
