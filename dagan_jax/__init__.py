"""dagan_jax: DaGAN and DaGAN++ talking-head generation in JAX/Flax.

Conventions used throughout the package:

* Images are NHWC float32 in [0, 1].
* Keypoints are dicts ``{'value': (B, K, 2), 'jacobian': (B, K, 2, 2)}`` with
  ``value`` holding (x, y) in [-1, 1] (FOMM's convention; x indexes width).
* Warping is *pull* (backward): a deformation ``(B, h, w, 2)`` says, for every
  output pixel, which (x, y) of the input to sample.
* Randomness is explicit: functions that need it take a ``key`` first.
"""

__version__ = "0.1.0"
