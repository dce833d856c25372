"""Training the face depth network, self-supervised (DaGAN Sec. 3.1; DaGAN++
Sec. 3.2), from a config with ``trainer: 'depth'``.

The Face-Depth-Network / monodepth2 recipe, one compiled data-parallel step:

* frames (t-1, t, t+1) of a clip; the target is frame t, the sources t-1 and
  t+1 (``frame_ids [0, -1, 1]``). The networks see the colour-jittered
  frames (``frames_aug``); the losses use the raw ones, as monodepth2.
* depth: ``disp`` at the decoder scales from the target (Eq. 1);
* pose (Eq. 2): for each source, the pose network on the pair in temporal
  order predicts axis-angle + translation and the intrinsics K (learned per
  pair); the transform is inverted for the earlier frame (monodepth2);
* view synthesis (Eq. 3-4): each scale's disparity is upsampled to full
  resolution, turned into depth (``disp_to_depth``), back-projected with
  K^-1, moved by [R|t], projected with K, and the source sampled there
  (bilinear, border padding);
* losses (Eq. 5-7): SSIM+L1 photometric error, per-pixel minimum over the
  sources, auto-masking of stationary pixels, edge-aware smoothness of the
  mean-normalised disparity (weight halved per scale), averaged over scales;
  DaGAN++ (``depth_params.uncertainty``) weights the photometric error by
  the uncertainty map U of the pose network's third head and adds log U.

BatchNorm in the ResNet encoders is synchronised over the ``data`` axis.
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
from dagan_jax.errors import ConfigError
from dagan_jax.losses import depth as depth_losses
from dagan_jax.models import build as build_lib
from dagan_jax.models import layers
from dagan_jax.training import optim, parallel, setup
from dagan_jax.training.loop import (STOP_KEY, LaggedMetrics, Progress, run_steps,
                                     stop_signal)

log = logging.getLogger(__name__)
Array = jax.Array

DEPTH_NETS = ("depth_encoder", "depth_decoder")


@flax.struct.dataclass
class DepthState:
  step: Array
  params: dict[str, Any]        # depth_encoder, depth_decoder, pose
  batch_stats: dict[str, Any]
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class DepthTask:
  models: build_lib.Models
  pose: Any                      # a module: pair (B,H,W,6) -> pose dict
  optimizer: optax.GradientTransformation
  scales: tuple[int, ...]
  min_depth: float
  max_depth: float
  ssim_alpha: float
  ssim_halved: bool
  automask: bool
  uncertainty: bool
  loss_weights: Mapping[str, float]
  compute_dtype: Any
  kernels: str = "auto"            # compute.kernels of the step


class PosePair(flax.linen.Module):
  """DaGAN's pose network as one module: ``pose_encoder`` + ``pose_decoder``."""
  num_layers: int
  image_size: tuple[int, int]

  @flax.linen.compact
  def __call__(self, pair: Array) -> dict[str, Array]:
    from dagan_jax.models.depth import num_ch_enc  # pylint: disable=import-outside-toplevel
    from dagan_jax.models.pose import PoseDecoder, PoseEncoder  # pylint: disable=import-outside-toplevel
    feats = PoseEncoder(self.num_layers, name="pose_encoder")(pair)
    return PoseDecoder(num_ch_enc(self.num_layers), 1, 2,
                       image_size=self.image_size, name="pose_decoder")([feats])


def make_task(config, steps_per_epoch: int) -> DepthTask:
  tp = config.train_params
  dp = config.model_params.depth_params
  models = build_lib.build_models(config)
  h, w = (int(v) for v in config.dataset_params.frame_shape[:2])
  if bool(dp.uncertainty):
    from dagan_jax.models.uncertainty import UncertaintyPoseNetwork  # pylint: disable=import-outside-toplevel
    pose = UncertaintyPoseNetwork(num_layers=int(dp.num_layers), image_size=(h, w))
  else:
    pose = PosePair(int(dp.num_layers), (h, w))
  scales = tuple(int(s) for s in tp.scales)
  missing = sorted(set(scales) - set(int(s) for s in dp.scales))
  if missing:
    raise ConfigError(f"train_params.scales {list(scales)} uses decoder scales "
                      f"{missing} that model_params.depth_params.scales lacks")
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(
      str(tp.compute_dtype))
  if dtype is None:
    raise ConfigError(f"train_params.compute_dtype is {tp.compute_dtype!r}")
  return DepthTask(
      models=models, pose=pose,
      optimizer=optim.depth_optimizer(tp, steps_per_epoch), scales=scales,
      min_depth=float(tp.min_depth), max_depth=float(tp.max_depth),
      ssim_alpha=float(tp.ssim_alpha),
      ssim_halved=bool(tp.ssim_halved),
      automask=bool(tp.automask),
      uncertainty=bool(dp.uncertainty),
      loss_weights=dict(tp.loss_weights), compute_dtype=dtype,
      kernels=str(config.compute.kernels))


def init_state(task: DepthTask, key: Array, frame_shape) -> DepthState:
  h, w = frame_shape[:2]
  k1, k2 = jax.random.split(key)
  variables = build_lib.init_variables(task.models, k1, names=DEPTH_NETS)
  pose_vars = jax.jit(task.pose.init)({"params": k2},
                                      jnp.zeros((1, h, w, 6), jnp.float32))
  params = {n: variables[n]["params"] for n in DEPTH_NETS}
  params["pose"] = pose_vars["params"]
  stats = {n: variables[n]["batch_stats"] for n in DEPTH_NETS
           if "batch_stats" in variables[n]}
  if "batch_stats" in pose_vars:
    stats["pose"] = pose_vars["batch_stats"]
  return DepthState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=stats, opt_state=task.optimizer.init(params))


def _vars(params, stats, name):
  out = {"params": params[name]}
  if name in stats:
    out["batch_stats"] = stats[name]
  return out


def _intrinsics4(k: Array) -> Array:
  """(B, 3, 3) -> (B, 4, 4) homogeneous intrinsics."""
  b = k.shape[0]
  out = jnp.tile(jnp.eye(4, dtype=k.dtype), (b, 1, 1))
  return out.at[:, :3, :3].set(k)


def depth_loss_fn(params, state: DepthState, batch: Mapping[str, Array],
                  key: Array, task: DepthTask):
  """Total loss and (terms, new batch stats, outputs for pictures)."""
  models = task.models
  frames = batch["frames"]                  # (B, 3, H, W, 3): t-1, t, t+1
  aug = batch.get("frames_aug", frames)
  b, _, h, w, _ = frames.shape
  target, sources = frames[:, 1], jnp.stack([frames[:, 0], frames[:, 2]])
  stats = dict(state.batch_stats)

  def apply(name, module, *args):
    v = _vars(params, stats, name)
    if "batch_stats" in v:
      out, upd = module.apply(v, *args, mutable=["batch_stats"])
      stats[name] = upd["batch_stats"]
      return out
    return module.apply(v, *args)

  feats = apply("depth_encoder", models.depth_encoder, aug[:, 1])
  disps = apply("depth_decoder", models.depth_decoder, feats)

  # Pose of each source relative to the target, pairs in temporal order.
  warps = []
  uncert = []
  for s, (first, second, invert) in enumerate(((aug[:, 0], aug[:, 1], True),
                                               (aug[:, 1], aug[:, 2], False))):
    pose = apply("pose", task.pose, jnp.concatenate([first, second], axis=-1))
    t_mat = ops.transformation_from_parameters(
        pose["axisangle"][:, 0, 0], pose["translation"][:, 0, 0], invert=invert)
    warps.append((t_mat, _intrinsics4(pose["K"])))
    if task.uncertainty:
      uncert.append(pose["uncertainty"])
  u = jnp.stack(uncert) if task.uncertainty else None   # (S, B, H, W, 1)

  total = jnp.zeros((), jnp.float32)
  terms_sum: dict[str, Array] = {}
  keys = jax.random.split(key, len(task.scales))
  picture = {}
  for scale, k in zip(task.scales, keys):
    disp = disps[f"disp{scale}"]
    disp_full = disp if disp.shape[1:3] == (h, w) else ops.resize_bilinear(disp, (h, w))
    _, depth = ops.disp_to_depth(disp_full, task.min_depth, task.max_depth)
    warped = jnp.stack([ops.inverse_warp(src, depth, t_mat, k_mat)[0]
                        for src, (t_mat, k_mat) in zip(sources, warps)])
    color = target if disp.shape[1:3] == (h, w) else jax.image.resize(
        target, (b, *disp.shape[1:3], 3), "bilinear", antialias=True)
    terms, aux = depth_losses.depth_losses(
        target, warped, sources, disp, color, uncertainty=u,
        key=k if task.automask else None, use_automask=task.automask,
        alpha=task.ssim_alpha, ssim_halved=task.ssim_halved)
    weighted = depth_losses.weighted_depth_terms(terms, task.loss_weights, scale)
    total = total + sum(weighted.values())
    for name, v in weighted.items():
      terms_sum[name] = terms_sum.get(name, 0.0) + v / len(task.scales)
    if scale == 0:
      terms_sum["automask_fraction"] = jax.lax.stop_gradient(aux["automask_fraction"])
      picture = {"disp": disp_full, "warped": warped[1]}
      if u is not None:
        picture["uncertainty"] = u[1]
  total = total / len(task.scales)
  return total, (terms_sum, stats, picture)


def per_device_step(state: DepthState, batch, key, *, task: DepthTask,
                    axis_name: str | None = parallel.DATA_AXIS):
  def pmean(x):
    return jax.lax.pmean(x, axis_name) if axis_name else x

  with layers.sync_batch_norm(axis_name):
    (total, (terms, stats, _)), grads = jax.value_and_grad(
        depth_loss_fn, has_aux=True)(state.params, state, batch, key, task)
  grads = pmean(grads)
  updates, opt_state = task.optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = compute.global_norm(grads)
  metrics = pmean({**terms, "total": total, "grad_norm": grad_norm})
  metrics[STOP_KEY] = stop_signal(batch, axis_name)
  ok = pmean(jnp.all(jnp.stack([jnp.isfinite(total), jnp.isfinite(grad_norm)]))
             .astype(jnp.float32)) == 1.0
  new = DepthState(step=state.step + 1, params=params, batch_stats=stats,
                   opt_state=opt_state)
  new = jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, state)
  metrics["finite"] = ok.astype(jnp.float32)
  return new, metrics


def make_train_step(task: DepthTask, mesh) -> Callable:
  sharded = jax.shard_map(
      functools.partial(per_device_step, task=task), mesh=mesh,
      in_specs=(P(), P(parallel.DATA_AXIS), P()), out_specs=(P(), P()),
      # pmap semantics: per-device gradients, reduced by the explicit pmean
      # (with check_vma, gradients of replicated params would be psum-ed
      # implicitly and the pmean would leave them N times too large).
      check_vma=False)
  return compute.jit(sharded, kernels=task.kernels, donate_argnums=(0,))


_PICTURE_FNS: dict[int, Callable] = {}


def depth_pictures(task: DepthTask, state: DepthState, batch) -> np.ndarray:
  """Target, disparity, source warped to the target, [uncertainty] rows."""
  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  if id(task) not in _PICTURE_FNS:
    _PICTURE_FNS[id(task)] = jax.jit(
        lambda p, s, bt: depth_loss_fn(p, s, bt, jax.random.key(0), task)[1][2])
  pic = jax.device_get(_PICTURE_FNS[id(task)](state.params, state, batch))
  rows = []
  for i in range(batch["frames"].shape[0]):
    row = [batch["frames"][i, 1], pic["disp"][i], pic["warped"][i]]
    if "uncertainty" in pic:
      row.append(pic["uncertainty"][i])
    rows.append(row)
  return visualize.grid(rows)


def export_model(config, task: DepthTask, state: DepthState,
                 workdir: pathlib.Path) -> pathlib.Path:
  """``workdir/model``: depth encoder/decoder and the pose encoder/decoder.

  DaGAN++'s uncertainty head is needed only to continue depth training; it
  stays in the training checkpoints (``workdir/checkpoints``).
  """
  host = parallel.to_host(state)
  variables = {n: _vars(host.params, host.batch_stats, n) for n in DEPTH_NETS}
  pose_vars = _vars(host.params, host.batch_stats, "pose")
  for name in ("pose_encoder", "pose_decoder"):
    variables[name] = {col: tree[name] for col, tree in pose_vars.items()
                       if name in tree}
  return checkpoints.save_model(
      workdir / "model", variables, config, overwrite=True,
      info={"step": int(host.step), "trainer": "depth",
            "uncertainty_head": "in checkpoints/ only" if task.uncertainty
            else "none"})


def train_and_evaluate(config, workdir: str | pathlib.Path, *,
                       max_steps: int | None = None,
                       progress: bool = True) -> dict[str, Any]:
  """Trains the face depth network of ``config`` in ``workdir`` (resumable)."""
  from dagan_jax.input import pipeline  # pylint: disable=import-outside-toplevel

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tp = config.train_params
  seed = int(config.seed)
  # Frame triplets: a clip needs 3 frames.
  plan = setup.plan_run(config, max_steps=max_steps, min_frames=3)
  mesh, global_bs, host_bs = plan.mesh, plan.global_batch_size, plan.host_batch_size
  total_steps = plan.total_steps
  dataset = pipeline.make_depth_dataset(
      config.dataset_params, split="train", seed=seed, batch_size=host_bs,
      num_repeats=int(tp.num_repeats),
      num_workers=int(tp.num_workers), skip_bad=plan.skip_bad,
      split_data=plan.split_data)
  data_iter = iter(dataset)

  task = make_task(config, plan.steps_per_epoch)
  state = init_state(task, jax.random.key(seed), config.dataset_params.frame_shape)
  state = parallel.replicate(state, mesh)
  run = setup.open_run(workdir, config, plan, state, data_iter,
                       progress=progress, description=config.name or "depth")
  state, start, ckpt, monitor = run.state, run.start, run.ckpt, run.monitor
  notes = list(run.notes)
  step_fn = make_train_step(task, mesh)
  notes.append(f"face depth network ({'DaGAN++ uncertainty-aware' if task.uncertainty else 'DaGAN'}), "
               f"ResNet-{config.model_params.depth_params.num_layers}; devices: "
               f"{mesh.devices.size}; global batch {global_bs}; {total_steps} steps")
  for line in notes:
    log.info(line)
    monitor.write(line)

  base_key = jax.random.key(seed + 1)
  log_every = max(int(tp.log_every), 1)
  ckpt_every = max(int(tp.checkpoint_every), 1)
  image_every = int(tp.image_every or 0)
  at = Progress(step=start, skipped=run.skipped)
  vis = {}

  lagged = LaggedMetrics(monitor, ckpt, total_steps=total_steps,
                         log_every=log_every, progress_keys={"loss": "total"},
                         extra=lambda done: {"skipped_clips": at.skipped})

  def after_step(step, state):
    if image_every and (step % image_every == 0 or step == 1):
      monitor.image(step, "depth/samples", depth_pictures(task, state, vis))

  state = run_steps(
      state, at, step_fn=step_fn, data_iter=data_iter, mesh=mesh,
      base_key=base_key, total_steps=total_steps, ckpt=ckpt,
      ckpt_every=ckpt_every, lagged=lagged, monitor=monitor,
      checkpoint_meta=lambda skipped: {"trainer": "depth", "skipped": skipped},
      first_batch=lambda local: vis.update(
          {k: np.asarray(v)[:min(2, host_bs)] for k, v in local.items()}),
      after_step=after_step)
  step, skipped, elapsed = at.step, at.skipped, at.seconds
  model_dir = export_model(config, task, state, workdir)
  monitor.write(f"done: step {step}; depth model written to {model_dir}")
  monitor.close()
  ckpt.close()
  return {"step": step, "metrics": lagged.last, "skipped_clips": skipped,
          "seconds": elapsed, "model_dir": str(model_dir),
          "steps_per_second": (step - start) / elapsed if elapsed else 0.0}
