"""Helpers for the input-pipeline tests (synthetic clips, parameters)."""

from __future__ import annotations

import pathlib

import numpy as np

VOX_FOLDER_CLIP = "id10003#lp_d10#000000#000120.mp4"   # a folder of PNG frames
VOX_FILE_CLIP = "id10003#lp_d10#000120#000240.mp4"     # an mp4 file
VOX_OTHER_CLIP = "id10002#lp_d0#000000#000078.mp4"     # 78 frames, mp4

def solid_frame(value: int, size=(16, 16)) -> np.ndarray:
  return np.full(tuple(size) + (3,), value, np.uint8)


def make_folder_clip(path: pathlib.Path, values, size=(16, 16), digits=7,
                     ext=".png") -> pathlib.Path:
  """A frame folder whose frame ``i`` is solid grey ``values[i]``."""
  import cv2
  path.mkdir(parents=True, exist_ok=True)
  for i, v in enumerate(values):
    cv2.imwrite(str(path / f"{i:0{digits}d}{ext}"), solid_frame(v, size))
  return path


def params_for(root, cache_dir, **kw) -> dict:
  from dagan_jax.input import pipeline
  p = pipeline.dataset_params_for(root, kw.pop("layout", "vox"),
                                  cache_dir=str(cache_dir))
  p.update(kw)
  return p


NO_AUG = {"flip_param": {"horizontal_flip": False, "time_flip": False},
          "jitter_param": {}}
