"""What the talking-head trainer measures and shows while it trains.

* :func:`reconstruction_l1`: FOMM's reconstruction protocol on held-out test
  clips (first frame as source, later frames as driving, *absolute*
  keypoints), the mean L1 of the generated frames, next to the L1 of simply
  copying the source frame (the baseline a model must beat).
* :func:`sample_grid`: an image grid of a few training samples (source and
  driving with keypoints, source depth, occlusion map, deformed source,
  prediction) for TensorBoard.

Both run the networks in eval mode (BatchNorm running statistics) with one
compiled function per shape, cached per task.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from dagan_jax import compute, visualize
from dagan_jax.models import build as build_lib

_CACHE: dict[tuple[int, str], Any] = {}


def _variables(task, state, frozen) -> dict[str, Any]:
  out = state.variables()
  if "depth" in frozen:
    out.update(frozen["depth"])
  return out


def _forward(task):
  """jitted (variables, source (B,H,W,3), driving (B,H,W,3)) -> outputs."""
  key = (id(task), "forward")
  if key not in _CACHE:
    models = task.models

    def fwd(variables, source, driving):
      d_src = d_drv = None
      if task.use_depth_network and "depth_encoder" in variables:
        d_src = build_lib.depth_fn(models, variables, source)
        d_drv = build_lib.depth_fn(models, variables, driving)
      kp_src = build_lib.keypoints_fn(models, variables, source, d_src)
      kp_drv = build_lib.keypoints_fn(models, variables, driving, d_drv)
      out = build_lib.generate_fn(models, variables, source, kp_src, kp_drv,
                                  d_src, d_drv)
      out = {k: out[k] for k in ("prediction", "deformed", "occlusion_map")
             if k in out}
      out["kp_source"], out["kp_driving"] = kp_src["value"], kp_drv["value"]
      if d_src is not None:
        out["depth_source"] = d_src
      return out

    # The networks in eval mode, prepared for inference (compute.use).
    _CACHE[key] = compute.jit(fwd, kernels=task.kernels, inference=True)
  return _CACHE[key]


def sample_grid(task, state, frozen, batch: Mapping[str, np.ndarray]) -> np.ndarray:
  """One row per sample: source+kp, driving+kp, depth, occlusion, deformed,
  prediction."""
  out = jax.device_get(_forward(task)(_variables(task, state, frozen),
                                      batch["source"], batch["driving"]))
  rows = []
  for i in range(batch["source"].shape[0]):
    row = [visualize.draw_keypoints(batch["source"][i], out["kp_source"][i]),
           visualize.draw_keypoints(batch["driving"][i], out["kp_driving"][i])]
    if "depth_source" in out:
      row.append(out["depth_source"][i])
    if "occlusion_map" in out:
      row.append(np.repeat(out["occlusion_map"][i], 3, axis=-1))
    row += [out["deformed"][i], out["prediction"][i]]
    rows.append(row)
  return visualize.grid(rows)


def _model_frames(frames, name: str, dataset_params) -> np.ndarray:
  """Test frames at the training frame size, exactly as the training input
  pipeline prepares them (resized only when ``resize_frames``; otherwise a
  size mismatch is a DataError naming the clip)."""
  from dagan_jax.input.samplers import check_frame  # pylint: disable=import-outside-toplevel
  hw = tuple(int(v) for v in dataset_params.frame_shape[:2])
  resize = bool(dataset_params["resize_frames"])
  out = []
  for i, f in enumerate(frames):
    u8 = np.clip(np.asarray(f, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out.append(check_frame(u8, f"test clip {name} frame {i}", hw, resize))
  return np.stack(out).astype(np.float32) / 255.0


def reconstruction_l1(config, task, state, frozen, *, num_videos: int | None = None,
                      num_frames: int | None = None, batch_size: int = 4
                      ) -> dict[str, float]:
  """Mean L1 of reconstructed test frames vs. the copy-the-source baseline.

  Uses ``train_params.eval_num_videos`` clips of the test split (default 8)
  and ``eval_num_frames`` evenly spaced driving frames of each (default 16).
  """
  from dagan_jax.input import pipeline  # pylint: disable=import-outside-toplevel
  tp = config.train_params
  num_videos = num_videos or int(tp.eval_num_videos or 8)
  num_frames = num_frames or int(tp.eval_num_frames or 16)
  dp = config.dataset_params
  fwd = _forward(task)
  variables = _variables(task, state, frozen)
  l1s, copy_l1s = [], []
  for name, clip in pipeline.reconstruction_videos(
      dp.root_dir, "test", layout=dp.layout,
      cache_dir=dp.cache_dir or None, limit=num_videos):
    n = len(clip)
    idx = np.unique(np.linspace(0, n - 1, min(num_frames, n)).astype(int))
    frames = _model_frames(clip.read([0] + [int(i) for i in idx]), name, dp)
    source, driving = frames[:1], frames[1:]
    for start in range(0, len(driving), batch_size):
      chunk = driving[start:start + batch_size]
      pad = batch_size - len(chunk)
      drv = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk
      src = np.repeat(source, batch_size, 0)
      pred = np.asarray(fwd(variables, src, drv)["prediction"])[:len(chunk)]
      l1s.append(np.abs(pred - chunk).mean(axis=(1, 2, 3)))
      copy_l1s.append(np.abs(source - chunk).mean(axis=(1, 2, 3)))
  if not l1s:
    return {}
  return {"reconstruction_l1": float(np.concatenate(l1s).mean()),
          "copy_source_l1": float(np.concatenate(copy_l1s).mean())}
