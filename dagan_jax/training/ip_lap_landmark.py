"""Training IP_LAP's landmark generator (``trainer: 'ip_lap_landmark'``;
official ``train_landmarks_generator.py``).

A record (:mod:`dagan_jax.input.ip_lap_records`, ``stage='landmark'``) is a
window of ``T`` frames of a clip (their mel chunks, pose landmarks and the
target content landmarks) with ``Nl`` reference landmark sets of other
frames of the same clip. The network
(:class:`~dagan_jax.models.ip_lap_landmark.LandmarkGenerator`, the official
init) runs in training mode: dropout on (0.1, a mask per device from the
step's key) and BatchNorm on batch statistics, synchronised over the
devices (the official script wraps the model in ``DataParallel``, whose
replicas each normalise their own share; synchronising is this package's
one rule).

**Loss** (:func:`dagan_jax.losses.ip_lap.landmark_losses`): ``l1`` (mean
absolute error of all content coordinates) plus ``velocity`` (mean distance
between predicted and target frame-to-frame motion), weights
``train_params.loss_weights`` (1 and 1, official). ``velocity_on='all'``
(default) measures the motion of all 57 content points, the paper's intent
and the official code since its last commit; ``'official_3'`` measures
only the first three (jaw) points, as the official code did before that
fix (``range(3)`` over the points axis).

**Optimiser**: Adam, ``learning_rate`` 1e-4, betas (0.9, 0.999), no decay,
as the official script.

**Pictures** (TensorBoard ``ip_lap_landmark/samples``, every
``image_every`` steps, the network in eval mode on the first batch's first
samples): per sample the window's frames drawn as IP_LAP sketches with the
frame's pose landmarks, the target content in green and the prediction in
red (the pose lines and agreeing points are yellow).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dagan_jax import compute
from dagan_jax.errors import ConfigError
from dagan_jax.losses import ip_lap as ip_lap_losses
from dagan_jax.models import build as build_lib
from dagan_jax.models import ip_lap_landmark as landmark_lib
from dagan_jax.models import layers
from dagan_jax.training import ip_lap, parallel, setup
from dagan_jax.training.loop import STOP_KEY, stop_signal

Array = jax.Array
NET = "ip_lap_landmark"


@dataclasses.dataclass(frozen=True)
class LandmarkTask:
  """The static pieces of the step."""
  model: landmark_lib.LandmarkGenerator
  optimizer: optax.GradientTransformation
  velocity_on: str
  loss_weights: Mapping[str, float]
  kernels: str


def make_task(config) -> LandmarkTask:
  tp = config.train_params
  velocity_on = str(tp.velocity_on)
  if velocity_on not in ip_lap_losses.VELOCITY_CHOICES:
    raise ConfigError(f"train_params.velocity_on is {velocity_on!r}; expected "
                      f"one of {ip_lap_losses.VELOCITY_CHOICES}")
  weights = {k: float(tp.loss_weights[k]) for k in ("l1", "velocity")}
  return LandmarkTask(
      model=build_lib.build_models(config).ip_lap_landmark,
      optimizer=ip_lap.adam(tp.learning_rate, tp.betas),
      velocity_on=velocity_on, loss_weights=weights,
      kernels=str(config.compute.kernels))


def init_state(task: LandmarkTask, key: Array) -> ip_lap.IPLapState:
  """The official initialisation (:func:`landmark_lib.init_variables`;
  traced with the plain kernels, which compile fastest: initial values do
  not depend on how convolutions are computed)."""
  v = compute.jit(lambda k: landmark_lib.init_variables(task.model, k),
                  kernels="xla")(key)
  return ip_lap.IPLapState(
      step=jnp.zeros((), jnp.int32), params={NET: v["params"]},
      batch_stats={NET: v["batch_stats"]},
      opt_state={NET: task.optimizer.init(v["params"])})


def _inputs(batch: Mapping[str, Array]) -> tuple[Array, ...]:
  return (batch["mels"][..., None], batch["pose"], batch["ref_pose"],
          batch["ref_content"])


def loss_fn(params, batch_stats, batch: Mapping[str, Array], key: Array,
            task: LandmarkTask):
  """``(total, (weighted terms, new batch_stats))`` in training mode."""
  pred, upd = task.model.apply(
      {"params": params, "batch_stats": batch_stats}, *_inputs(batch),
      deterministic=False, rngs={"dropout": key}, mutable=["batch_stats"])
  terms = ip_lap_losses.landmark_losses(pred, batch["content"],
                                        velocity_on=task.velocity_on)
  weighted = {k: task.loss_weights[k] * v for k, v in terms.items()}
  return sum(weighted.values()), (weighted, upd["batch_stats"])


def per_device_step(state: ip_lap.IPLapState, batch: Mapping[str, Array],
                    key: Array, *, task: LandmarkTask,
                    axis_name: str | None = parallel.DATA_AXIS):
  """One Adam step on this device's share of the batch (collectives over
  ``axis_name``; None: one device)."""
  key = ip_lap.device_key(key, axis_name)
  with layers.sync_batch_norm(axis_name):
    (total, (terms, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params[NET], state.batch_stats[NET], batch, key, task)
  grads = ip_lap.pmean(grads, axis_name)
  updates, opt = task.optimizer.update(grads, state.opt_state[NET],
                                       state.params[NET])
  new = ip_lap.IPLapState(
      step=state.step + 1,
      params={NET: optax.apply_updates(state.params[NET], updates)},
      batch_stats={NET: stats}, opt_state={NET: opt})
  metrics = ip_lap.pmean({**terms, "total": total,
                          "grad_norm": compute.global_norm(grads)}, axis_name)
  metrics[STOP_KEY] = stop_signal(batch, axis_name)
  new, metrics["finite"] = ip_lap.keep_if_finite(new, state, [total, grads],
                                                 axis_name)
  return new, metrics


def make_train_step(task: LandmarkTask, mesh):
  """``step(state, batch, key) -> (state, metrics)``, data-parallel, jitted."""
  return ip_lap.shard_step(functools.partial(per_device_step, task=task), mesh,
                           task.kernels)


def make_predict(task: LandmarkTask):
  """``predict(variables, batch) -> (B, T, 57, 2)`` in eval mode (jitted)."""
  return compute.jit(lambda v, b: task.model.apply(v, *_inputs(b)),
                     kernels=task.kernels)


def landmark_overlay(pose: np.ndarray, target: np.ndarray,
                     pred: np.ndarray) -> np.ndarray:
  """(128, 128, 3) float: the frame's sketch with the ``target`` content
  (57, 2) in green and ``pred`` in red (``pose`` (74, 2) in both)."""
  from dagan_jax.face import ip_lap_landmarks as lm  # pylint: disable=import-outside-toplevel
  size = (lm.SKETCH_SIZE, lm.SKETCH_SIZE)
  draw = lambda content: lm.draw_canvas(  # noqa: E731
      np.concatenate([pose, content]).T, size)[..., 0] / lm.SKETCH_GREY
  out = np.zeros(size + (3,), np.float32)
  out[..., 0] = draw(pred)
  out[..., 1] = draw(target)
  return out


def pictures(predict, state: ip_lap.IPLapState,
             batch: Mapping[str, np.ndarray]) -> np.ndarray | None:
  """One row per sample, one overlay per window frame
  (:func:`landmark_overlay`)."""
  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  if not batch:
    return None
  inputs = {k: jnp.asarray(batch[k]) for k in ("mels", "pose", "ref_pose",
                                               "ref_content")}
  pred = np.asarray(predict(parallel.to_host(state.variables(NET)), inputs))
  rows = [[landmark_overlay(batch["pose"][i, t], batch["content"][i, t],
                            pred[i, t]) for t in range(pred.shape[1])]
          for i in range(pred.shape[0])]
  return visualize.grid(rows)


def _make(config, plan: setup.RunPlan, key: Array) -> ip_lap.StageRun:
  task = make_task(config)
  step = make_train_step(task, plan.mesh)
  predict = make_predict(task)
  state = init_state(task, key)
  n = build_lib.count_params(state.params)
  return ip_lap.StageRun(
      state=state, step_for=lambda i: step,
      pictures=lambda s, b: pictures(predict, s, b), scalars=lambda i: {},
      notes=[f"IP_LAP landmark generator: {n:,} parameters; velocity on "
             f"{task.velocity_on} content points; Adam lr "
             f"{float(config.train_params.learning_rate):g}"])


STAGE = ip_lap.Stage(
    records="landmark", network=NET, companion="ip_lap_renderer",
    companion_key="renderer_model",
    num_refs=lambda config: int(config.ip_lap_params.Nl),
    progress_keys={"L1": "l1", "vel": "velocity"}, make=_make)


def train_and_evaluate(config, workdir: str | pathlib.Path, *,
                       max_steps: int | None = None,
                       progress: bool = True, devices: Any = None
                       ) -> dict[str, Any]:
  """Trains the landmark generator of ``config`` in ``workdir`` (resumable;
  :func:`dagan_jax.training.ip_lap.train`)."""
  return ip_lap.train(config, workdir, STAGE, max_steps=max_steps,
                      progress=progress, devices=devices)
