"""What one training step costs, from the compiler: memory and FLOPs.

:func:`train_step_cost` lowers and compiles the real training step of a
config (the talking-head step: generator + discriminator updates with every
loss; or the depth step) for one device with ``batch_per_device`` samples,
on abstract inputs (nothing is allocated or run), and reads XLA's
``memory_analysis()`` and ``cost_analysis()``.

Peak memory is reported as XLA's buffer assignment gives it: arguments
(parameters, optimiser states, frozen networks, the batch) + outputs +
temporaries - aliased (donated) bytes. It is what one device needs for the
step; the per-sample figure divides the temporaries (activations) by the
batch, since arguments do not grow with it.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp

from dagan_jax import compute


def _sds(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _talking_head_args(cfg, batch: int, device):
  from dagan_jax.models import build as build_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.training import parallel  # pylint: disable=import-outside-toplevel
  from dagan_jax.training import talking_head as th  # pylint: disable=import-outside-toplevel

  task = th.make_task(cfg, global_batch_size=batch, steps_per_epoch=1,
                      vgg=th.perceptual_module(cfg.train_params))
  mesh = parallel.make_mesh([device])
  abstract = build_lib.abstract_variables(task.models, th.TRAINED)
  state = jax.eval_shape(lambda v: th.create_train_state(task, v), abstract)
  frozen: dict[str, Any] = {}
  if task.use_depth_network:
    frozen["depth"] = build_lib.abstract_variables(
        task.models, ("depth_encoder", "depth_decoder"))
  if task.vgg is not None:
    frozen["vgg"] = jax.eval_shape(
        lambda k: task.vgg.init(k, jnp.zeros((1, 64, 64, 3))), jax.random.key(0))
  h, w, c = (int(v) for v in cfg.dataset_params.frame_shape)
  images = jax.ShapeDtypeStruct((batch, h, w, c), jnp.float32)
  batch_sds = {"source": images, "driving": images}
  key = jax.eval_shape(lambda: jax.random.key(0))
  return th.make_train_step(task, mesh), (_sds(state), batch_sds, _sds(frozen), key)


def _depth_args(cfg, batch: int, device):
  from dagan_jax.training import depth as depth_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.training import parallel  # pylint: disable=import-outside-toplevel

  task = depth_lib.make_task(cfg, steps_per_epoch=1)
  mesh = parallel.make_mesh([device])
  state = jax.eval_shape(
      lambda k: depth_lib.init_state(task, k, cfg.dataset_params.frame_shape),
      jax.random.key(0))
  h, w, c = (int(v) for v in cfg.dataset_params.frame_shape)
  frames = jax.ShapeDtypeStruct((batch, 3, h, w, c), jnp.float32)
  key = jax.eval_shape(lambda: jax.random.key(0))
  return (depth_lib.make_train_step(task, mesh),
          (_sds(state), {"frames": frames, "frames_aug": frames}, key))


def train_step_cost(config, batch_per_device: int = 1) -> dict[str, Any]:
  """Compiles one training step for one device and reports its cost.

  Returns bytes (``argument``, ``output``, ``temp``, ``alias``, ``peak``),
  ``peak_per_sample`` (arguments once + temporaries / batch), ``flops`` of
  the step (XLA's count, where available) and ``compile_seconds``.
  """
  import time  # pylint: disable=import-outside-toplevel
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.train_params.batch_size = int(batch_per_device)
  device = jax.devices()[0]
  if cfg.trainer == "depth":
    step, args = _depth_args(cfg, batch_per_device, device)
  else:
    step, args = _talking_head_args(cfg, batch_per_device, device)
  t0 = time.perf_counter()
  # Compiled to be measured, not run: machine code at the cheapest level.
  compiled = step.lower(*args).compile(
      compiler_options=compute.analysis_options(device.platform))
  seconds = time.perf_counter() - t0
  ma = compiled.memory_analysis()
  out = {"batch_per_device": int(batch_per_device), "compile_seconds": seconds,
         "platform": device.platform}
  if ma is not None:
    arg, outp = ma.argument_size_in_bytes, ma.output_size_in_bytes
    temp, alias = ma.temp_size_in_bytes, ma.alias_size_in_bytes
    out.update({"argument": arg, "output": outp, "temp": temp, "alias": alias,
                "peak": arg + outp + temp - alias,
                "peak_per_sample": arg + (outp - alias) + temp / batch_per_device})
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if cost and "flops" in cost:
    out["flops"] = float(cost["flops"])
  return out


def human_bytes(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if abs(n) < 1024 or unit == "TiB":
      return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1024
  return f"{n:.1f} TiB"
