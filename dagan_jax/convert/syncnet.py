"""SyncNet's released weights (``syncnet_v2.model``) -> Flax variables, strictly.

joonson/syncnet_python saves the state dict of its network ``S`` with
``torch.save`` (keys ``netcnnaud.0.weight``, ``netfclip.1.running_var``,
...; a 2018 file in PyTorch's legacy, pre-zip format) and loads it by
name into the same network. :class:`~dagan_jax.models.syncnet.SyncNet`
names its variables after those keys, so the conversion is this table:

====================  ==================  =================================
Flax                  PyTorch             transform
====================  ==================  =================================
params/kernel (5-D)   weight (Conv3d)     OIDHW -> DHWIO
params/kernel (4-D)   weight (Conv2d)     OIHW -> HWIO
params/kernel (2-D)   weight (Linear)     (out, in) -> (in, out)
params/scale          weight (BatchNorm)  --
params/bias           bias                --
batch_stats/mean      running_mean        --
batch_stats/var       running_var         --
====================  ==================  =================================

with the module path ``netcnnlip_4`` <-> ``netcnnlip.4``. BatchNorm step
counters (``num_batches_tracked``, written by PyTorch >= 0.4.1) are
dropped, and a ``__S__.`` prefix (the state dict of the official
``SyncNetInstance`` rather than of ``S``) or a ``module.`` prefix
(DataParallel) is removed. Everything else must match: a missing,
unexpected or mis-shaped key is a :class:`~dagan_jax.errors.
CheckpointMismatchError` naming the file and every such key.

torch is imported only by :func:`load_state_dict`, lazily;
:func:`convert_state_dict` works on numpy arrays.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from dagan_jax.errors import CheckpointMismatchError, DataError

#: Wrapper prefixes removed from every key.
PREFIXES = ("__S__.", "module.")

_LEAVES = {("params", "scale"): "weight", ("params", "bias"): "bias",
           ("params", "kernel"): "weight",
           ("batch_stats", "mean"): "running_mean",
           ("batch_stats", "var"): "running_var"}
#: Flax kernel rank -> (axes permutation torch -> Flax).
_KERNEL_AXES = {5: (2, 3, 4, 1, 0), 4: (2, 3, 1, 0), 2: (1, 0)}


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()):
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _flatten(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def expected_keys(abstract: Mapping[str, Any]
                  ) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """``{torch key: (Flax path, torch shape)}`` for the variables
  ``abstract`` (``{'params', 'batch_stats'}`` of a SyncNet; shapes)."""
  out = {}
  for path, leaf in _flatten(abstract):
    collection, module, name = path[0], path[1], path[-1]
    shape = tuple(leaf.shape)
    if name == "kernel":
      axes = _KERNEL_AXES[len(shape)]
      shape = tuple(shape[axes.index(i)] for i in range(len(shape)))
    seq, _, index = module.rpartition("_")
    out[f"{seq}.{index}.{_LEAVES[(collection, name)]}"] = (path, shape)
  return out


def _strip(key: str) -> str:
  for p in PREFIXES:
    if key.startswith(p):
      return key[len(p):]
  return key


def convert_state_dict(state_dict: Mapping[str, Any], abstract: Mapping[str, Any],
                       *, source: str = "syncnet") -> dict[str, Any]:
  """The Flax variables ``{'params', 'batch_stats'}`` (numpy float32) of
  the official state dict (key -> array), matched strictly (module
  docstring) against ``abstract`` (:func:`dagan_jax.models.syncnet.
  abstract_variables`).

  Raises:
    CheckpointMismatchError: naming ``source`` and every missing,
      unexpected or mis-shaped key with the expected shape.
  """
  expected = expected_keys(abstract)
  missing = dict(expected)
  unexpected, misshaped = [], []
  out: dict[str, Any] = {}
  for raw_key, value in state_dict.items():
    key = _strip(str(raw_key))
    if key.endswith("num_batches_tracked"):
      continue
    if key not in expected:
      unexpected.append(f"{raw_key}: {list(np.shape(value))}")
      continue
    path, shape = missing.pop(key)
    arr = np.asarray(value, np.float32)
    if arr.shape != shape:
      misshaped.append(f"{raw_key}: file {list(arr.shape)}, expected {list(shape)}")
      continue
    if path[-1] == "kernel":
      arr = np.ascontiguousarray(np.transpose(arr, _KERNEL_AXES[arr.ndim]))
    node = out
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = arr
  if missing or unexpected or misshaped:
    lines = [f"{source} is not SyncNet's state dict (joonson/syncnet_python "
             "SyncNetModel.S, e.g. syncnet_v2.model):"]
    if missing:
      lines.append(f"  missing keys ({len(missing)}), expected shape:")
      lines += [f"    {k}: {list(s)}" for k, (_, s) in missing.items()]
    if unexpected:
      lines.append(f"  unexpected keys ({len(unexpected)}):")
      lines += [f"    {k}" for k in unexpected]
    if misshaped:
      lines.append(f"  mis-shaped keys ({len(misshaped)}):")
      lines += [f"    {k}" for k in misshaped]
    raise CheckpointMismatchError("\n".join(lines))
  return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a SyncNet weight file as float32 numpy arrays.

  Read with ``torch.load(weights_only=True)`` (no code in the file runs),
  which reads the legacy format of ``syncnet_v2.model`` too.

  Raises:
    DataError: naming ``path``, when torch is not installed, the file is
      missing or cannot be read as a PyTorch file, or holds no state dict.
  """
  if not os.path.isfile(path):
    raise DataError(f"SyncNet weights {path}: no such file (download "
                    "syncnet_v2.model from joonson/syncnet_python)")
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DataError(f"reading the SyncNet weights {path} needs torch "
                    '(pip install -e ".[convert]")') from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001 - torch raises many kinds
    raise DataError(f"SyncNet weights {path}: cannot be read as a PyTorch "
                    f"file ({type(e).__name__}: {e})") from e
  if not isinstance(obj, Mapping) or not all(
      isinstance(v, torch.Tensor) for v in obj.values()):
    raise DataError(f"SyncNet weights {path}: holds a {type(obj).__name__}, "
                    "not a state dict of tensors")
  return {str(k): v.detach().cpu().float().numpy() for k, v in obj.items()}
