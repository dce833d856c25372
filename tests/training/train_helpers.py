"""Tiny talking-head / depth configs on vox_mini for trainer tests (32x32)."""

from __future__ import annotations

from dagan_jax import config as config_lib


def tiny_dict(root: str, *, trainer: str = "talking_head") -> dict:
  d = config_lib.depth_config() if trainer == "depth" else config_lib.talking_head_config()
  d["name"] = "tiny"
  d["dataset_params"].update({"root_dir": root, "frame_shape": [32, 32, 3],
                              "resize_frames": True})
  mp = d["model_params"]
  mp["common_params"]["num_kp"] = 4
  mp["kp_detector_params"].update({"block_expansion": 4, "max_features": 16,
                                   "num_blocks": 3, "scale_factor": 0.5})
  mp["generator_params"].update({
      "block_expansion": 4, "max_features": 16, "num_down_blocks": 2,
      "num_bottleneck_blocks": 1,
      "dense_motion_params": {"block_expansion": 4, "max_features": 16,
                              "num_blocks": 3, "scale_factor": 0.5}})
  mp["discriminator_params"].update({"block_expansion": 4, "max_features": 16,
                                     "num_blocks": 3})
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
