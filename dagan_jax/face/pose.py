"""6-DoF head pose per frame: a rigid fit of the face mesh to a canonical head.

Pose = ``[rx, ry, rz, tx, ty, tz]``: the rotation as an axis-angle vector
(radians; OpenCV's ``rvec``) and the translation of the canonical head in
the camera frame (x right, y down, z away from the camera), so that the
camera sees template point ``X`` at ``K (R X + t)``. This is the pose
Audio2Head predicts and draws as boxes: its camera has focal length
233.333 px and centre (128, 128) on 256x256 frames. Frames of another size
are mapped onto that 256x256 camera first (``x * 256 / W``, ``y * 256 /
H``), so a pose does not depend on the resolution of the clip.

The canonical head (``TEMPLATE``, 468 x 3, shipped as
``dagan_jax/face/data/head_template.npy``) is built from our own clips by
:mod:`dagan_jax.input.head_template`: the mean mesh after removing each frame's
similarity, turned to face the camera (x from the right eye's outer corner
to the left's, y from forehead to chin), centred on its centroid and scaled
so that the face is 140 units wide between the cheeks (points 234 and 454;
about an adult's width in mm, so translations read roughly as mm).

The fit is ``cv2.solvePnP`` (Levenberg-Marquardt on the reprojection error
of the 468 points' (x, y)); the mesh's own z is not used, as it is only
relative depth.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from dagan_jax.errors import DataError

FOCAL = 233.333
CENTRE = 128.0
FRAME = 256
TEMPLATE_FILE = os.path.join(os.path.dirname(__file__), "data", "head_template.npy")
#: Points fixing the canonical frame and its scale (MediaPipe's indices).
RIGHT_EYE_OUTER, LEFT_EYE_OUTER, FOREHEAD, CHIN = 33, 263, 10, 152
RIGHT_CHEEK, LEFT_CHEEK = 234, 454
FACE_WIDTH = 140.0


def camera_matrix() -> np.ndarray:
  """Audio2Head's pinhole camera on 256x256 frames."""
  return np.array([[FOCAL, 0, CENTRE], [0, FOCAL, CENTRE], [0, 0, 1]], np.float64)


@functools.lru_cache(maxsize=1)
def template() -> np.ndarray:
  """The canonical head, (468, 3) float64 (see the module docstring)."""
  if not os.path.isfile(TEMPLATE_FILE):
    raise DataError(f"head template {TEMPLATE_FILE} is missing from the "
                    "package; rebuild it with python -m dagan_jax.input.head_template")
  return np.load(TEMPLATE_FILE).astype(np.float64)


def to_camera_frame(points: np.ndarray, frame_hw) -> np.ndarray:
  """(..., 2+) pixel points of an (H, W) frame -> the 256x256 camera's."""
  h, w = frame_hw
  xy = np.asarray(points, np.float64)[..., :2]
  return xy * np.array([FRAME / w, FRAME / h])


def project(pose: np.ndarray, points3d: np.ndarray | None = None) -> np.ndarray:
  """Template (or ``points3d``) points seen at ``pose`` by the 256x256
  camera: (P, 2) continuous pixel coordinates."""
  import cv2  # pylint: disable=import-outside-toplevel
  pts = template() if points3d is None else np.asarray(points3d, np.float64)
  pose = np.asarray(pose, np.float64)
  out, _ = cv2.projectPoints(pts, pose[:3], pose[3:], camera_matrix(), None)
  return out[:, 0, :]


def fit_pose(points2d: np.ndarray, guess: np.ndarray | None = None) -> np.ndarray:
  """The pose (6,) whose projection of the template best matches (468, 2)
  points of the 256x256 camera frame; ``guess`` starts the refinement
  instead of SQPnP's global solution."""
  import cv2  # pylint: disable=import-outside-toplevel
  obj = template()
  img = np.ascontiguousarray(points2d, np.float64).reshape(-1, 1, 2)
  k = camera_matrix()
  if guess is None:
    ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_SQPNP)
    rvec, tvec = rvec.reshape(3), tvec.reshape(3)
  else:
    rvec, tvec = np.array(guess[:3], np.float64), np.array(guess[3:], np.float64)
    ok = True
  ok2, rvec, tvec = cv2.solvePnP(obj, img, k, None, rvec.reshape(3, 1).copy(),
                                 tvec.reshape(3, 1).copy(), useExtrinsicGuess=True,
                                 flags=cv2.SOLVEPNP_ITERATIVE)
  if not (ok and ok2):
    return np.full(6, np.nan)
  return np.concatenate([rvec.reshape(3), tvec.reshape(3)])


def head_poses(points: np.ndarray, frame_hw, found: np.ndarray | None = None
               ) -> np.ndarray:
  """(N, 6) float32 poses of (N, 468, 2+) mesh points of (H, W) frames;
  NaN rows where there is no face. Each frame is fitted on its own (SQPnP's
  global solution refined by Levenberg-Marquardt), so a frame's pose does
  not depend on its neighbours."""
  points = np.asarray(points)
  if found is None:
    found = np.isfinite(points[..., :2]).all(axis=(1, 2))
  out = np.full((len(points), 6), np.nan, np.float32)
  cam = to_camera_frame(points, frame_hw)
  for i in np.flatnonzero(found):
    out[i] = fit_pose(cam[i])
  return out


def reprojection_error(pose: np.ndarray, points2d: np.ndarray) -> float:
  """RMS distance (pixels of the 256 camera) between the posed template and
  the points."""
  return float(np.sqrt(np.mean(np.sum((project(pose) - points2d) ** 2, axis=-1))))
