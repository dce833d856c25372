"""Tiny talking-head / depth configs on vox_mini for trainer tests (32x32)."""

from __future__ import annotations

import jax

from dagan_jax import config as config_lib
from dagan_jax.input import pipeline
from dagan_jax.models import build as build_lib
from dagan_jax.models.vgg import VGGFeatures
from dagan_jax.training import parallel
from dagan_jax.training import talking_head as th


def tiny_dict(root: str, *, trainer: str = "talking_head") -> dict:
  d = config_lib.toy_model(config_lib.depth_config() if trainer == "depth"
                           else config_lib.talking_head_config(), frame=32)
  d["name"] = "tiny"
  d["dataset_params"]["root_dir"] = root
  tp = d["train_params"]
  if trainer == "depth":
    tp.update({"batch_size": 4, "num_epochs": 1, "num_repeats": 4,
               "log_every": 1, "checkpoint_every": 2, "image_every": 0})
  else:
    tp.update({"batch_size": 4, "num_epochs": 1, "num_repeats": 4,
               "perceptual_backbone": "vgg16", "scales": [1, 0.5],
               "log_every": 1, "checkpoint_every": 2, "image_every": 0,
               "eval_every": 0})
  return d


def tiny_config(root: str, *, trainer: str = "talking_head", overrides=()):
  return config_lib.apply_overrides(
      config_lib.from_dict(tiny_dict(root, trainer=trainer)), overrides)


def fixed_batch(cfg, batch_size=4, process_index=None, process_count=None):
  ds = pipeline.make_pair_dataset(cfg.dataset_params, split="train", seed=3,
                                  batch_size=batch_size, num_repeats=1,
                                  process_index=process_index,
                                  process_count=process_count)
  batch = next(iter(ds))
  batch.pop("skipped")
  return batch


def run_steps(cfg, devices, batch, num_steps=2, keys=None):
  """Runs the real train step on ``devices`` from the trainer's initial state.

  ``batch`` is one batch used every step, or a list with one per step;
  ``keys`` the step keys (default ``key(10 + i)``).
  """
  mesh = parallel.make_mesh(devices)
  task = th.make_task(cfg, global_batch_size=4, steps_per_epoch=10,
                      vgg=VGGFeatures(arch="vgg16"))
  frozen, _ = th.load_frozen(cfg, task)
  variables = build_lib.init_variables(task.models, jax.random.key(0),
                                       names=th.TRAINED)
  state = parallel.replicate(th.create_train_state(task, variables), mesh)
  frozen = parallel.replicate(frozen, mesh)
  step = th.make_train_step(task, mesh)
  batches = batch if isinstance(batch, list) else [batch] * num_steps
  keys = keys or [jax.random.key(10 + i) for i in range(len(batches))]
  metrics, states = [], []
  for b, k in zip(batches, keys):
    state, m = step(state, parallel.global_batch(b, mesh), frozen, k)
    metrics.append(parallel.to_host(m))
    states.append(parallel.to_host(state))
  return metrics, states
