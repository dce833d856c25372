"""The program both of IP_LAP's trainers run (Zhong et al., CVPR 2023).

IP_LAP dubs a template video in two stages, trained separately: the
landmark generator (audio + template pose + reference landmarks -> lip and
jaw landmarks; :mod:`dagan_jax.training.ip_lap_landmark`) and the renderer
(reference faces warped to the target sketch, the lower face filled in;
:mod:`dagan_jax.training.ip_lap_renderer`). ``config.trainer`` picks one.
What they share lives here, once:

1. **Inputs.** ``train_params.prepared_dir`` is the folder ``dagan-jax data
   prepare`` wrote for ``dataset_params.root_dir`` (the face mesh and mel of
   every clip); empty = prepare the train split into ``WORKDIR/prepared``
   now (one process; resumable, so a rerun reuses it; Audio2Head's pitch by
   YIN, which IP_LAP does not read).
2. **Data**: :mod:`dagan_jax.input.ip_lap_records`, batched per host; an
   epoch is ``num_repeats`` records per clip (or person with
   ``id_sampling``), as :func:`dagan_jax.training.setup.plan_run` counts.
3. **The step**, compiled once per phase by the stage: ``jax.shard_map``
   over the ``('data',)`` mesh (:func:`shard_step`), BatchNorm statistics
   synchronised over it, gradients and metrics ``pmean``-ed, Adam. A step
   whose loss or gradient is not finite leaves the state unchanged
   (:func:`keep_if_finite`) and the loop stops naming the offending terms.
4. **Outputs**: ``WORKDIR/checkpoints`` (parameters, BatchNorm statistics,
   optimiser states, the data iterator's position: a rerun resumes
   exactly), TensorBoard scalars and the stage's pictures,
   ``metrics.jsonl``, and ``WORKDIR/model``: a model directory with the
   trained network under its model-directory name (``ip_lap_landmark`` or
   ``ip_lap_renderer``, the names ``dagan-jax convert`` gives the official
   checkpoints) and, when ``train_params.renderer_model`` /
   ``landmark_model`` names the other stage's run, that network too, so
   that the second stage's ``model/`` is what ``dagan-jax dub --checkpoint``
   loads. The other network is checked against this config's
   ``ip_lap_params`` when the run starts.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from dagan_jax import checkpoints, compute
from dagan_jax.errors import ConfigError
from dagan_jax.training import parallel, setup
from dagan_jax.training.loop import LaggedMetrics, Progress, run_steps

log = logging.getLogger(__name__)
Array = jax.Array


@flax.struct.dataclass
class IPLapState:
  """What changes in training (replicated on every device), per network:
  ``params``, ``batch_stats`` (networks with BatchNorm), ``opt_state``."""
  step: Array
  params: dict[str, Any]
  batch_stats: dict[str, Any]
  opt_state: dict[str, Any]

  def variables(self, name: str) -> dict[str, Any]:
    """Flax variables of network ``name``."""
    out = {"params": self.params[name]}
    if name in self.batch_stats:
      out["batch_stats"] = self.batch_stats[name]
    return out


@dataclasses.dataclass
class StageRun:
  """What a stage hands the shared program (:func:`train`).

  ``state``: the initial state (host arrays); ``step_for(i)``: the compiled
  ``step(state, batch, key) -> (state, metrics)`` that runs step index
  ``i`` (0-based; a stage with phases switches on it); ``pictures(state,
  batch)``: an (H, W, 3) image for TensorBoard, or None; ``scalars(i)``:
  extra scalars logged at step ``i``; ``notes``: lines for the log.
  """
  state: IPLapState
  step_for: Callable[[int], Callable]
  pictures: Callable[[IPLapState, Mapping[str, np.ndarray]], np.ndarray | None]
  scalars: Callable[[int], Mapping[str, float]]
  notes: list[str]


@dataclasses.dataclass(frozen=True)
class Stage:
  """One of IP_LAP's two trainers, as :func:`train` runs it.

  ``records``: the record kind (:mod:`dagan_jax.input.ip_lap_records`);
  ``network`` the trained network's model-directory name, ``companion``
  the other stage's, ``companion_key`` the ``train_params`` key naming a
  model directory that holds it; ``num_refs(config)`` references per
  record; ``progress_keys`` metrics shown on the progress bar;
  ``make(config, plan, key)`` builds the :class:`StageRun`.
  """
  records: str
  network: str
  companion: str
  companion_key: str
  num_refs: Callable[[Any], int]
  progress_keys: Mapping[str, str]
  make: Callable[[Any, setup.RunPlan, Array], StageRun]


# --------------------------------------------------------------------------
# Pieces of the steps


def adam(lr: float, betas) -> optax.GradientTransformation:
  """``torch.optim.Adam(lr, betas)`` (eps 1e-8, no weight decay)."""
  b1, b2 = (float(b) for b in betas)
  return optax.adam(float(lr), b1=b1, b2=b2, eps=1e-8)


def pmean(tree: Any, axis_name: str | None) -> Any:
  return jax.lax.pmean(tree, axis_name) if axis_name else tree


def device_key(key: Array, axis_name: str | None) -> Array:
  """This device's key (dropout masks differ between devices)."""
  return jax.random.fold_in(key, jax.lax.axis_index(axis_name)) if axis_name else key


def keep_if_finite(new: IPLapState, old: IPLapState, checked: Any,
                   axis_name: str | None) -> tuple[IPLapState, Array]:
  """``new`` where every array of ``checked`` (losses, gradients) is finite on
  every device, else ``old``; and that flag as float32 (the loop's
  ``finite`` metric)."""
  ok = pmean(compute.all_finite(checked).astype(jnp.float32), axis_name) == 1.0
  state = jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)
  return state, ok.astype(jnp.float32)


def shard_step(per_device: Callable, mesh, kernels: str, *,
               frozen_spec: bool = False) -> Callable:
  """``per_device(state, batch, key[, frozen])`` run under ``jax.shard_map``
  (state, key and frozen replicated, batch split along ``data``), jitted
  through :func:`dagan_jax.compute.jit` with the state donated."""
  in_specs = (P(), P(parallel.DATA_AXIS), P()) + ((P(),) if frozen_spec else ())
  sharded = jax.shard_map(
      functools.partial(per_device, axis_name=parallel.DATA_AXIS), mesh=mesh,
      in_specs=in_specs, out_specs=(P(), P()),
      # pmap semantics: per-device gradients reduced by the explicit pmean.
      check_vma=False)
  return compute.jit(sharded, kernels=kernels, donate_argnums=(0,))


# --------------------------------------------------------------------------
# Inputs and the plan


def prepared_folder(config, workdir: pathlib.Path, notes: list[str]) -> str:
  """``train_params.prepared_dir``, or ``WORKDIR/prepared`` after preparing
  the train split there (one process only)."""
  tp, dp = config.train_params, config.dataset_params
  if tp.prepared_dir:
    return str(tp.prepared_dir)
  if jax.process_count() > 1:
    raise ConfigError("train_params.prepared_dir is empty: with several "
                      "processes, prepare the data first (`dagan-jax data "
                      "prepare`) and name the folder")
  from dagan_jax.input import prepare  # pylint: disable=import-outside-toplevel
  out = workdir / "prepared"
  report = prepare.prepare_dataset(
      dp.root_dir, out, layout=str(dp.layout), splits=("train",),
      pitch_tracker="yin", cache_dir=dp.cache_dir or None, progress=False)
  notes.append(f"prepared {dp.root_dir} into {out}: " + report.format())
  return str(out)


def plan_run(config, av_split, *, max_steps: int | None,
             devices: Any = None) -> setup.RunPlan:
  """:class:`~dagan_jax.training.setup.RunPlan` over the prepared split
  (steps counted as :func:`dagan_jax.training.setup.plan_run` does) on a
  mesh of ``devices`` (default: all)."""
  from dagan_jax.input import clips as clips_lib  # pylint: disable=import-outside-toplevel
  tp = config.train_params
  mesh = parallel.make_mesh(devices)
  global_bs = int(tp.batch_size)
  groups = clips_lib.group_clips(av_split.clips,
                                 bool(config.dataset_params.id_sampling))
  steps_per_epoch = max(len(groups) * int(tp.num_repeats) // global_bs, 1)
  total = int(tp.max_steps or 0) or int(tp.num_epochs) * steps_per_epoch
  if max_steps is not None:
    total = int(max_steps)
  return setup.RunPlan(mesh=mesh, global_batch_size=global_bs,
                       host_batch_size=parallel.per_host_batch_size(global_bs, mesh),
                       split_data=av_split, steps_per_epoch=steps_per_epoch,
                       total_steps=total, skip_bad=bool(tp.skip_bad_data))


def load_companion(config, stage: Stage) -> tuple[dict[str, Any] | None, str]:
  """The other stage's network from ``train_params.<companion_key>`` (checked
  against this config), or None; and a log line."""
  path = str(config.train_params.get(stage.companion_key) or "")
  if not path:
    return None, (f"{stage.companion}: not included in model/ (set train_params."
                  f"{stage.companion_key} to add it for `dagan-jax dub`)")
  # Shapes are checked by tracing the networks; the plain kernels trace
  # fastest and give the same shapes.
  with compute.use("xla"):
    _, variables = checkpoints.load_model(
        checkpoints.resolve_model_dir(path), config, required=(stage.companion,))
  return (jax.tree.map(np.asarray, dict(variables[stage.companion])),
          f"{stage.companion}: from {path}, written into model/ too")


def export_model(config, stage: Stage, state: IPLapState,
                 companion: dict[str, Any] | None,
                 workdir: pathlib.Path) -> pathlib.Path:
  """``WORKDIR/model`` with the trained network (and the companion)."""
  variables = {stage.network: parallel.to_host(state.variables(stage.network))}
  if companion is not None:
    variables[stage.companion] = companion
  return checkpoints.save_model(
      workdir / "model", variables, config, overwrite=True,
      info={"step": int(parallel.to_host(state.step)),
            "trainer": str(config.trainer)})


def _config_yaml(config) -> str:
  from dagan_jax.config import to_yaml  # pylint: disable=import-outside-toplevel
  return to_yaml(config)


# --------------------------------------------------------------------------
# The program


def train(config, workdir: str | pathlib.Path, stage: Stage, *,
          max_steps: int | None = None, progress: bool = True,
          devices: Any = None) -> dict[str, Any]:
  """Trains ``stage`` as ``config`` says in ``workdir`` (resumes from its
  latest checkpoint) on ``devices`` (default: every device). Returns a
  summary (final step, last metrics, seconds, model directory)."""
  from dagan_jax.input import ip_lap_records  # pylint: disable=import-outside-toplevel

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.get("ip_lap_params") is None:
    raise ConfigError("the config has no ip_lap_params section "
                      "(dagan_jax.config.ip_lap_train_config)")
  tp, ip = config.train_params, config.ip_lap_params
  seed = int(config.seed)
  notes: list[str] = []
  prepared = prepared_folder(config, workdir, notes)
  av_split = ip_lap_records.open_ip_lap_split(
      config.dataset_params, prepared, "train", min_frames=int(tp.min_frames),
      skip_bad=bool(tp.skip_bad_data))
  plan = plan_run(config, av_split, max_steps=max_steps, devices=devices)
  dataset = ip_lap_records.make_ip_lap_dataset(
      config.dataset_params, prepared, stage=stage.records,
      batch_size=plan.host_batch_size, T=int(ip.T),
      num_refs=stage.num_refs(config), img_size=int(ip.img_size),
      margin=float(tp.crop_margin_px), seed=seed,
      min_frames=int(tp.min_frames), num_workers=int(tp.num_workers),
      skip_bad=plan.skip_bad, av_split=av_split)
  data_iter = iter(dataset)
  companion, line = load_companion(config, stage)
  notes.append(line)

  built = stage.make(config, plan, jax.random.key(seed))
  notes += built.notes
  state = parallel.replicate(built.state, plan.mesh)
  run = setup.open_run(workdir, config, plan, state, data_iter,
                       progress=progress, description=config.name or config.trainer)
  state, start, ckpt, monitor = run.state, run.start, run.ckpt, run.monitor
  notes += run.notes
  total = plan.total_steps
  notes.append(f"devices: {plan.mesh.devices.size} ({jax.devices()[0].platform}), "
               f"{jax.process_count()} process(es); global batch "
               f"{plan.global_batch_size}, {plan.steps_per_epoch} steps/epoch, "
               f"{total} steps; train clips: {len(av_split.clips)} (excluded: "
               f"{len(av_split.excluded)}), prepared arrays in {prepared}")
  if start >= total:
    notes.append(f"already at step {start} of {total}: nothing to do")
  for line in notes:
    log.info(line)
    monitor.write(line)

  at = Progress(step=start, skipped=run.skipped)
  image_every = int(tp.image_every or 0)
  vis: dict[str, np.ndarray] = {}
  lagged = LaggedMetrics(
      monitor, ckpt, total_steps=total, log_every=max(int(tp.log_every), 1),
      progress_keys=stage.progress_keys,
      extra=lambda done: {"skipped_clips": at.skipped,
                          "steps_per_second": monitor.steps_per_second(done),
                          **built.scalars(done - 1)})

  def after_step(step, state):
    if image_every and (step % image_every == 0 or step == 1):
      image = built.pictures(state, vis)
      if image is not None:
        monitor.image(step, f"{config.trainer}/samples", image)

  state = run_steps(
      state, at, step_fn=lambda s, b, k: built.step_for(at.step)(s, b, k),
      data_iter=data_iter, mesh=plan.mesh, base_key=jax.random.key(seed + 1),
      total_steps=total, ckpt=ckpt, ckpt_every=max(int(tp.checkpoint_every), 1),
      lagged=lagged, monitor=monitor,
      checkpoint_meta=lambda skipped: {"trainer": str(config.trainer),
                                       "skipped": skipped,
                                       "config": _config_yaml(config)},
      first_batch=lambda local: vis.update(
          {k: np.asarray(v)[:min(4, plan.host_batch_size)]
           for k, v in local.items()}),
      after_step=after_step)
  summary: dict[str, Any] = {"notes": notes}
  if at.signal:
    summary["stopped_by_signal"] = at.signal
  model_dir = export_model(config, stage, state, companion, workdir)
  elapsed = at.seconds
  summary.update({"step": at.step, "metrics": lagged.last,
                  "skipped_clips": at.skipped, "seconds": elapsed,
                  "model_dir": str(model_dir),
                  "steps_per_second": (at.step - start) / elapsed if elapsed else 0.0})
  monitor.write(f"done: step {at.step}, {summary['steps_per_second']:.3g} "
                f"steps/s; model written to {model_dir}")
  monitor.close()
  ckpt.close()
  return summary
