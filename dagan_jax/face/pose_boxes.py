"""Audio2Head's pose boxes: a head pose drawn as a projected 3-D box.

Audio2Head conditions its keypoint predictor on the predicted head pose as
an image (Wang et al., IJCAI 2021, Sec. 3.2): two squares, the rear one of
half-size 75 at depth 0 and the front one of half-size 100 at depth 100,
posed by (``rot``, ``trans``) and projected by the 256x256 camera of
:mod:`dagan_jax.face.pose` (f = 233.333 px, centre (128, 128), no
distortion). This reproduces the official ``draw_annotation_box`` exactly:

* 10 points: rear square (4 corners, first repeated), then front square;
  ``cv2.projectPoints`` in float64, then ``np.int32`` (truncation toward
  zero, not rounding);
* the 10 points as one closed polyline, plus the 3 edges joining rear
  corners 1, 2, 3 to front corners 6, 7, 8 (the official code leaves corner
  0 -> 5 to the closing segment of the polyline), colour 255, thickness 2,
  ``cv2.LINE_AA``;
* on a float64 ``zeros((256, 256))`` canvas. OpenCV anti-aliases only 8-bit
  images, so on this canvas the lines are plain 8-connected ones and every
  pixel is 0 or 255.

The boxes are fed to the network as they are (values 0 / 255, no
normalisation): :func:`pose_boxes` returns float32 ``(N, 256, 256)``.
"""

from __future__ import annotations

import numpy as np

from dagan_jax.face.pose import FRAME, camera_matrix

REAR_SIZE, REAR_DEPTH = 75.0, 0.0
FRONT_SIZE, FRONT_DEPTH = 100.0, 100.0
BOX_VALUE = 255.0
LINE_WIDTH = 2
#: Rear corners joined to front corners by extra lines (indices into the
#: 10 box points).
EDGES = ((1, 6), (2, 7), (3, 8))


def box_points_3d() -> np.ndarray:
  """The box's 10 points (10, 3) float64: each square's corners in the
  order (-,-), (-,+), (+,+), (+,-) and its first corner again."""
  pts = []
  for size, depth in ((REAR_SIZE, REAR_DEPTH), (FRONT_SIZE, FRONT_DEPTH)):
    corners = [(-size, -size), (-size, size), (size, size), (size, -size)]
    corners.append(corners[0])
    pts += [(x, y, depth) for x, y in corners]
  return np.array(pts, np.float64)


def box_points_2d(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
  """The 10 box points in pixels (10, 2) int32 (truncated) for one pose.

  ``rot`` is an OpenCV ``rvec`` (axis-angle, radians), ``trans`` a ``tvec``;
  either float32 (as the official pipeline passes them) or float64 --
  OpenCV computes in float64, and float32 widens exactly.
  """
  import cv2  # pylint: disable=import-outside-toplevel
  pts, _ = cv2.projectPoints(box_points_3d(), np.asarray(rot).reshape(3),
                             np.asarray(trans).reshape(3), camera_matrix(),
                             np.zeros((4, 1)))
  return np.int32(pts.reshape(-1, 2))


def draw_pose_box(canvas: np.ndarray, rot: np.ndarray, trans: np.ndarray,
                  value: float = BOX_VALUE, thickness: int = LINE_WIDTH
                  ) -> np.ndarray:
  """Draws one pose box on ``canvas`` in place (and returns it), as the
  official ``draw_annotation_box`` does."""
  import cv2  # pylint: disable=import-outside-toplevel
  p = box_points_2d(rot, trans)
  color = (value, value, value)
  cv2.polylines(canvas, [p], True, color, thickness, cv2.LINE_AA)
  for a, b in EDGES:
    cv2.line(canvas, tuple(int(v) for v in p[a]), tuple(int(v) for v in p[b]),
             color, thickness, cv2.LINE_AA)
  return canvas


def pose_boxes(rot: np.ndarray, trans: np.ndarray, size: int = FRAME
               ) -> np.ndarray:
  """Boxes of N poses: ``rot``, ``trans`` (N, 3) -> (N, size, size) float32,
  values 0 or 255, each drawn on a float64 zero canvas and then cast."""
  rot = np.asarray(rot)
  trans = np.asarray(trans)
  if rot.shape != trans.shape or rot.ndim != 2 or rot.shape[-1] != 3:
    raise ValueError(f"pose_boxes: rot {rot.shape} and trans {trans.shape} "
                     "must both be (N, 3)")
  out = np.empty((len(rot), size, size), np.float32)
  for i in range(len(rot)):
    out[i] = draw_pose_box(np.zeros((size, size), np.float64), rot[i], trans[i])
  return out
