"""Audio2Head's ``audio2pose`` state_dict -> :class:`~dagan_jax.models.audio2pose.Audio2Pose` variables.

The official checkpoint ``audio2head.pth.tar`` holds ``{'audio2pose',
'audio2kp', 'kp_detector', 'generator'}``; this module converts the first
(``em_img.resnet.*``, ``em_audio.resnet.*``, ``lstm.*``, ``output.*``).

Rules, on top of the generic ones of
:mod:`~dagan_jax.convert.torch_to_flax` (convolutions OIHW -> HWIO,
BatchNorm ``weight``/``bias``/``running_*``, ``layer1.0`` <-> ``layer1_0``,
``downsample.0`` <-> ``downsample_0``, ``num_batches_tracked`` dropped):

=========================  =========================  ======================
Flax                       PyTorch                    transform
=========================  =========================  ======================
``<linear>/kernel`` (2-D)  ``<linear>.weight``        (out, in) -> (in, out)
``lstm/kernel_ih_l{k}``    ``lstm.weight_ih_l{k}``    (4H, in) -> (in, 4H)
``lstm/kernel_hh_l{k}``    ``lstm.weight_hh_l{k}``    (4H, H) -> (H, 4H)
``lstm/bias_ih_l{k}``      ``lstm.bias_ih_l{k}``      --
``lstm/bias_hh_l{k}``      ``lstm.bias_hh_l{k}``      --
=========================  =========================  ======================

The linear layers are the ResNets' ``fc`` and the pose head ``output``.
LSTM gates: PyTorch stacks them (i, f, g, o) along the 4H rows of its
weights; :class:`~dagan_jax.models.audio2pose.FeedbackLSTM` splits its
4H columns in that same order, so the kernels are only transposed (no
reordering), and the two biases stay separate as in PyTorch.

Matching is strict: a missing, unexpected or mis-shaped key raises
:class:`~dagan_jax.errors.CheckpointMismatchError` naming it. torch is not
needed: state_dict values are numpy arrays (see
:func:`~dagan_jax.convert.torch_to_flax.load_torch_file`).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import flax.linen as nn
import numpy as np

from dagan_jax.convert.torch_to_flax import (Report, flatten,
                                             flax_module_to_torch,
                                             match_state_dict, raise_if_failed,
                                             strip_prefix, unflatten)
from dagan_jax.models.audio2pose import Audio2Pose, abstract_variables

_LSTM_LEAF = re.compile(r"^(?P<kind>kernel|bias)_(?P<part>ih|hh)_l(?P<layer>\d+)$")


def _transpose2(w: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(w).T)


def _explicit_rule(path: tuple[str, ...], shape: tuple[int, ...]
                   ) -> tuple[str, Any, tuple[int, ...]] | None:
  """(torch key, to_flax, torch shape) for the leaves the generic rules do
  not cover (2-D linear kernels, the LSTM); None for the others."""
  collection, module, leaf = path[0], path[1:-1], path[-1]
  if collection != "params":
    return None
  prefix = flax_module_to_torch(module)
  m = _LSTM_LEAF.match(leaf)
  if m:
    name = f"{'weight' if m['kind'] == 'kernel' else 'bias'}_{m['part']}_l{m['layer']}"
    if m["kind"] == "kernel":
      return f"{prefix}.{name}", _transpose2, tuple(reversed(shape))
    return f"{prefix}.{name}", np.asarray, tuple(shape)
  if leaf == "kernel" and len(shape) == 2:
    return f"{prefix}.weight", _transpose2, tuple(reversed(shape))
  return None


def convert_audio2pose(state_dict: Mapping[str, Any],
                       module_or_abstract: Audio2Pose | Mapping[str, Any] | None = None,
                       *, source: str = "audio2pose") -> tuple[dict[str, Any], Report]:
  """Converts the official ``audio2pose`` state_dict, strictly.

  Args:
    state_dict: key -> numpy array (a ``module.`` prefix is stripped).
    module_or_abstract: the :class:`Audio2Pose` to fill, or its variables'
      shapes (``{'params', 'batch_stats'}``); default ``Audio2Pose()``.
    source: file name for messages.
  Returns:
    ``({'params', 'batch_stats'} as numpy float32, report)``.
  Raises:
    CheckpointMismatchError: naming every missing, unexpected or
      mis-shaped key.
  """
  if module_or_abstract is None:
    module_or_abstract = Audio2Pose()
  abstract = (abstract_variables(module_or_abstract)
              if isinstance(module_or_abstract, nn.Module) else module_or_abstract)
  generic: dict[tuple[str, ...], Any] = {}
  explicit: dict[str, tuple[tuple[str, ...], Any, tuple[int, ...]]] = {}
  for path, leaf in flatten(abstract).items():
    if path[0] not in ("params", "batch_stats"):
      continue
    rule = _explicit_rule(path, tuple(leaf.shape))
    if rule is None:
      generic[path] = leaf
    else:
      key, to_flax, torch_shape = rule
      explicit[key] = (path, to_flax, torch_shape)
  sd = strip_prefix(state_dict)
  variables, report = match_state_dict(
      {k: v for k, v in sd.items() if k not in explicit}, unflatten(generic),
      network="audio2pose", source=source)
  flat = flatten(variables)
  for key, (path, to_flax, torch_shape) in explicit.items():
    if key not in sd:
      report.missing.append((key, torch_shape, "/".join(path)))
      continue
    arr = np.asarray(sd[key])
    if arr.shape != torch_shape:
      report.misshaped.append((key, arr.shape, torch_shape, "/".join(path)))
      continue
    flat[path] = np.asarray(to_flax(arr), np.float32)
  raise_if_failed([report])
  return unflatten(flat), report


def audio2pose_from_state_dict(state_dict: Mapping[str, Any], *,
                               source: str = "audio2pose"
                               ) -> tuple[Audio2Pose, dict[str, Any]]:
  """The official network (fixed sizes: two ResNet-34, LSTM(512, 256, 2),
  Linear(256, 6)) and its converted variables; a state_dict of other
  sizes raises :class:`~dagan_jax.errors.CheckpointMismatchError`."""
  module = Audio2Pose()
  variables, _ = convert_audio2pose(state_dict, module, source=source)
  return module, variables
