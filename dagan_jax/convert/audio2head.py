"""Audio2Head's released checkpoint -> a model directory.

``audio2head.pth.tar`` holds four state_dicts, converted each by its own
strict rules: ``audio2pose`` (:mod:`.audio2pose`), ``audio2kp``
(:mod:`.audio2kp`), and FOMM's ``kp_detector`` and ``generator``
(:mod:`.audio2head_fomm`). The sizes come from the official configs: the
renderer's ``config/vox-256.yaml`` and the speech model's
``config/parameters.yaml`` (:func:`official_config`); without them the
released sizes of :func:`dagan_jax.config.audio2head_config` apply. Every
problem of every network is reported in one
:class:`~dagan_jax.errors.CheckpointMismatchError`.
"""

from __future__ import annotations

from typing import Any, Mapping

from dagan_jax.errors import CheckpointMismatchError, ConfigError

#: The entries of the official checkpoint.
AUDIO2HEAD_ENTRIES = ("audio2pose", "audio2kp", "kp_detector", "generator")
#: Renderer sections of the official vox-256.yaml taken over as they are.
_RENDERER_SECTIONS = ("common_params", "kp_detector_params", "generator_params",
                      "discriminator_params")


def official_config(vox: Mapping[str, Any] | None = None,
                    parameters: Mapping[str, Any] | None = None):
  """A dagan-jax config (ConfigDict) from the official YAML contents:
  ``vox`` = ``config/vox-256.yaml``, ``parameters`` =
  ``config/parameters.yaml`` (either may be None: released sizes)."""
  from dagan_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  d = config_lib.audio2head_config()
  if vox is not None:
    mp = vox.get("model_params")
    if not isinstance(mp, Mapping):
      raise ConfigError("the renderer config has no model_params section "
                        "(expected Audio2Head's config/vox-256.yaml)")
    for section in _RENDERER_SECTIONS:
      if section in mp:
        d["model_params"][section] = dict(mp[section])
    d["model_params"]["kp_detector_params"]["use_depth"] = False
    shape = vox.get("dataset_params", {}).get("frame_shape")
    if shape:
      d["dataset_params"]["frame_shape"] = list(shape)
  if parameters is not None:
    d["audio2head_params"]["audio2kp"].update(dict(parameters))
  return config_lib.from_dict(d)


def config_from_yaml(path: str, audio2kp_path: str | None = None):
  """:func:`official_config` from files: a vox-256.yaml (or one YAML with
  both ``vox-256`` and ``parameters`` sections, as the parity fixtures
  store them), and optionally parameters.yaml."""
  import yaml  # pylint: disable=import-outside-toplevel
  with open(path) as f:
    data = yaml.safe_load(f)
  parameters = None
  if isinstance(data, Mapping) and "vox-256" in data:
    vox, parameters = data["vox-256"], data.get("parameters")
  else:
    vox = data
  if audio2kp_path is not None:
    with open(audio2kp_path) as f:
      parameters = yaml.safe_load(f)
  return official_config(vox, parameters)


def convert_audio2head(checkpoint: Mapping[str, Mapping[str, Any]], config, *,
                       source: str = "audio2head.pth.tar") -> dict[str, Any]:
  """``{network: variables}`` of the four networks of a loaded checkpoint
  (numpy values), built from ``config``; raises naming every problem."""
  from dagan_jax.convert.audio2head_fomm import convert_fomm  # pylint: disable=import-outside-toplevel
  from dagan_jax.convert.audio2kp import convert_audio2kp  # pylint: disable=import-outside-toplevel
  from dagan_jax.convert.audio2pose import convert_audio2pose  # pylint: disable=import-outside-toplevel
  from dagan_jax.models.build import build_models  # pylint: disable=import-outside-toplevel
  if "audio2head_params" not in config:
    raise ConfigError("the config has no audio2head_params section: not an "
                      "Audio2Head config")
  missing = [n for n in AUDIO2HEAD_ENTRIES if n not in checkpoint]
  if missing:
    raise CheckpointMismatchError(
        f"{source} has no {missing} entries (it has {sorted(checkpoint)}); "
        f"expected Audio2Head's {list(AUDIO2HEAD_ENTRIES)}")
  models = build_models(config)
  variables: dict[str, Any] = {}
  errors = []
  steps = (
      ("audio2pose", lambda: convert_audio2pose(
          checkpoint["audio2pose"], models.audio2pose, source=f"{source}:audio2pose")),
      ("audio2kp", lambda: convert_audio2kp(
          checkpoint["audio2kp"], models.audio2kp, source=f"{source}:audio2kp")),
  )
  for name, step in steps:
    try:
      variables[name], _ = step()
    except CheckpointMismatchError as e:
      errors.append(str(e))
  try:
    fomm, _ = convert_fomm(checkpoint, models.kp_detector, models.generator,
                           source=source, frame_size=tuple(models.frame_shape[:2]))
    variables.update(fomm)
  except CheckpointMismatchError as e:
    errors.append(str(e))
  if errors:
    raise CheckpointMismatchError("\n".join(errors))
  return variables
