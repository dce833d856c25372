"""The program both of Audio2Head's speech-network trainers run.

Audio2Head (Wang et al., IJCAI 2021) drives a keypoint renderer with two
networks trained on speech: ``audio2pose`` (6-DoF head poses from speech and
the identity image) and ``audio2kp`` (the renderer's keypoints and Jacobians
from speech, pose boxes and the identity image). The renderer -- a DaGAN,
DaGAN++ or FOMM model directory -- is not retrained: audio2kp learns the
keypoints its frozen detector finds on real frames, which ``dagan-jax data
prepare --model RENDERER`` stores per frame, beside the head poses of our
face tools that audio2pose learns.

**Why two trainer modules and this one.** The stages share everything but
their network, loss and pictures: the data (windows of prepared clips),
the renderer and prepared-folder checks, the data-parallel step around a
loss, the loop, the checkpoints, and the model directory at the end. That
shared program lives here, once; each stage's own part -- what its windows
carry, its loss (with the reasons for it) and its pictures -- reads top to
bottom in :mod:`dagan_jax.training.audio2kp` and
:mod:`dagan_jax.training.audio2pose`, chosen by ``config.trainer``. Either
stage may run first; each exports a model directory with the renderer and
its own network, plus the other's when ``train_params.speech_model`` names
its run, so the second stage's ``model/`` is what ``dagan-jax speak
--checkpoint`` needs.

**The program** (:func:`train`):

1. Inputs. ``train_params.prepared_dir`` is the prepared folder; empty =
   prepare ``dataset_params.root_dir`` into ``WORKDIR/prepared`` now (one
   process; resumable) with ``train_params.renderer`` or, if that is empty
   too, RANDOM renderer weights saved to ``WORKDIR/renderer`` (smoke runs).
   The renderer defaults to the model the prepared keypoints came from (the
   manifest records it). Its stored config supplies ``model_params`` and
   ``dataset_params.frame_shape`` (the frames the keypoints were computed
   on); the rest of the config is this run's. Checked before any step
   (:class:`~dagan_jax.errors.ConfigError` naming both sides): the prepared
   pitch tracker is ``audio2head_params.pitch_tracker`` ('auto' takes the
   prepared one), audio2kp's ``num_kp`` is the prepared files' K, and the
   prepared keypoints came from a model with the renderer's
   ``model_params``.
2. Data: :mod:`dagan_jax.input.av_windows` windows (crops at
   ``frame_shape``) of the stage's length, reduced per record by the
   stage's map (:mod:`dagan_jax.training.speech_records`), batched per host.
3. One compiled step (:func:`make_train_step`): ``jax.shard_map`` over the
   ``('data',)`` mesh, BatchNorm statistics synchronised over it, the
   gradient and metrics ``pmean``-ed, Adam. Losses are means over the
   *global* batch's valid elements (:func:`global_mean`), so the step gives
   the same numbers on 1 or N devices. A step whose loss or gradient is not
   finite leaves the state unchanged; the loop then stops naming the
   offending terms (:mod:`dagan_jax.training.loop`).
4. ``WORKDIR/checkpoints`` (parameters, BatchNorm statistics, optimiser,
   data-iterator position: a rerun resumes exactly), TensorBoard scalars
   and the stage's pictures, ``metrics.jsonl``, and ``WORKDIR/model``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
from typing import Any, Callable, Mapping

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from dagan_jax import checkpoints, compute
from dagan_jax import config as config_lib
from dagan_jax.errors import ConfigError, DataError
from dagan_jax.models import build as build_lib
from dagan_jax.models import layers
from dagan_jax.training import optim, parallel, setup
from dagan_jax.training.loop import (STOP_KEY, LaggedMetrics, Progress,
                                     run_steps, stop_signal)

log = logging.getLogger(__name__)
Array = jax.Array

#: Renderer networks a speech model directory carries (depth: when the
#: renderer has it).
RENDERER_NETWORKS = ("kp_detector", "generator", "depth_encoder",
                     "depth_decoder")
#: The size Audio2Head's networks see images and pose boxes at.
A2H_SIZE = 256

#: ``loss(params, batch_stats, batch, axis_name) -> (total, (terms, stats))``
LossFn = Callable[[Any, Any, Mapping[str, Array], str | None],
                  tuple[Array, tuple[dict[str, Array], Any]]]


@flax.struct.dataclass
class SpeechState:
  """What a step changes (replicated on every device)."""
  step: Array                    # int32: finished steps
  params: Any                    # the trained network's params
  batch_stats: Any               # its BatchNorm running statistics
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class SpeechTask:
  """The static pieces a step closes over."""
  network: str                   # 'audio2kp' or 'audio2pose'
  models: build_lib.Models
  loss: LossFn
  optimizer: optax.GradientTransformation
  compute_dtype: Any
  kernels: str

  @property
  def module(self):
    return getattr(self.models, self.network)


@dataclasses.dataclass(frozen=True)
class Stage:
  """What a trainer module gives :func:`train`.

  ``make_task(config, models, steps_per_epoch)``; ``records``: the Grain map
  of its windows; ``window(config)``: frames per window;
  ``needs_keypoints``: its windows need the renderer's keypoints;
  ``pictures(task, state, batch)``: an (H, W, 3) image for TensorBoard;
  ``progress_keys``: progress-bar label -> metric.
  """
  network: str
  make_task: Callable[..., SpeechTask]
  records: grain.transforms.Map
  window: Callable[[Any], int]
  needs_keypoints: bool
  pictures: Callable[[SpeechTask, SpeechState, Mapping[str, np.ndarray]],
                     np.ndarray]
  progress_keys: Mapping[str, str]


# --------------------------------------------------------------------------
# Pieces of a task

def compute_dtype(train_params) -> Any:
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(
      str(train_params.compute_dtype))
  if dtype is None:
    raise ConfigError(f"train_params.compute_dtype is "
                      f"{train_params.compute_dtype!r}; expected 'float32' or "
                      "'bfloat16'")
  return dtype


def optimizer(train_params, steps_per_epoch: int
              ) -> optax.GradientTransformation:
  """Adam with ``learning_rate`` decayed 10x at each ``epoch_milestones``."""
  betas = [float(b) for b in train_params.betas]
  if len(betas) != 2:
    raise ConfigError(f"train_params.betas is {betas}; expected [b1, b2]")
  schedule = optim.multistep_schedule(
      float(train_params.learning_rate),
      list(train_params.epoch_milestones or []), steps_per_epoch)
  return optim.adam(schedule, b1=betas[0], b2=betas[1])


def cast(tree: Any, dtype) -> Any:
  """Floating leaves of ``tree`` in ``dtype`` (others unchanged)."""
  if dtype == jnp.float32:
    return tree
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      tree)


def apply_train(module, dtype, params, batch_stats, *args):
  """``module`` in train mode (batch statistics), computed in ``dtype``;
  returns ``(output in float32, new batch_stats)``."""
  variables = {"params": cast(params, dtype), "batch_stats": batch_stats}
  out, upd = module.apply(variables, *cast(args, dtype), mutable=["batch_stats"])
  out = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), out)
  return out, upd["batch_stats"]


def global_mean(values: Array, weights: Array, axis_name: str | None) -> Array:
  """``sum(values * weights) / sum(weights)`` over the global batch, as this
  device's share: ``pmean`` over the devices of the result (and of its
  gradient) is the global weighted mean, whatever each device's count.
  ``weights`` broadcast against ``values``; an all-zero count gives 0."""
  weights = jnp.broadcast_to(weights, values.shape).astype(jnp.float32)
  local = jnp.sum(jnp.where(weights > 0, values, 0.0) * weights)
  count = jnp.sum(weights)
  devices = 1.0
  if axis_name is not None:
    count = jax.lax.psum(count, axis_name)
    devices = jax.lax.psum(1.0, axis_name)
  return local * devices / jnp.maximum(count, 1e-12)


# --------------------------------------------------------------------------
# State and step

def init_state(task: SpeechTask, key: Array) -> SpeechState:
  """Fresh variables of the task's network (PyTorch's default init)."""
  variables = build_lib.init_variables(task.models, key, names=(task.network,))
  v = variables[task.network]
  return SpeechState(step=jnp.zeros((), jnp.int32), params=v["params"],
                     batch_stats=v.get("batch_stats", {}),
                     opt_state=task.optimizer.init(v["params"]))


def per_device_step(state: SpeechState, batch: Mapping[str, Array], *,
                    task: SpeechTask, axis_name: str | None = parallel.DATA_AXIS
                    ) -> tuple[SpeechState, dict[str, Array]]:
  """One Adam update on this device's shard (collectives over
  ``axis_name``; None: one device)."""
  def pmean(x):
    return jax.lax.pmean(x, axis_name) if axis_name else x

  with layers.sync_batch_norm(axis_name):
    (total, (terms, stats)), grads = jax.value_and_grad(task.loss, has_aux=True)(
        state.params, state.batch_stats, batch, axis_name)
  total, grads = pmean(total), pmean(grads)
  updates, opt_state = task.optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = pmean(terms)
  metrics.update({"total": total, "grad_norm": compute.global_norm(grads)})
  metrics[STOP_KEY] = stop_signal(batch, axis_name)
  ok = pmean(compute.all_finite([total, grads]).astype(jnp.float32)) == 1.0
  new = SpeechState(step=state.step + 1, params=params, batch_stats=stats,
                    opt_state=opt_state)
  # A non-finite step changes nothing: the loop sees `finite` and stops.
  new = jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, state)
  metrics["finite"] = ok.astype(jnp.float32)
  return new, metrics


def make_train_step(task: SpeechTask, mesh) -> Callable:
  """``step(state, batch) -> (state, metrics)``, jitted with the state
  donated; ``batch`` is the global batch sharded along ``data``."""
  sharded = jax.shard_map(
      functools.partial(per_device_step, task=task), mesh=mesh,
      in_specs=(P(), P(parallel.DATA_AXIS)), out_specs=(P(), P()),
      # pmap semantics: per-device gradients reduced by the explicit pmean.
      check_vma=False)
  return compute.jit(sharded, kernels=task.kernels, donate_argnums=(0,))


# --------------------------------------------------------------------------
# Inputs: prepared folder, renderer, the other speech network

@dataclasses.dataclass
class Inputs:
  """What a run reads besides its config (see :func:`resolve_inputs`)."""
  config: ml_collections.ConfigDict    # with the renderer's model_params
  prepared_dir: pathlib.Path
  manifest: dict[str, Any]
  renderer: dict[str, Any]             # {network: variables}; {} if none
  renderer_dir: str
  speech: dict[str, Any]               # the other speech network, if given
  notes: list[str]


def adopt_renderer(config, renderer_config) -> ml_collections.ConfigDict:
  """``config`` with the renderer's ``model_params`` and frame shape,
  validated."""
  d = config.to_dict()
  rc = (renderer_config.to_dict() if hasattr(renderer_config, "to_dict")
        else dict(renderer_config))
  d["model_params"] = rc["model_params"]
  d["dataset_params"]["frame_shape"] = list(rc["dataset_params"]["frame_shape"])
  return config_lib.from_dict(d)


def _renderer_required(config) -> tuple[str, ...]:
  from dagan_jax.models import variants  # pylint: disable=import-outside-toplevel
  mp = config.model_params
  needs_depth = mp.model != "fomm" and variants.requires_depth_network(config)
  return (("kp_detector", "generator")
          + (("depth_encoder", "depth_decoder") if needs_depth else ()))


def load_renderer(path: str) -> tuple[Any, dict[str, Any]]:
  """A renderer model directory: ``(its config, {network: variables})``
  with only the networks a speech model needs."""
  directory = checkpoints.resolve_model_dir(path)
  cfg = checkpoints.read_config(directory)
  cfg, variables = checkpoints.load_model(directory, cfg,
                                          required=_renderer_required(cfg))
  return cfg, {n: variables[n] for n in RENDERER_NETWORKS if n in variables}


def random_renderer(config, directory: pathlib.Path) -> str:
  """Random renderer weights of ``config`` saved as a model directory
  (reused when it exists: a resumed smoke run keeps its renderer)."""
  if (directory / checkpoints.VARIABLES_DIR).is_dir():
    return str(directory)
  models = build_lib.build_models(config)
  variables = build_lib.init_variables(
      models, jax.random.key(int(config.seed) + 29),
      names=_renderer_required(config))
  checkpoints.save_model(directory, variables, config, overwrite=True,
                         info={"random": True})
  return str(directory)


def _model_sha(model_dir: str, config) -> str:
  from dagan_jax.input import prepare  # pylint: disable=import-outside-toplevel
  return prepare.tools_record("", "", model_dir, config)["model"]["model_params_sha"]


def prepared_kp_count(av_split) -> int:
  """K of the prepared keypoints (the split's reference file)."""
  with np.load(av_split.reference, allow_pickle=False) as z:
    return int(z["kp_value"].shape[1])


def resolve_inputs(config, workdir: pathlib.Path, stage: Stage, *,
                   progress: bool = False) -> Inputs:
  """The prepared folder (prepared now if not given, with a progress bar if
  ``progress``), the renderer, the other speech network, and the config
  with the renderer's model; every check of the module docstring's step 1
  but the keypoint count."""
  from dagan_jax.input import prepare  # pylint: disable=import-outside-toplevel
  tp = config.train_params
  notes: list[str] = []
  renderer_dir = str(tp.renderer or "")
  prepared = str(tp.prepared_dir or "")
  if not prepared:
    if jax.process_count() > 1:
      raise ConfigError("train_params.prepared_dir is empty: preparing on the "
                        "fly runs in one process; run `dagan-jax data prepare` "
                        "first and set prepared_dir")
    root = str(config.dataset_params.root_dir or "")
    if not root:
      raise ConfigError("train_params.prepared_dir and dataset_params.root_dir "
                        "are both empty: nothing to train on")
    if not renderer_dir:
      renderer_dir = random_renderer(config, workdir / "renderer")
      notes.append(f"renderer: RANDOM weights ({renderer_dir}; train_params."
                   "renderer is empty) -- fine for a smoke run only")
    prepared_path = workdir / "prepared"
    notes.append(f"preparing {root} into {prepared_path} (resumable)")
    log.info(notes[-1])
    report = prepare.prepare_dataset(
        root, prepared_path, layout=str(config.dataset_params.layout),
        splits=("train",), pitch_tracker=str(config.audio2head_params.pitch_tracker),
        model_dir=renderer_dir, cache_dir=config.dataset_params.cache_dir or None,
        progress=progress)
    notes.append(report.format().splitlines()[0])
    if not report.prepared and not report.skipped:
      raise DataError(f"no clip of {root} could be prepared:\n{report.format()}")
  else:
    prepared_path = pathlib.Path(prepared)
  manifest = prepare.read_manifest(prepared_path)
  tools = manifest.get("tools") or {}
  made_by = (tools.get("model") or {}).get("dir")
  if stage.needs_keypoints and not made_by:
    raise ConfigError(f"{prepared_path} was prepared without --model: it has no "
                      f"renderer keypoints for {stage.network} to learn; "
                      "prepare it with `dagan-jax data prepare ... --model "
                      "RENDERER`")
  renderer_dir = renderer_dir or made_by or ""
  d = config.to_dict()
  if not d["dataset_params"].get("root_dir"):
    d["dataset_params"]["root_dir"] = manifest.get("root", "")
  wanted = str(d["audio2head_params"]["pitch_tracker"])
  have = str(tools.get("pitch", ""))
  if wanted == "auto":
    d["audio2head_params"]["pitch_tracker"] = have
  elif wanted != have:
    raise ConfigError(
        f"audio2head_params.pitch_tracker is {wanted!r} but {prepared_path} was "
        f"prepared with {have!r}: a model must be trained on the speech "
        f"features it will read (prepare again with --pitch {wanted}, or set "
        f"the config's tracker to {have!r})")
  config = config_lib.from_dict(d)

  renderer: dict[str, Any] = {}
  if renderer_dir:
    try:
      r_config, renderer = load_renderer(renderer_dir)
    except DataError as e:
      raise DataError(f"renderer {renderer_dir} (train_params.renderer, or the "
                      f"model {prepared_path} was prepared with): {e}") from e
    config = adopt_renderer(config, r_config)
    notes.append(f"renderer: {renderer_dir} ({config.model_params.model}, "
                 f"{config.model_params.common_params.num_kp} keypoints, "
                 f"frames {list(config.dataset_params.frame_shape)}); its "
                 "model_params replace the config's")
    if made_by and stage.needs_keypoints:
      mine, theirs = _model_sha(renderer_dir, r_config), tools["model"].get(
          "model_params_sha")
      if mine != theirs:
        raise ConfigError(
            f"the keypoints in {prepared_path} come from {made_by} (model_params "
            f"hash {theirs}), but the renderer {renderer_dir} has other "
            f"model_params (hash {mine}): {stage.network} must learn its own "
            "renderer's keypoints")
  else:
    notes.append("no renderer (train_params.renderer is empty and the data "
                 "were prepared without --model): model/ holds the speech "
                 "networks only")

  speech: dict[str, Any] = {}
  if tp.speech_model:
    other = "audio2kp" if stage.network == "audio2pose" else "audio2pose"
    _, theirs = checkpoints.load_model(checkpoints.resolve_model_dir(
        str(tp.speech_model)), required=(other,))
    checkpoints.verify_variables({other: theirs[other]},
                                 build_lib.build_models(config),
                                 source=str(tp.speech_model), required=(other,))
    speech[other] = theirs[other]
    notes.append(f"{other}: from {tp.speech_model} (copied into model/)")
  return Inputs(config=config, prepared_dir=prepared_path, manifest=manifest,
                renderer=renderer, renderer_dir=renderer_dir, speech=speech,
                notes=notes)


def check_keypoints(config, av_split) -> None:
  """audio2kp's ``num_kp`` against the prepared files' K."""
  if not av_split.has_kp:
    raise ConfigError(f"{av_split.reference} has no kp_value/kp_jacobian: "
                      "prepare with --model RENDERER for audio2kp")
  k = prepared_kp_count(av_split)
  want = int(config.audio2head_params.audio2kp.num_kp)
  if k != want:
    raise ConfigError(
        f"audio2head_params.audio2kp.num_kp is {want} but the prepared "
        f"keypoints ({av_split.reference}) have K = {k}: set it to {k} (the "
        "renderer's keypoint count)")


# --------------------------------------------------------------------------
# Data

def make_dataset(config, prepared_dir, stage: Stage, *, batch_size: int,
                 av_split=None, seed: int | None = None):
  """Per-host batches of the stage's windows (an endless Grain iterable)."""
  from dagan_jax.input import av_windows, pipeline  # pylint: disable=import-outside-toplevel
  tp = config.train_params
  ds = av_windows.build_av_window_dataset(
      config.dataset_params, prepared_dir, split="train",
      seed=int(config.seed if seed is None else seed), window=stage.window(config),
      skip_bad=bool(tp.skip_bad_data), av_split=av_split)
  ds = ds.map(stage.records)
  # The batching and prefetching every pipeline of dagan_jax.input ends with.
  finish = pipeline._finish  # pylint: disable=protected-access
  return finish(ds, batch_size, int(tp.num_workers), None, True)


# --------------------------------------------------------------------------
# Export

def export_model(config, task: SpeechTask, state: SpeechState, inputs: Inputs,
                 workdir: pathlib.Path) -> pathlib.Path:
  """``WORKDIR/model``: the renderer's networks, the other speech network
  (``speech_model``) and this one's, with this run's config."""
  host = parallel.to_host(state)
  variables = dict(inputs.renderer)
  variables.update(inputs.speech)
  variables[task.network] = {"params": host.params,
                             "batch_stats": host.batch_stats}
  missing = [n for n in build_lib.AUDIO_NETWORKS if n not in variables]
  return checkpoints.save_model(
      workdir / "model", variables, config, overwrite=True,
      info={"step": int(host.step), "trainer": task.network,
            "renderer": inputs.renderer_dir or None,
            "speech_networks_missing": missing})


# --------------------------------------------------------------------------
# The program

def train(config, workdir: str | pathlib.Path, stage: Stage, *,
          max_steps: int | None = None, progress: bool = True
          ) -> dict[str, Any]:
  """Trains ``stage``'s network in ``workdir`` (resumable; module docstring)."""
  from dagan_jax.input import av_windows  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import clips as clips_lib  # pylint: disable=import-outside-toplevel

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.trainer != stage.network:
    raise ConfigError(f"config.trainer is {config.trainer!r}; this trainer "
                      f"trains {stage.network!r}")
  inputs = resolve_inputs(config, workdir, stage, progress=progress)
  config = inputs.config
  tp = config.train_params
  seed = int(config.seed)

  # Plan: mesh, batches, steps.
  mesh = parallel.make_mesh()
  global_bs = int(tp.batch_size)
  host_bs = parallel.per_host_batch_size(global_bs, mesh)
  av_split = av_windows.open_av_split(
      config.dataset_params, inputs.prepared_dir, "train",
      window=stage.window(config), skip_bad=bool(tp.skip_bad_data))
  if stage.needs_keypoints:
    check_keypoints(config, av_split)
  groups = clips_lib.group_clips(av_split.clips,
                                 bool(config.dataset_params.id_sampling))
  steps_per_epoch = max(len(groups) * int(tp.num_repeats) // global_bs, 1)
  total_steps = int(tp.max_steps or 0) or int(tp.num_epochs) * steps_per_epoch
  if max_steps is not None:
    total_steps = int(max_steps)
  plan = setup.RunPlan(mesh=mesh, global_batch_size=global_bs,
                       host_batch_size=host_bs, split_data=av_split,
                       steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                       skip_bad=bool(tp.skip_bad_data))
  data_iter = iter(make_dataset(config, inputs.prepared_dir, stage,
                                batch_size=host_bs, av_split=av_split))

  models = build_lib.build_models(config)
  task = stage.make_task(config, models, steps_per_epoch)
  state = parallel.replicate(init_state(task, jax.random.key(seed)), mesh)
  run = setup.open_run(workdir, config, plan, state, data_iter,
                       progress=progress, description=config.name or stage.network)
  state, start, ckpt, monitor = run.state, run.start, run.ckpt, run.monitor
  notes = inputs.notes + list(run.notes) + [
      f"{stage.network}: windows of {stage.window(config)} frames from "
      f"{len(av_split.clips)} prepared clips in {inputs.prepared_dir} "
      f"({len(groups)} {'persons' if config.dataset_params.id_sampling else 'clips'}"
      f"); devices: {mesh.devices.size} ({jax.devices()[0].platform}); global "
      f"batch {global_bs}; {steps_per_epoch} steps/epoch; {total_steps} steps"]
  for line in notes:
    log.info(line)
    monitor.write(line)
  step_fn = make_train_step(task, mesh)

  image_every = int(tp.image_every or 0)
  at = Progress(step=start, skipped=run.skipped)
  vis: dict[str, np.ndarray] = {}
  lagged = LaggedMetrics(
      monitor, ckpt, total_steps=total_steps, log_every=int(tp.log_every),
      progress_keys=stage.progress_keys,
      extra=lambda done: {"skipped_clips": at.skipped,
                          "steps_per_second": monitor.steps_per_second(done)})

  def after_step(step, state):
    if image_every and (step % image_every == 0 or step == 1):
      monitor.image(step, f"{stage.network}/samples",
                    stage.pictures(task, state, vis))

  state = run_steps(
      state, at, step_fn=lambda s, b, k: step_fn(s, b), data_iter=data_iter,
      mesh=mesh, base_key=jax.random.key(seed + 1), total_steps=total_steps,
      ckpt=ckpt, ckpt_every=max(int(tp.checkpoint_every), 1), lagged=lagged,
      monitor=monitor,
      checkpoint_meta=lambda skipped: {"trainer": stage.network,
                                       "skipped": skipped,
                                       "config": config_lib.to_yaml(config)},
      first_batch=lambda local: vis.update(
          {k: np.asarray(v)[:min(2, host_bs)] for k, v in local.items()}),
      after_step=after_step)
  summary: dict[str, Any] = {"notes": notes}
  if at.signal:
    summary["stopped_by_signal"] = at.signal
  model_dir = export_model(config, task, state, inputs, workdir)
  elapsed = at.seconds
  summary.update({"step": at.step, "metrics": lagged.last,
                  "skipped_clips": at.skipped, "seconds": elapsed,
                  "model_dir": str(model_dir), "config": config,
                  "steps_per_second": (at.step - start) / elapsed if elapsed else 0.0})
  missing = [n for n in build_lib.AUDIO_NETWORKS
             if n != stage.network and n not in inputs.speech]
  monitor.write(f"done: step {at.step}, {summary['steps_per_second']:.3g} "
                f"steps/s; model written to {model_dir}"
                + (f" (without {missing[0]}: set train_params.speech_model to "
                   "its run for a model `dagan-jax speak` can use)"
                   if missing else ""))
  monitor.close()
  ckpt.close()
  return summary
