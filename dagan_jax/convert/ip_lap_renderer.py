"""IP_LAP's renderer and pix2pixHD discriminator checkpoints -> Flax variables.

Files (as IP_LAP's train scripts save them with ``save_checkpoint``):
``{'state_dict', 'optimizer', 'global_step', 'global_epoch'}``, read by
:func:`load_ip_lap_checkpoint`. The renderer was trained under
``nn.DataParallel`` (keys prefixed ``module.``, stripped here as
``inference_single.load_model`` does); tensors may be float16 (upcast to
float32).

* :func:`convert_renderer`: ``Renderer`` keys ``flow_module.*`` and
  ``translation.*`` -> :class:`dagan_jax.models.ip_lap_renderer.Renderer`
  variables. The frozen VGG19 of the perceptual loss
  (``perceptual.model.network.<i>.*``, torchvision ``vgg19().features``
  indices) is optional: converted to our VGG19 params (``features_<i>``,
  :func:`dagan_jax.convert.dagan.convert_vgg19`) when present, reported as
  absent otherwise; the forward pass does not use it.
* :func:`convert_discriminator`: ``MultiscaleDiscriminator`` keys
  ``scale<s>_layer<j>.0.*`` -> :class:`dagan_jax.models.ip_lap_discriminator.
  MultiscaleDiscriminator`` variables; :func:`discriminator_config` reads
  its constructor arguments from the keys.

Naming: our modules carry the official attribute paths; the Sequential
indices of IP_LAP's containers that the generic rules of
:mod:`dagan_jax.convert.torch_to_flax` do not know (``audio_encoder``,
``conv_block``, ``conv_5``, ``scale<s>_layer<j>``) join their parent with
``_`` (``audio_encoder.3.conv_block.1`` -> ``audio_encoder_3/conv_block_1``);
``mlp_shared.0`` is a generic rule. Linear weights ``(out, in)`` become
``kernel`` ``(in, out)``; conv weights OIHW -> HWIO; BatchNorm as usual.

Matching is strict: every missing, unexpected or mis-shaped key is named (by
its official name) in one :class:`~dagan_jax.errors.CheckpointMismatchError`.
The converted weights expect **BGR** images, as the official code feeds cv2
frames.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax.convert.torch_to_flax import (Report, flatten,
                                             flax_module_to_torch,
                                             load_torch_file, match_state_dict,
                                             raise_if_failed, strip_prefix,
                                             unflatten)
from dagan_jax.errors import CheckpointMismatchError, DataError

#: IP_LAP Sequential attributes whose index children the generic rules do
#: not join (official ``<name>.<i>`` <-> ours ``<name>_<i>``).
_CONTAINERS = r"(audio_encoder|conv_block|conv_5|scale\d+_layer\d+)"
_TO_OURS = re.compile(_CONTAINERS + r"\.(\d+)(?=\.)")
_TO_OFFICIAL = re.compile(_CONTAINERS + r"_(\d+)(?=\.)")
#: Prefix of the perceptual loss's VGG19 in the renderer's state_dict.
PERCEPTUAL_PREFIX = "perceptual.model.network."
_DISC_KEY = re.compile(r"^scale(\d+)_layer(\d+)\.0\.(weight|bias)$")


class RendererWeights(NamedTuple):
  """What :func:`convert_renderer` returns.

  Attributes:
    variables: ``{'params', 'batch_stats'}`` of the Renderer (numpy).
    perceptual: our VGG19 params ``{'features_<i>': {'kernel', 'bias'}}``
      when the checkpoint holds the perceptual network, else None.
    report: the matching report (keys dropped, nothing failed).
    notes: human-readable remarks (the perceptual network's presence).
  """
  variables: dict[str, Any]
  perceptual: dict[str, Any] | None
  report: Report
  notes: tuple[str, ...]


def _ours(key: str) -> str:
  return _TO_OURS.sub(r"\1_\2", key)


def _official(key: str) -> str:
  return _TO_OFFICIAL.sub(r"\1.\2", key)


def _to_numpy(value: Any) -> Any:
  """torch tensor / numpy array -> numpy (floating -> float32)."""
  if hasattr(value, "detach"):  # a torch tensor; torch stays unimported here
    t = value.detach().cpu()
    if t.is_floating_point():
      t = t.float()
    return t.numpy()
  arr = np.asarray(value)
  return arr.astype(np.float32) if np.issubdtype(arr.dtype, np.floating) \
      else arr


def load_ip_lap_checkpoint(path: str, *, trust_pickle: bool = False
                           ) -> dict[str, np.ndarray]:
  """The ``state_dict`` of an IP_LAP checkpoint file, as numpy arrays
  (floating tensors as float32; keys as stored, ``module.`` included).

  Reads ``{'state_dict', ...}`` (the train scripts' layout) or a bare
  state_dict. ``trust_pickle`` as :func:`~dagan_jax.convert.torch_to_flax.
  load_torch_file` (the official files load without it).
  """
  obj = load_torch_file(str(path), trust_pickle=trust_pickle)
  if "state_dict" in obj:
    sd = obj["state_dict"]
    if not isinstance(sd, Mapping):
      raise DataError(f"{path}: 'state_dict' holds a {type(sd).__name__}, "
                      "not a state_dict")
    return dict(sd)
  if obj and all(hasattr(v, "shape") for v in obj.values()):
    return dict(obj)
  raise DataError(f"{path} has no 'state_dict' entry (it has {sorted(obj)}); "
                  "expected an IP_LAP checkpoint as the train scripts save it")


def _match(state_dict: Mapping[str, Any], abstract: Mapping[str, Any], *,
           network: str, source: str) -> tuple[dict[str, Any], Report]:
  """:func:`match_state_dict` with IP_LAP's container names and Linear
  layers (2-D ``kernel``, torch ``weight`` transposed); the report names
  official keys."""
  flat = {p: v for p, v in flatten(dict(abstract)).items()
          if p[0] in ("params", "batch_stats")}
  linear = {p: v for p, v in flat.items()
            if p[-1] == "kernel" and len(v.shape) == 2}
  convs = unflatten({p: v for p, v in flat.items() if p not in linear})
  linear_keys = {flax_module_to_torch(p[1:-1]) + ".weight": p for p in linear}

  sd = {_ours(k): _to_numpy(v) for k, v in state_dict.items()}
  # Linear weights are matched below (the generic kernel rule is 4-D).
  variables, report = match_state_dict(sd, convs, network=network,
                                       source=source,
                                       drop=lambda k: k in linear_keys)
  out = flatten(variables)
  for key, path in linear_keys.items():
    want = tuple(reversed(linear[path].shape))  # torch (out, in)
    if key not in sd:
      report.missing.append((key, want, "/".join(path)))
      continue
    report.dropped.remove(key)
    arr = np.asarray(sd[key], np.float32)
    if arr.shape != want:
      report.misshaped.append((key, arr.shape, want, "/".join(path)))
      continue
    out[path] = np.ascontiguousarray(arr.T)
  report.missing = [(_official(k), s, f) for k, s, f in report.missing]
  report.unexpected = [(_official(k), s) for k, s in report.unexpected]
  report.misshaped = [(_official(k), g, e, f)
                      for k, g, e, f in report.misshaped]
  report.dropped = [_official(k) for k in report.dropped]
  return unflatten(out), report


def renderer_abstract(renderer=None, *, num_sketches: int = 5,
                      image_size: int = 128) -> dict[str, Any]:
  """Shapes of a Renderer's variables (``jax.eval_shape`` of ``init``; no
  computation). ``renderer`` defaults to ``Renderer()``."""
  from dagan_jax.models import ip_lap_renderer as lib
  renderer = renderer if renderer is not None else lib.Renderer()
  inputs = lib.example_inputs(num_sketches=num_sketches, image_size=image_size)
  return jax.eval_shape(renderer.init, jax.random.PRNGKey(0), *inputs)


def convert_renderer(state_dict: Mapping[str, Any], renderer: Any = None, *,
                     source: str = "renderer checkpoint") -> RendererWeights:
  """Converts the official ``Renderer`` state_dict.

  Args:
    state_dict: the checkpoint's ``state_dict`` (torch tensors or numpy;
      ``module.`` prefixes and float16 allowed).
    renderer: the Flax :class:`~dagan_jax.models.ip_lap_renderer.Renderer`,
      or its abstract variables ``{'params', 'batch_stats'}`` (shapes);
      default ``Renderer()``.
    source: the file name for messages.
  Returns:
    :class:`RendererWeights` (variables, perceptual VGG19 params or None,
    report, notes).
  Raises:
    CheckpointMismatchError: naming every missing / unexpected / mis-shaped
      key (official names), the VGG19's included when it is present.
  """
  from dagan_jax.convert.dagan import convert_vgg19
  abstract = renderer if isinstance(renderer, Mapping) else \
      renderer_abstract(renderer)
  sd = strip_prefix(state_dict)
  vgg = {"features." + k[len(PERCEPTUAL_PREFIX):]: v for k, v in sd.items()
         if k.startswith(PERCEPTUAL_PREFIX)}
  variables, report = _match(
      {k: v for k, v in sd.items() if not k.startswith("perceptual.")},
      abstract, network="ip_lap renderer", source=source)
  # Anything else under perceptual. (not the VGG19's features) is unexpected.
  for k, v in sd.items():
    if k.startswith("perceptual.") and not k.startswith(PERCEPTUAL_PREFIX):
      report.unexpected.append((k, tuple(np.shape(v))))
  perceptual = None
  if vgg:
    try:
      perceptual = convert_vgg19({k: _to_numpy(v) for k, v in vgg.items()})
      note = (f"perceptual VGG19 present ({len(vgg)} tensors under "
              f"{PERCEPTUAL_PREFIX}*), converted")
    except CheckpointMismatchError as e:
      report.invalid.append(
          f"the perceptual VGG19 ({PERCEPTUAL_PREFIX}<i>.*, torchvision "
          f"vgg19().features indices) is incomplete: {e}")
      note = "perceptual VGG19 present but malformed"
  else:
    note = (f"perceptual VGG19 absent (no {PERCEPTUAL_PREFIX}* keys): the "
            "renderer's forward pass does not need it; the perceptual losses "
            "need a VGG19 from elsewhere")
  raise_if_failed([report])
  return RendererWeights(variables, perceptual, report, (note,))


def discriminator_config(state_dict: Mapping[str, Any]) -> dict[str, int]:
  """``{'input_nc', 'ndf', 'n_layers', 'num_D'}`` of a MultiscaleDiscriminator
  state_dict (``getIntermFeat=True`` layout ``scale<s>_layer<j>.0.*``).

  Raises:
    CheckpointMismatchError: the keys are not of that layout.
  """
  sd = strip_prefix(state_dict)
  scales: dict[int, set[int]] = {}
  for key in sd:
    m = _DISC_KEY.match(key)
    if m:
      scales.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
  first = sd.get("scale0_layer0.0.weight")
  if not scales or first is None or np.ndim(first) != 4:
    raise CheckpointMismatchError(
        "not a pix2pixHD MultiscaleDiscriminator state_dict with getIntermFeat"
        f" (no scale0_layer0.0.weight; keys start {sorted(sd)[:5]})")
  layers = scales[0]
  if sorted(scales) != list(range(len(scales))) or \
      any(v != layers for v in scales.values()) or \
      sorted(layers) != list(range(len(layers))) or len(layers) < 3:
    raise CheckpointMismatchError(
        "MultiscaleDiscriminator keys are not scale0..scaleN each with "
        f"layer0..layerM (M >= 2): scales {sorted(scales)}, layers per scale "
        f"{ {s: sorted(v) for s, v in scales.items()} }")
  shape = np.shape(first)
  return {"input_nc": int(shape[1]), "ndf": int(shape[0]),
          "n_layers": len(layers) - 2, "num_D": len(scales)}


def discriminator_abstract(discriminator=None, *, input_nc: int = 3,
                           image_size: int = 128) -> dict[str, Any]:
  """Shapes of a MultiscaleDiscriminator's variables (no computation)."""
  from dagan_jax.models.ip_lap_discriminator import MultiscaleDiscriminator
  d = discriminator if discriminator is not None else MultiscaleDiscriminator()
  x = jnp.zeros((1, image_size, image_size, input_nc), jnp.float32)
  return jax.eval_shape(d.init, jax.random.PRNGKey(0), x)


def convert_discriminator(state_dict: Mapping[str, Any],
                          discriminator: Any = None, *, input_nc: int | None = None,
                          source: str = "discriminator checkpoint"
                          ) -> tuple[dict[str, Any], Report]:
  """Converts a pix2pixHD ``MultiscaleDiscriminator`` state_dict.

  Args:
    state_dict: torch tensors or numpy (``module.`` and float16 allowed).
    discriminator: the Flax :class:`~dagan_jax.models.ip_lap_discriminator.
      MultiscaleDiscriminator` or its abstract variables; default: one built
      from :func:`discriminator_config` of the state_dict.
    input_nc: image channels for the abstract (default: from the keys, else
      3).
    source: the file name for messages.
  Returns:
    (``{'params': ...}``, report). Raises CheckpointMismatchError naming
    every offending key.
  """
  from dagan_jax.models.ip_lap_discriminator import MultiscaleDiscriminator
  sd = strip_prefix(state_dict)
  if isinstance(discriminator, Mapping):
    abstract = discriminator
  else:
    if discriminator is None:
      cfg = discriminator_config(sd)
      found_nc = cfg.pop("input_nc")
      input_nc = input_nc or found_nc
      discriminator = MultiscaleDiscriminator(**cfg)
    elif input_nc is None:
      w = sd.get("scale0_layer0.0.weight")
      input_nc = int(np.shape(w)[1]) if w is not None and np.ndim(w) == 4 \
          else 3
    abstract = discriminator_abstract(discriminator, input_nc=input_nc)
  variables, report = _match(sd, abstract, network="ip_lap discriminator",
                             source=source)
  raise_if_failed([report])
  return variables, report
