"""pytorch-fid's Inception weights -> Flax variables, strictly.

The file is pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (a plain
state dict of torchvision's ``Inception3(num_classes=1008,
aux_logits=False)`` with the FID blocks, ported from TensorFlow's 2015
graph). Its keys are the Flax paths of
:class:`~dagan_jax.models.inception_fid.FIDInceptionV3` under the generic
rules of :mod:`dagan_jax.convert.torch_to_flax` (conv ``weight`` OIHW ->
``kernel`` HWIO; BatchNorm ``weight``/``bias`` -> ``scale``/``bias``,
``running_mean``/``running_var`` -> ``batch_stats`` ``mean``/``var``).

Dropped: ``num_batches_tracked`` and the 1008-way classifier ``fc.weight``
``(1008, 2048)`` / ``fc.bias`` ``(1008,)`` (FID stops at the pool; a file
without them is accepted, one with other shapes is not: that is another
network). Every other key must match, with its shape; otherwise
:class:`~dagan_jax.errors.CheckpointMismatchError` names each problem, with
a hint for the usual wrong files (torchvision's ImageNet Inception, the
state dict of pytorch-fid's ``InceptionV3`` wrapper).

torch is imported only by :func:`~dagan_jax.convert.torch_to_flax.load_torch_file`.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping

import numpy as np

from dagan_jax.convert.torch_to_flax import (Report, load_torch_file,
                                             match_state_dict)
from dagan_jax.errors import CheckpointMismatchError, DataError
from dagan_jax.models.inception_fid import FEATURE_DIM, abstract_variables

#: The file pytorch-fid downloads (its ``FID_WEIGHTS_URL``).
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/"
               f"fid_weights/{WEIGHTS_FILE}")
#: The classifier of the TF graph: checked when present, not converted.
CLASSIFIER_SHAPES = {"fc.weight": (1008, FEATURE_DIM), "fc.bias": (1008,)}


def _hints(state_dict: Mapping[str, Any]) -> list[str]:
  keys = list(state_dict)
  out = []
  if any(k.startswith("AuxLogits.") for k in keys):
    out.append("AuxLogits.* keys: this looks like torchvision's ImageNet "
               "inception_v3 weights, a different network from the FID one; "
               f"use pytorch-fid's {WEIGHTS_FILE}")
  if any(k.startswith("blocks.") for k in keys):
    out.append("blocks.* keys: this is the state dict of pytorch-fid's "
               "InceptionV3 wrapper; give the original "
               f"{WEIGHTS_FILE} instead")
  return out


def convert_state_dict(state_dict: Mapping[str, Any], *, source: str
                       ) -> dict[str, Any]:
  """pytorch-fid state dict (numpy values) -> ``{'params', 'batch_stats'}``.

  Raises :class:`CheckpointMismatchError` naming ``source`` and every
  missing, unexpected or mis-shaped key.
  """
  report = Report("FID InceptionV3", source)
  for key, want in CLASSIFIER_SHAPES.items():
    if key in state_dict:
      got = tuple(np.shape(state_dict[key]))
      if got != want:
        report.misshaped.append((key, got, want, "classifier, not converted"))
  variables, matched = match_state_dict(
      state_dict, abstract_variables(), network=report.network, source=source,
      drop=lambda k: k in CLASSIFIER_SHAPES)
  report.missing += matched.missing
  report.unexpected += matched.unexpected
  report.misshaped += matched.misshaped
  report.invalid += matched.invalid
  if not report.ok:
    report.hints += _hints(state_dict)
    raise CheckpointMismatchError(
        f"{source} is not pytorch-fid's Inception weights ({WEIGHTS_FILE}):\n"
        + report.format())
  return variables


def load_weights(path: str | os.PathLike) -> dict[str, Any]:
  """Reads and converts the weights file at ``path`` (see the module doc).

  Errors name the file: :class:`DataError` when it is missing, unreadable or
  torch is not installed; :class:`CheckpointMismatchError` when its keys or
  shapes do not fit.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(
        f"FID Inception weights not found: {path} (pytorch-fid's "
        f"{WEIGHTS_FILE}, from {WEIGHTS_URL}; nothing is downloaded here)")
  # find_spec looks torch up without importing it.
  if importlib.util.find_spec("torch") is None:
    raise DataError(f"reading the FID Inception weights {path} needs torch "
                    '(pip install -e ".[convert]")')
  return convert_state_dict(load_torch_file(path), source=path)
