"""Model directories: Flax variables (orbax) plus the config that built them.

Layout written by :func:`save_model` (and by ``dagan-jax convert``)::

    DIR/
      config.yaml      the full config (dagan_jax.config.to_yaml)
      variables/       orbax StandardCheckpointer checkpoint of
                       {network: {'params': ..., 'batch_stats': ...}}
      model_info.json  networks present, parameter counts, provenance

``network`` is one of ``dagan_jax.models.build.NETWORKS`` (``depth_encoder``,
``depth_decoder``, ``kp_detector``, ``generator``, ``discriminator``) or a
pose network. :func:`load_model` rebuilds the networks from the config and
checks every variable's path and shape against them, raising
:class:`~dagan_jax.errors.CheckpointMismatchError` that names each missing,
unexpected or mis-shaped variable. Every command takes such a directory as
``--checkpoint DIR``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Iterable, Mapping

from dagan_jax.errors import CheckpointMismatchError, DataError

VARIABLES_DIR = "variables"
CONFIG_FILE = "config.yaml"
INFO_FILE = "model_info.json"
#: Networks :func:`load_model` requires by default (what animation needs).
INFERENCE_NETWORKS = ("depth_encoder", "depth_decoder", "kp_detector",
                      "generator")


def _flat_shapes(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
                 ) -> dict[tuple[str, ...], tuple[int, ...]]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flat_shapes(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = tuple(getattr(v, "shape", ()))
  return out


def save_model(directory: str | pathlib.Path, variables: Mapping[str, Any],
               config: Any, *, overwrite: bool = False,
               info: Mapping[str, Any] | None = None) -> pathlib.Path:
  """Writes ``variables`` ({network: variables}) and ``config`` to ``directory``.

  Args:
    directory: created if needed.
    variables: numpy or jax arrays; only the ``params`` and ``batch_stats``
      collections are kept (no ``intermediates``).
    config: the ConfigDict the networks were built from.
    overwrite: replace an existing ``variables/``.
    info: extra provenance stored in ``model_info.json``.
  Returns:
    The absolute directory path.
  """
  import jax
  import numpy as np
  import orbax.checkpoint as ocp

  from dagan_jax.config import to_yaml

  path = pathlib.Path(directory).expanduser().absolute()
  path.mkdir(parents=True, exist_ok=True)
  target = path / VARIABLES_DIR
  if target.exists() and not overwrite:
    raise DataError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
  tree = {name: {col: v[col] for col in ("params", "batch_stats") if col in v}
          for name, v in variables.items()}
  tree = jax.tree.map(np.asarray, tree)
  (path / CONFIG_FILE).write_text(to_yaml(config))
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(target, tree, force=overwrite)
  ckptr.wait_until_finished()
  counts = {name: int(sum(x.size for x in jax.tree.leaves(v.get("params", {}))))
            for name, v in tree.items()}
  meta = {"networks": sorted(tree), "param_counts": counts, **dict(info or {})}
  (path / INFO_FILE).write_text(json.dumps(meta, indent=1, default=str))
  return path


def resolve_model_dir(path: str | pathlib.Path) -> pathlib.Path:
  """A model directory, or a training workdir holding one in ``model/``."""
  p = pathlib.Path(path).expanduser()
  if not (p / VARIABLES_DIR).is_dir() and (p / "model" / VARIABLES_DIR).is_dir():
    return p / "model"
  return p


def read_config(directory: str | pathlib.Path):
  """The config stored in a model directory."""
  from dagan_jax.config import load_config
  p = pathlib.Path(directory) / CONFIG_FILE
  if not p.is_file():
    raise DataError(f"{directory} has no {CONFIG_FILE}: not a dagan-jax model "
                    "directory (make one with `dagan-jax convert`)")
  return load_config(p)


def verify_variables(variables: Mapping[str, Any], models: Any, *, source: str,
                     required: Iterable[str] = ()) -> None:
  """Checks {network: variables} against the networks in ``models``.

  Raises :class:`CheckpointMismatchError` naming every unknown network,
  missing required network, and missing / unexpected / mis-shaped variable.
  """
  from dagan_jax.models.build import abstract_variables

  nets = models.networks()
  problems = []
  unknown = sorted(set(variables) - set(nets))
  if unknown:
    problems.append(f"  networks the config does not build: {unknown} "
                    f"(it builds {sorted(nets)})")
  absent = [n for n in required if n not in variables]
  if absent:
    problems.append(f"  networks missing from the checkpoint: {absent} (convert "
                    "them too, e.g. --depth-encoder/--depth-decoder)")
  present = tuple(n for n in nets if n in variables)
  abstract = abstract_variables(models, present)
  for name in present:
    want = {k: s for k, s in _flat_shapes(abstract[name]).items()
            if k[0] in ("params", "batch_stats")}
    got = _flat_shapes({c: variables[name][c] for c in variables[name]
                        if c in ("params", "batch_stats")})
    miss = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    bad = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    for k in miss:
      problems.append(f"  {name}: missing {'/'.join(k)}, expected shape {list(want[k])}")
    for k in extra:
      problems.append(f"  {name}: unexpected {'/'.join(k)} with shape {list(got[k])}")
    for k in bad:
      problems.append(f"  {name}: {'/'.join(k)} has shape {list(got[k])}, "
                      f"expected {list(want[k])}")
  if problems:
    raise CheckpointMismatchError(
        f"{source} does not match the networks built from the config:\n"
        + "\n".join(problems))


def load_model(directory: str | pathlib.Path, config: Any = None, *,
               required: Iterable[str] = INFERENCE_NETWORKS,
               with_pose: bool | None = None) -> tuple[Any, dict[str, Any]]:
  """Loads a model directory written by :func:`save_model` / ``convert``.

  Args:
    directory: the model directory, or a training workdir (its ``model/``).
    config: a ConfigDict, a config file path, or None for the stored one.
    required: networks that must be present (default: those animation needs).
    with_pose: build the pose nets to verify them (default: if present).
  Returns:
    ``(config, {network: {'params', 'batch_stats'?}})`` with jax arrays.
  """
  import jax
  import jax.numpy as jnp
  import orbax.checkpoint as ocp

  from dagan_jax.config import load_config
  from dagan_jax.models.build import POSE_NETWORKS, build_models

  path = resolve_model_dir(directory).absolute()
  target = path / VARIABLES_DIR
  if not target.is_dir():
    raise DataError(f"{path} has no {VARIABLES_DIR}/: not a dagan-jax model "
                    "directory (make one with `dagan-jax convert`, or pass a "
                    "training workdir that has model/)")
  if config is None:
    config = read_config(path)
  elif isinstance(config, (str, pathlib.Path)):
    config = load_config(config)
  variables = ocp.StandardCheckpointer().restore(target)
  if with_pose is None:
    with_pose = any(n in variables for n in POSE_NETWORKS)
  models = build_models(config, with_pose=with_pose)
  verify_variables(variables, models, source=str(path), required=required)
  return config, jax.tree.map(jnp.asarray, dict(variables))
