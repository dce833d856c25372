"""Builds the canonical head of :mod:`dagan_jax.face.pose` from our clips.

``python -m dagan_jax.input.head_template CLIP_OR_FOLDER... [--every N] [--out F]``

1. Mesh every N-th frame of every clip (:mod:`dagan_jax.face.mesh`); the
   mesh's (x, y, z) is an orthographic-ish 3D shape in pixels.
2. Generalised Procrustes: centre and scale each shape to unit RMS, rotate
   it onto the current mean (Kabsch), average, repeat until the mean stops
   moving. Expression and pose average out over many frames and people.
3. Turn the mean to face the camera: x from the right eye's outer corner
   (33) to the left's (263), y from forehead (10) towards chin (152) made
   orthogonal to x, z = x cross y (away from the camera); centre it on its
   centroid and scale it so points 234 and 454 are 140 units apart.

The shipped file was built from the 'train' clips of ../shared/data
(vox_mini, hdtf_mini, av_mini), every 5th frame; ``head_template.json``
beside it records the clips, frame counts and the mesh models' fingerprint.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

from dagan_jax.face import mesh as mesh_lib
from dagan_jax.face import pose as pose_lib
from dagan_jax.input import media


def _normalise(shape: np.ndarray) -> np.ndarray:
  c = shape - shape.mean(axis=0)
  return c / np.sqrt((c ** 2).sum(axis=1).mean())


def _rotate_onto(shape: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Kabsch: the rotation (no reflection) of ``shape`` closest to ``target``."""
  u, _, vt = np.linalg.svd(shape.T @ target)
  d = np.sign(np.linalg.det(u @ vt))
  return shape @ (u @ np.diag([1.0, 1.0, d]) @ vt)


def mean_shape(shapes: np.ndarray, iterations: int = 20) -> np.ndarray:
  """Generalised Procrustes mean of (N, P, 3) shapes (unit RMS, centred)."""
  shapes = np.stack([_normalise(s) for s in np.asarray(shapes, np.float64)])
  mean = shapes[0]
  for _ in range(iterations):
    aligned = np.stack([_rotate_onto(s, mean) for s in shapes])
    new = _normalise(aligned.mean(axis=0))
    if np.abs(new - mean).max() < 1e-9:
      break
    mean = new
  return mean


def canonical(mean: np.ndarray) -> np.ndarray:
  """The mean shape facing the camera, centred, 140 units between cheeks."""
  p = pose_lib
  x = mean[p.LEFT_EYE_OUTER] - mean[p.RIGHT_EYE_OUTER]
  x /= np.linalg.norm(x)
  y = mean[p.CHIN] - mean[p.FOREHEAD]
  y -= x * (x @ y)
  y /= np.linalg.norm(y)
  z = np.cross(x, y)
  out = (mean - mean.mean(axis=0)) @ np.stack([x, y, z]).T
  width = np.linalg.norm(out[p.LEFT_CHEEK] - out[p.RIGHT_CHEEK])
  return out * (p.FACE_WIDTH / width)


def build(clips: list[str], every: int = 5) -> tuple[np.ndarray, dict]:
  mesh = mesh_lib.FaceMesh()
  shapes, used = [], {}
  for clip in clips:
    n = media.probe_video(clip)[0]
    frames = np.stack(media.read_native_frames(clip, list(range(0, n, every))))
    res = mesh(frames)
    shapes.extend(res.points[res.found])
    used[os.path.relpath(clip)] = int(res.found.sum())
  if not shapes:
    raise SystemExit("no face found in the clips given")
  info = {"clips": used, "shapes": len(shapes), "every": every,
          "mesh_models": mesh.fingerprint}
  return canonical(mean_shape(np.stack(shapes))).astype(np.float32), info


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("inputs", nargs="+", help="clips, or folders of clips")
  ap.add_argument("--every", type=int, default=5)
  ap.add_argument("--out", default=pose_lib.TEMPLATE_FILE)
  args = ap.parse_args(argv)
  clips = []
  for x in args.inputs:
    clips.extend(sorted(glob.glob(os.path.join(x, "*"))) if os.path.isdir(x) else [x])
  clips = [c for c in clips if not c.endswith((".wav", ".md"))]
  tpl, info = build(clips, args.every)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  np.save(args.out, tpl)
  with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
    json.dump(info, f, indent=1)
  print(f"wrote {args.out}: {info['shapes']} shapes from {len(clips)} clips")
  return 0


if __name__ == "__main__":
  sys.exit(main())
