"""Official PyTorch state_dicts -> Flax variables, strictly.

The Flax networks in :mod:`dagan_jax.models` are named after the official
attribute paths, so a checkpoint converts by explicit, named rules:

**Module path** (Flax -> PyTorch), :func:`flax_module_to_torch`:

* ``<list>_<i>`` -> ``<list>.<i>`` for the official ``nn.ModuleList`` /
  ``nn.Sequential`` attributes in :data:`LIST_CONTAINERS`
  (``down_blocks_0`` -> ``down_blocks.0``, ``layer1_0`` -> ``layer1.0``,
  ``decoder_10`` -> ``decoder.10``, ``mlp_shared_0`` -> ``mlp_shared.0``);
* ``bottleneck_r<i>`` -> ``bottleneck.r<i>`` (a Sequential with named
  children); ``discs_<key>`` -> ``discs.<key>`` (the discriminator's
  ModuleDict, key ``str(scale).replace('.', '-')``);
* every other name is kept (``G_middle_0``, ``conv_0``, ``AttnModule``).

**Leaves** (:data:`LEAF_RULES`):

=================  =====================  ===============================
Flax               PyTorch                transform
=================  =====================  ===============================
params/kernel      weight (4-D)           OIHW -> HWIO (``transpose(2,3,1,0)``)
params/kernel      weight_orig (SN conv)  OIHW -> HWIO
params/scale       weight (1-D, norms)    --
params/bias        bias                   --
params/gamma       gamma (attention)      --
batch_stats/mean   running_mean           --
batch_stats/var    running_var            --
batch_stats/u      weight_u (SN)          --
batch_stats/v      weight_v (SN)          --
=================  =====================  ===============================

**Dropped** keys: ``num_batches_tracked`` (BatchNorm step counters), the
anti-alias Gaussian buffers ``*.down.weight`` (checked against the kernel
recomputed from the config's ``scale_factor``, then dropped), the depth
encoder's unused ImageNet classifier ``encoder.fc.*``, and monodepth2's
non-tensor extras ``height``, ``width``, ``use_stereo``. The ``module.``
prefix of DDP checkpoints is stripped.

Matching is strict: every key the Flax network needs must be present with
the expected shape, and every checkpoint key must be used or dropped by a
rule above; otherwise :class:`~dagan_jax.errors.CheckpointMismatchError`
names every missing, unexpected and mis-shaped key with the expected shape,
plus a diagnosis for the common mistakes (ResNet-50 depth weights with an
18-layer config, a SPADE generator for the plain one, a different number of
keypoints).

torch is imported only by :func:`load_torch_file`; the conversion itself
works on numpy arrays.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from dagan_jax.errors import CheckpointMismatchError

#: Official ModuleList / Sequential attributes whose children are indices.
LIST_CONTAINERS = frozenset({
    "down_blocks", "up_blocks", "src_down_blocks", "decoder", "net",
    "mlp_shared", "downsample", "layer1", "layer2", "layer3", "layer4",
    "features"})
#: Containers with named children: name -> regex of the child names.
NAMED_CONTAINERS = {"bottleneck": r"r\d+", "discs": r"[0-9][0-9\-]*"}

_LIST_RE = re.compile(r"^(?P<parent>.+)_(?P<index>\d+)$")

#: Keys never converted (BatchNorm step counters).
DROP_SUFFIXES = ("num_batches_tracked",)


def oihw_to_hwio(w: np.ndarray) -> np.ndarray:
  """PyTorch conv weight (out, in, kh, kw) -> Flax kernel (kh, kw, in, out)."""
  return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def hwio_shape_to_oihw(shape: tuple[int, ...]) -> tuple[int, ...]:
  kh, kw, i, o = shape
  return (o, i, kh, kw)


def identity(w: np.ndarray) -> np.ndarray:
  return w


@dataclasses.dataclass(frozen=True)
class LeafRule:
  """How one Flax leaf maps to a PyTorch state_dict entry."""
  torch_name: str
  to_flax: Callable[[np.ndarray], np.ndarray]
  torch_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


_SAME = lambda s: tuple(s)  # noqa: E731
LEAF_RULES: dict[tuple[str, str], LeafRule] = {
    ("params", "kernel"): LeafRule("weight", oihw_to_hwio, hwio_shape_to_oihw),
    ("params", "kernel@sn"): LeafRule("weight_orig", oihw_to_hwio,
                                      hwio_shape_to_oihw),
    ("params", "scale"): LeafRule("weight", identity, _SAME),
    ("params", "bias"): LeafRule("bias", identity, _SAME),
    ("params", "gamma"): LeafRule("gamma", identity, _SAME),
    ("batch_stats", "mean"): LeafRule("running_mean", identity, _SAME),
    ("batch_stats", "var"): LeafRule("running_var", identity, _SAME),
    ("batch_stats", "u"): LeafRule("weight_u", identity, _SAME),
    ("batch_stats", "v"): LeafRule("weight_v", identity, _SAME),
}


def flax_module_to_torch(path: Iterable[str]) -> str:
  """Flax module path (tuple of names) -> dotted PyTorch module path."""
  out = []
  for name in path:
    m = _LIST_RE.match(name)
    if m and m.group("parent") in LIST_CONTAINERS:
      out += [m.group("parent"), m.group("index")]
      continue
    for parent, child in NAMED_CONTAINERS.items():
      if name.startswith(parent + "_") and re.fullmatch(child, name[len(parent) + 1:]):
        out += [parent, name[len(parent) + 1:]]
        break
    else:
      out.append(name)
  return ".".join(out)


def torch_module_to_flax(key: str) -> tuple[str, ...]:
  """Dotted PyTorch module path -> Flax path (inverse of the above)."""
  out: list[str] = []
  for part in key.split("."):
    if out and (part.isdigit() and out[-1] in LIST_CONTAINERS
                or any(out[-1] == p and re.fullmatch(c, part)
                       for p, c in NAMED_CONTAINERS.items())):
      out[-1] = f"{out[-1]}_{part}"
    else:
      out.append(part)
  return tuple(out)


def flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
            ) -> dict[tuple[str, ...], Any]:
  """Nested dict -> {path tuple: leaf}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
  """{path tuple: leaf} -> nested dict."""
  out: dict[str, Any] = {}
  for path, v in flat.items():
    node = out
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = v
  return out


@dataclasses.dataclass(frozen=True)
class ExpectedLeaf:
  """One Flax leaf a network needs, with its PyTorch name and shape."""
  flax_path: tuple[str, ...]  # (collection, module..., leaf)
  torch_key: str
  torch_shape: tuple[int, ...]
  rule: LeafRule


def expected_torch_keys(abstract: Mapping[str, Any]) -> dict[str, ExpectedLeaf]:
  """The PyTorch keys that the Flax variables ``abstract`` (shapes) need.

  ``abstract`` is ``{'params': ..., 'batch_stats': ...}`` of one network
  (arrays or ``jax.ShapeDtypeStruct``). A conv with ``u``/``v`` in
  ``batch_stats`` is spectral-normalised: its kernel is ``weight_orig``.
  """
  flat = {p: v for p, v in flatten(abstract).items()
          if p[0] in ("params", "batch_stats")}
  sn_modules = {p[1:-1] for p in flat if p[0] == "batch_stats" and p[-1] == "u"}
  out = {}
  for path, leaf in flat.items():
    collection, module, name = path[0], path[1:-1], path[-1]
    rule_key = (collection, name + ("@sn" if name == "kernel" and module in sn_modules
                                    else ""))
    if rule_key not in LEAF_RULES:
      raise ValueError(f"no conversion rule for Flax leaf {'/'.join(path)}")
    rule = LEAF_RULES[rule_key]
    key = ".".join(filter(None, [flax_module_to_torch(module), rule.torch_name]))
    out[key] = ExpectedLeaf(path, key, tuple(rule.torch_shape(tuple(leaf.shape))),
                            rule)
  return out


def anti_alias_kernel(channels: int, scale: float) -> np.ndarray:
  """The buffer ``down.weight`` of the official ``AntiAliasInterpolation2d``:
  :func:`dagan_jax.ops.anti_alias_kernel` repeated to ``(channels, 1, k, k)``."""
  from dagan_jax.ops import anti_alias_kernel as kernel2d
  k = np.asarray(kernel2d(scale), np.float32)
  return np.broadcast_to(k, (channels, 1) + k.shape).copy()


@dataclasses.dataclass
class Report:
  """Problems found while matching one state_dict to one network."""
  network: str
  source: str
  missing: list[tuple[str, tuple[int, ...], str]] = dataclasses.field(default_factory=list)
  unexpected: list[tuple[str, tuple[int, ...]]] = dataclasses.field(default_factory=list)
  misshaped: list[tuple[str, tuple[int, ...], tuple[int, ...], str]] = dataclasses.field(
      default_factory=list)
  invalid: list[str] = dataclasses.field(default_factory=list)
  hints: list[str] = dataclasses.field(default_factory=list)
  dropped: list[str] = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    return not (self.missing or self.unexpected or self.misshaped or self.invalid
                or self.hints)

  def format(self) -> str:
    lines = [f"{self.network} ({self.source}) does not match the network built "
             "from the config:"]
    for h in self.hints:
      lines.append(f"  * {h}")
    if self.missing:
      lines.append(f"  missing keys ({len(self.missing)}), expected shape:")
      lines += [f"    {k}: {list(s)}  (Flax {f})" for k, s, f in self.missing]
    if self.unexpected:
      lines.append(f"  unexpected keys ({len(self.unexpected)}), shape in checkpoint:")
      lines += [f"    {k}: {list(s)}" for k, s in self.unexpected]
    if self.misshaped:
      lines.append(f"  mis-shaped keys ({len(self.misshaped)}):")
      lines += [f"    {k}: checkpoint {list(g)}, expected {list(e)}  (Flax {f})"
                for k, g, e, f in self.misshaped]
    for msg in self.invalid:
      lines.append(f"  {msg}")
    return "\n".join(lines)


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module."
                 ) -> dict[str, Any]:
  """Removes a leading ``module.`` (DDP / DataParallel) from every key."""
  return {(k[len(prefix):] if k.startswith(prefix) else k): v
          for k, v in state_dict.items()}


def _shape(v: Any) -> tuple[int, ...]:
  return tuple(getattr(v, "shape", ()))


def match_state_dict(state_dict: Mapping[str, Any], abstract: Mapping[str, Any],
                     *, network: str, source: str,
                     buffers: Mapping[str, np.ndarray] | None = None,
                     drop: Callable[[str], bool] | None = None,
                     ) -> tuple[dict[str, Any], Report]:
  """Matches one (prefix-stripped) state_dict against one network.

  Args:
    state_dict: key -> numpy array (non-arrays are reported unless dropped).
    abstract: the network's variables (shapes), ``{'params', 'batch_stats'}``.
    network, source: names used in messages.
    buffers: keys whose value must equal the given array (anti-alias
      kernels); they are checked and dropped.
    drop: extra predicate for keys to ignore (e.g. ``encoder.fc.``).
  Returns:
    (Flax variables as nested numpy dicts, report).
  """
  buffers = dict(buffers or {})
  expected = expected_torch_keys(abstract)
  report = Report(network, source)
  flat: dict[tuple[str, ...], np.ndarray] = {}
  for key, value in state_dict.items():
    if key.endswith(DROP_SUFFIXES) or (drop is not None and drop(key)):
      report.dropped.append(key)
      continue
    if key in buffers:
      want = buffers.pop(key)
      got = np.asarray(value)
      if got.shape != want.shape:
        report.misshaped.append((key, got.shape, want.shape,
                                 "anti-alias buffer, not converted"))
      elif not np.allclose(got, want, rtol=0, atol=1e-6):
        report.invalid.append(
            f"{key}: the anti-alias Gaussian in the checkpoint differs from the "
            "one of the config's scale_factor (max abs diff "
            f"{float(np.abs(got - want).max()):.3g}); was the model trained with "
            "another scale_factor?")
      report.dropped.append(key)
      continue
    if key not in expected:
      report.unexpected.append((key, _shape(value)))
      continue
    leaf = expected.pop(key)
    arr = np.asarray(value)
    if arr.shape != leaf.torch_shape:
      report.misshaped.append((key, arr.shape, leaf.torch_shape,
                               "/".join(leaf.flax_path)))
      continue
    flat[leaf.flax_path] = np.asarray(leaf.rule.to_flax(arr), dtype=np.float32)
  for key, leaf in expected.items():
    report.missing.append((key, leaf.torch_shape, "/".join(leaf.flax_path)))
  for key, want in buffers.items():
    report.missing.append((key, want.shape, "anti-alias buffer, not converted"))
  return unflatten(flat), report


def raise_if_failed(reports: Iterable[Report]) -> None:
  """Raises one :class:`CheckpointMismatchError` naming every problem."""
  bad = [r for r in reports if not r.ok]
  if bad:
    raise CheckpointMismatchError("\n".join(r.format() for r in bad))


def load_torch_file(path: str, *, trust_pickle: bool = False) -> dict[str, Any]:
  """Loads a ``.pth`` / ``.pth.tar`` file; tensors become float32 numpy arrays.

  Uses ``torch.load(weights_only=True)`` unless ``trust_pickle`` (only for
  files you trust: unpickling runs arbitrary code).
  """
  import os

  from dagan_jax.errors import DataError
  try:
    import torch
  except ImportError as e:  # pragma: no cover - torch is installed in dev
    raise DataError("reading PyTorch checkpoints needs torch "
                    "(pip install torch==2.13.0)") from e
  if not os.path.isfile(path):
    raise DataError(f"checkpoint file not found: {path}")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
  except Exception as e:  # noqa: BLE001 - torch raises many kinds
    hint = ("" if trust_pickle else
            " (if you trust the file, retry with --trust-pickle)")
    raise DataError(f"cannot read {path} as a PyTorch checkpoint: {e}{hint}") from e

  def to_numpy(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
      t = v.detach().cpu()
      if t.is_floating_point():
        t = t.float()
      return t.numpy()
    if isinstance(v, Mapping):
      return {k: to_numpy(x) for k, x in v.items()}
    return v

  if not isinstance(obj, Mapping):
    raise DataError(f"{path} holds a {type(obj).__name__}, not a state_dict")
  return to_numpy(obj)
