"""Audio2Head's FOMM renderer: ``kp_detector`` and ``generator`` entries.

Audio2Head's checkpoint (``audio2head.pth.tar``) is a dict of four
state_dicts, ``{'audio2pose', 'audio2kp', 'kp_detector', 'generator'}``,
each loaded strictly by the official ``inference.py`` (no ``module.``
prefix). The last two belong to FOMM's networks built from the
``vox-256`` config: ``KPDetector(**kp_detector_params, **common_params)``
(RGB, 3 channels) -> :class:`~dagan_jax.models.keypoint_detector.KPDetector`
and ``OcclusionAwareGenerator(**generator_params, **common_params)`` ->
:class:`~dagan_jax.models.generator.OcclusionAwareGenerator`.

The rules are those of :mod:`dagan_jax.convert.torch_to_flax` (the same as
for DaGAN's networks, whose detector and generator are FOMM's plus depth):
OIHW -> HWIO kernels, running statistics into ``batch_stats``,
``num_batches_tracked`` dropped, and the anti-alias buffers ``down.weight``
and ``dense_motion_network.down.weight`` checked against the Gaussian of
the config's ``scale_factor`` and dropped (:mod:`dagan_jax.convert.dagan`).
Matching is strict: :class:`~dagan_jax.errors.CheckpointMismatchError`
names every missing, unexpected and mis-shaped key of both networks.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax.convert.dagan import _anti_alias_buffers
from dagan_jax.convert.torch_to_flax import (Report, match_state_dict,
                                             raise_if_failed, strip_prefix)
from dagan_jax.models.dense_motion import DenseMotionNetwork

#: The checkpoint entries converted here (the other two are the audio nets).
FOMM_NETWORKS = ("kp_detector", "generator")


def _abstract(kp_detector: Any, generator: Any,
              frame_size: tuple[int, int]) -> dict[str, Any]:
  """Variable shapes of both networks (``jax.eval_shape``: nothing runs).

  Parameter shapes do not depend on the frame size; ``frame_size`` only has
  to be one the networks accept (256x256 for every official config)."""
  h, w = frame_size
  k = generator.num_kp
  kp = {"value": jnp.zeros((1, k, 2), jnp.float32),
        "jacobian": jnp.broadcast_to(jnp.eye(2, dtype=jnp.float32), (1, k, 2, 2))}
  key = jax.random.key(0)
  return {
      "kp_detector": jax.eval_shape(
          kp_detector.init, key,
          jnp.zeros((1, h, w, kp_detector.num_channels), jnp.float32)),
      "generator": jax.eval_shape(
          generator.init, key,
          jnp.zeros((1, h, w, generator.num_channels), jnp.float32), kp, kp),
  }


def _generator_buffers(generator: Any) -> dict[str, np.ndarray]:
  """The dense motion network's anti-alias buffer (if it downsamples)."""
  dm = generator.dense_motion_params
  if dm is None:
    return {}
  dense = DenseMotionNetwork(num_kp=generator.num_kp,
                             num_channels=generator.num_channels,
                             **dict(dm))
  return _anti_alias_buffers(dense, "dense_motion_network.")


def _diagnose(name: str, sd: Mapping[str, Any], module: Any,
              rep: Report) -> None:
  """Hints for the likely mistakes: another number of keypoints, a DaGAN
  (RGB + depth) detector."""
  if rep.ok:
    return
  key = "kp.weight" if name == "kp_detector" else "dense_motion_network.mask.weight"
  w = sd.get(key)
  if w is not None and np.ndim(w) == 4:
    k = int(np.shape(w)[0]) - (1 if name == "generator" else 0)
    if k != module.num_kp:
      rep.hints.append(f"the checkpoint's {name} has {k} keypoints ({key} "
                       f"{list(np.shape(w))}) but common_params.num_kp is "
                       f"{module.num_kp}")
  w = sd.get("predictor.encoder.down_blocks.0.conv.weight")
  if name == "kp_detector" and w is not None and np.ndim(w) == 4 \
      and np.shape(w)[1] != module.num_channels:
    rep.hints.append(
        f"the keypoint detector takes {np.shape(w)[1]} input channels, the "
        f"config gives {module.num_channels} (a DaGAN RGB + depth detector "
        "has 4; Audio2Head's FOMM detector 3)")


def convert_fomm(state_dicts: Mapping[str, Mapping[str, Any]],
                 kp_detector_module: Any, generator_module: Any, *,
                 source: str = "audio2head.pth.tar",
                 frame_size: tuple[int, int] = (256, 256)
                 ) -> tuple[dict[str, Any], list[Report]]:
  """Converts Audio2Head's ``kp_detector`` and ``generator`` state_dicts.

  Args:
    state_dicts: the loaded checkpoint (numpy values); entries other than
      ``kp_detector`` / ``generator`` are ignored.
    kp_detector_module: the :class:`KPDetector` built from the config.
    generator_module: the :class:`OcclusionAwareGenerator` built from it.
    source: file name for messages.
    frame_size: a (H, W) the networks accept (for the shapes only).
  Returns:
    ``({'kp_detector': variables, 'generator': variables}, reports)``, the
    variables nested numpy dicts ``{'params', 'batch_stats'}``.
  Raises:
    CheckpointMismatchError: naming every problem of both networks.
  """
  modules = {"kp_detector": kp_detector_module, "generator": generator_module}
  abstract = _abstract(kp_detector_module, generator_module, frame_size)
  buffers = {"kp_detector": _anti_alias_buffers(kp_detector_module, ""),
             "generator": _generator_buffers(generator_module)}
  out, reports = {}, []
  for name in FOMM_NETWORKS:
    if name not in state_dicts:
      rep = Report(name, source)
      rep.invalid.append(f"the checkpoint has no '{name}' entry (it has "
                         f"{sorted(state_dicts)}); expected Audio2Head's "
                         "{'audio2pose', 'audio2kp', 'kp_detector', 'generator'}")
      reports.append(rep)
      continue
    sd = strip_prefix(state_dicts[name])
    variables, rep = match_state_dict(sd, abstract[name], network=name,
                                      source=source, buffers=buffers[name])
    _diagnose(name, sd, modules[name], rep)
    reports.append(rep)
    out[name] = variables
  raise_if_failed(reports)
  return out, reports
