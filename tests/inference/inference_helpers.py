"""A tiny DaGAN (32x32 frames, 4 keypoints) saved as a model directory, and
small clips, for the inference / evaluation / demo tests."""

from __future__ import annotations

import pathlib

import numpy as np

from dagan_jax import config as config_lib

FRAME = 32


def tiny_dict(root: str = "") -> dict:
  """The talking-head config at toy widths (shapes as tests/training's)."""
  d = config_lib.toy_model(config_lib.talking_head_config(), frame=FRAME)
  d["name"] = "tiny"
  d["dataset_params"]["root_dir"] = root
  tp = d["train_params"]
  tp.update({"batch_size": 2, "num_epochs": 1, "num_repeats": 2,
             "perceptual_backbone": "vgg16", "scales": [1, 0.5],
             "log_every": 1, "checkpoint_every": 2, "image_every": 0,
             "eval_every": 0, "eval_num_videos": 2, "eval_num_frames": 2})
  return d


def tiny_config(root: str = ""):
  return config_lib.from_dict(tiny_dict(root))


def save_tiny_model(directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """Random weights (PyTorch's default init) of the networks animation needs,
  written with checkpoints.save_model."""
  import jax

  from dagan_jax import checkpoints
  from dagan_jax.models.build import build_models, init_variables

  cfg = tiny_config()
  models = build_models(cfg)
  variables = init_variables(models, jax.random.key(seed),
                             names=checkpoints.INFERENCE_NETWORKS)
  return checkpoints.save_model(directory, variables, cfg)


def face_clip(seed: int, num_frames: int, size: int = FRAME) -> np.ndarray:
  """A smooth synthetic "face" clip (T, size, size, 3) float32 in [0, 1]:
  a bright ellipse with two dark eyes that drift and blink, on a gradient."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
  base = rng.uniform(0.2, 0.8, 3)
  frames = []
  for t in range(num_frames):
    cx, cy = 0.15 * np.sin(0.7 * t + seed), 0.1 * np.cos(0.5 * t + seed)
    face = ((xx - cx) / 0.55) ** 2 + ((yy - cy) / 0.7) ** 2 < 1
    img = np.empty((size, size, 3), np.float32)
    for c in range(3):
      img[..., c] = base[c] * (0.6 + 0.4 * (xx + 1) / 2)
    img[face] = [0.9, 0.75, 0.6]
    for ex in (-0.22, 0.22):
      eye = ((xx - cx - ex) / 0.1) ** 2 + ((yy - cy + 0.2) / (0.08 if t % 3 else 0.02)) ** 2 < 1
      img[eye] = [0.1, 0.1, 0.15]
    frames.append(img)
  return np.clip(np.stack(frames), 0, 1)
