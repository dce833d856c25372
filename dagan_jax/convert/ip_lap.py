"""IP_LAP's two official checkpoints -> one model directory's networks.

IP_LAP's inference (``inference_single.py``) loads two files, each saved by
its train script as ``{'state_dict', 'optimizer', 'global_step',
'global_epoch'}``:

* ``landmarkgenerator_checkpoint.pth``: ``Landmark_generator``, converted by
  :func:`dagan_jax.convert.ip_lap_landmark.convert_landmark_generator` into
  the network ``ip_lap_landmark``;
* ``renderer_checkpoint.pth``: ``Renderer`` (keys prefixed ``module.``),
  converted by :func:`dagan_jax.convert.ip_lap_renderer.convert_renderer`
  into ``ip_lap_renderer``. The perceptual loss's frozen VGG19, when the
  file has it, is a training loss and is not kept.

The config (:func:`config_for`) is :func:`dagan_jax.config.ip_lap_config`
with the landmark generator's sizes read from its state dict (``d_model``,
``nlayers``, ``dim_feedforward``); ``nhead`` and ``T`` are not recorded in
a state dict and keep the official values unless overridden. Matching is
strict: every missing, unexpected or mis-shaped key of either file is named
in one :class:`~dagan_jax.errors.CheckpointMismatchError`, and a file that
is not the network it was given as is named as such.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from dagan_jax import config as config_lib
from dagan_jax.convert.ip_lap_landmark import (
    convert_landmark_generator, landmark_generator_kwargs_from_state_dict,
    load_landmark_checkpoint)
from dagan_jax.convert.ip_lap_renderer import convert_renderer, load_ip_lap_checkpoint
from dagan_jax.convert.torch_to_flax import strip_prefix
from dagan_jax.errors import CheckpointMismatchError, ConfigError
from dagan_jax.models.build import abstract_variables, build_models

#: Model-directory network names of the two files.
LANDMARK = "ip_lap_landmark"
RENDERER = "ip_lap_renderer"


def config_for(landmark_state_dict: Mapping[str, Any], *,
               overrides: Iterable[str] = (), source: str = "landmark checkpoint"):
  """The model's config (ConfigDict): :func:`dagan_jax.config.ip_lap_config`
  with the landmark generator's sizes from its state dict, then
  ``overrides`` (``ip_lap_params.nhead=8``, ...)."""
  d = config_lib.ip_lap_config()
  try:
    sizes = landmark_generator_kwargs_from_state_dict(
        landmark_state_dict, nhead=d["ip_lap_params"]["nhead"],
        T=d["ip_lap_params"]["T"])
  except CheckpointMismatchError as e:
    raise CheckpointMismatchError(f"{source}: {e}") from None
  d["ip_lap_params"].update(sizes)
  cfg = config_lib.from_dict(d)
  overrides = list(overrides)
  if overrides:
    cfg = config_lib.from_dict(config_lib.apply_overrides(cfg, overrides).to_dict())
  return cfg


def _looks_like_renderer(sd: Mapping[str, Any]) -> bool:
  """Whether a state dict (``module.`` prefix or not) holds a Renderer."""
  return any(k.startswith(("flow_module.", "translation."))
             for k in strip_prefix(sd))


def convert_ip_lap(landmark_state_dict: Mapping[str, Any],
                   renderer_state_dict: Mapping[str, Any], config, *,
                   landmark_source: str = "landmark checkpoint",
                   renderer_source: str = "renderer checkpoint"
                   ) -> tuple[dict[str, Any], list[str]]:
  """``({'ip_lap_landmark': ..., 'ip_lap_renderer': ...}, notes)``: both
  networks' variables (numpy) for the networks ``config`` builds.

  Raises:
    ConfigError: ``config`` has no ``ip_lap_params``.
    CheckpointMismatchError: naming every offending key of both files (and a
      file given as the wrong network).
  """
  if config.get("ip_lap_params") is None:
    raise ConfigError("the config has no ip_lap_params section: not an IP_LAP "
                      "config")
  models = build_models(config)
  abstract = abstract_variables(models, (LANDMARK, RENDERER))
  variables: dict[str, Any] = {}
  notes: list[str] = []
  errors: list[str] = []
  if _looks_like_renderer(landmark_state_dict):
    errors.append(f"{landmark_source}: holds a Renderer (flow_module.* / "
                  "translation.* keys), not the landmark generator: swap "
                  "--ip-lap-landmark and --ip-lap-renderer?")
  else:
    try:
      variables[LANDMARK], _ = convert_landmark_generator(
          landmark_state_dict, abstract[LANDMARK], source=landmark_source)
    except CheckpointMismatchError as e:
      errors.append(str(e))
  try:
    weights = convert_renderer(renderer_state_dict, abstract[RENDERER],
                               source=renderer_source)
    variables[RENDERER] = weights.variables
    notes.extend(weights.notes)
    if weights.perceptual is not None:
      notes.append("the perceptual VGG19 is a training loss: not kept")
  except CheckpointMismatchError as e:
    msg = str(e)
    if any(k.startswith("fusion_transformer.") for k in renderer_state_dict):
      msg = (f"{renderer_source}: holds a landmark generator "
             "(fusion_transformer.* keys), not the renderer\n" + msg)
    errors.append(msg)
  if errors:
    raise CheckpointMismatchError("\n".join(errors))
  return variables, notes


def convert_files(landmark_path: str, renderer_path: str, *,
                  overrides: Iterable[str] = (), trust_pickle: bool = False
                  ) -> tuple[Any, dict[str, Any], list[str]]:
  """``(config, {network: variables}, notes)`` from the two official files."""
  landmark_sd = load_landmark_checkpoint(landmark_path, trust_pickle=trust_pickle)
  renderer_sd = strip_prefix(load_ip_lap_checkpoint(renderer_path,
                                                    trust_pickle=trust_pickle))
  if _looks_like_renderer(landmark_sd):
    # Sizes cannot be read from a renderer; say which file is which.
    raise CheckpointMismatchError(
        f"{landmark_path}: holds a Renderer (flow_module.* / translation.* "
        "keys), not IP_LAP's landmark generator: swap --ip-lap-landmark and "
        "--ip-lap-renderer?")
  config = config_for(landmark_sd, overrides=overrides, source=landmark_path)
  variables, notes = convert_ip_lap(landmark_sd, renderer_sd, config,
                                    landmark_source=landmark_path,
                                    renderer_source=renderer_path)
  return config, variables, notes
