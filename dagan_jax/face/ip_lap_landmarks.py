"""IP_LAP's landmarks and sketches (Zhong et al., CVPR 2023; its
``inference_single.py`` and ``draw_landmark.py``).

IP_LAP uses 131 of MediaPipe's face-mesh points: the end points of the mesh
edges of the lips, eyes, eyebrows, face oval and a nose line set of its own
(:data:`EDGES`). They split into

* 74 **pose** points (eyes, eyebrows, nose, and the 8 upper points of the
  face oval): the head's pose, taken from the template video;
* 57 **content** points (the lower face oval: 17 jaw points, and the 40
  lip points): what the landmark generator predicts from the audio.

Arrays of 131 points are stored in IP_LAP's "full face" order, the pose
points then the content points, each in the order of :data:`ORI_SEQUENCE`
(the mesh index of full-face point ``j`` is :data:`FULL_FACE_MESH_IDS`
``[j]``). Coordinates are (x, y) normalised to the face crop.

:func:`sketch` draws them as the renderer sees them: every edge whose two
points lie in [0, 1], 1 pixel wide (8-connected), grey 224 on black, on a
canvas whose short side is 128 (``int(h * 128 / min(h, w))`` by
``int(w * 128 / min(h, w))`` for an ``h x w`` crop), resized (bilinear) to
128x128 and divided by 255 (values in [0, 224/255], 3 equal channels).

The template's preprocessing: :func:`crop_box` (the 131 points' box plus
25 px), :func:`crop_landmarks` (points normalised to that box),
:func:`lip_openness` and :func:`reference_frames` (references spread over
the frames sorted by mouth openness), all as the official inference
computes them from MediaPipe's points.
"""

from __future__ import annotations

import math

import numpy as np

#: MediaPipe face-mesh edges IP_LAP draws, by part (undirected pairs of mesh
#: indices; the lips, eyes, eyebrows and oval are MediaPipe's own sets, the
#: oval without its forehead arc, the nose IP_LAP's).
LIPS = ((61, 146), (146, 91), (91, 181), (181, 84), (84, 17), (17, 314),
        (314, 405), (405, 321), (321, 375), (375, 291), (61, 185), (185, 40),
        (40, 39), (39, 37), (37, 0), (0, 267), (267, 269), (269, 270),
        (270, 409), (409, 291), (78, 95), (95, 88), (88, 178), (178, 87),
        (87, 14), (14, 317), (317, 402), (402, 318), (318, 324), (324, 308),
        (78, 191), (191, 80), (80, 81), (81, 82), (82, 13), (13, 312),
        (312, 311), (311, 310), (310, 415), (415, 308))
LEFT_EYE = ((263, 249), (249, 390), (390, 373), (373, 374), (374, 380),
            (380, 381), (381, 382), (382, 362), (263, 466), (466, 388),
            (388, 387), (387, 386), (386, 385), (385, 384), (384, 398),
            (398, 362))
LEFT_EYEBROW = ((276, 283), (283, 282), (282, 295), (295, 285), (300, 293),
                (293, 334), (334, 296), (296, 336))
RIGHT_EYE = ((33, 7), (7, 163), (163, 144), (144, 145), (145, 153),
             (153, 154), (154, 155), (155, 133), (33, 246), (246, 161),
             (161, 160), (160, 159), (159, 158), (158, 157), (157, 173),
             (173, 133))
RIGHT_EYEBROW = ((46, 53), (53, 52), (52, 65), (65, 55), (70, 63), (63, 105),
                 (105, 66), (66, 107))
FACE_OVAL = ((389, 356), (356, 454), (454, 323), (323, 361), (361, 288),
             (288, 397), (397, 365), (365, 379), (379, 378), (378, 400),
             (400, 377), (377, 152), (152, 148), (148, 176), (176, 149),
             (149, 150), (150, 136), (136, 172), (172, 58), (58, 132),
             (132, 93), (93, 234), (234, 127), (127, 162))
NOSE = ((168, 6), (6, 197), (197, 195), (195, 5), (5, 4), (4, 45), (45, 220),
        (220, 115), (115, 48), (4, 275), (275, 440), (440, 344), (344, 278))
EDGES = LIPS + LEFT_EYE + LEFT_EYEBROW + RIGHT_EYE + RIGHT_EYEBROW + FACE_OVAL + NOSE

#: The 131 points in IP_LAP's reading order: face oval (from the right
#: temple down the jaw and up), right eyebrow, left eyebrow, nose ridge,
#: nostrils, right eye, left eye, outer lip, inner lip.
ORI_SEQUENCE = (
    162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400,
    378, 379, 365, 397, 288, 361, 323, 454, 356, 389,
    70, 63, 105, 66, 107, 55, 65, 52, 53, 46,
    336, 296, 334, 293, 300, 276, 283, 282, 295, 285,
    168, 6, 197, 195, 5,
    48, 115, 220, 45, 4, 275, 440, 344, 278,
    33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
    362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382,
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84,
    181, 91, 146,
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87,
    178, 88, 95)

#: Positions in :data:`ORI_SEQUENCE` of the full-face order: pose (the 4
#: upper oval points on each side, eyebrows, nose, eyes), then content (the
#: 17 jaw points, the 40 lip points).
FULL_FACE_ORDER = (tuple(range(0, 4)) + tuple(range(21, 25)) + tuple(range(25, 91))
                   + tuple(range(4, 21)) + tuple(range(91, 131)))
FULL_FACE_MESH_IDS = tuple(ORI_SEQUENCE[i] for i in FULL_FACE_ORDER)
NUM_POSE = 74
NUM_CONTENT = 57
POSE_MESH_IDS = FULL_FACE_MESH_IDS[:NUM_POSE]
CONTENT_MESH_IDS = FULL_FACE_MESH_IDS[NUM_POSE:]
#: Upper and lower lip midpoints (mouth openness: the distance between them).
LIP_MIDPOINTS = (0, 17)

SKETCH_SIZE = 128
SKETCH_GREY = 224


def canvas_size(crop_hw) -> tuple[int, int]:
  """(height, width) of the drawing canvas of an ``h x w`` crop: short side
  128, the aspect kept (truncated)."""
  h, w = (int(v) for v in crop_hw)
  # In this order (h * 128 first): 206 * (128 / 206) is 127.99...
  return int(h * SKETCH_SIZE / min(h, w)), int(w * SKETCH_SIZE / min(h, w))


def _pixel(x: float, y: float, width: int, height: int):
  """MediaPipe's normalised -> pixel rule; None outside [0, 1]."""
  def inside(v):
    return (v > 0 or math.isclose(0, v)) and (v < 1 or math.isclose(1, v))
  if not (inside(x) and inside(y)):
    return None
  return (min(math.floor(x * width), width - 1),
          min(math.floor(y * height), height - 1))


def draw_canvas(landmarks: np.ndarray, canvas_hw) -> np.ndarray:
  """The sketch before resizing: (H, W, 3) float64 with 0 or 224.

  ``landmarks``: (2, 131) in full-face order (x row, y row)."""
  import cv2  # pylint: disable=import-outside-toplevel
  height, width = (int(v) for v in canvas_hw)
  pts = np.asarray(landmarks)
  if pts.shape != (2, NUM_POSE + NUM_CONTENT):
    raise ValueError(f"expected (2, 131) landmarks in full-face order; got "
                     f"{pts.shape}")
  where = {}
  for j, mesh_id in enumerate(FULL_FACE_MESH_IDS):
    p = _pixel(float(pts[0, j]), float(pts[1, j]), width, height)
    if p is not None:
      where[mesh_id] = p
  canvas = np.zeros((height, width, 3), np.float64)
  grey = (SKETCH_GREY,) * 3
  for a, b in EDGES:
    if a in where and b in where:
      cv2.line(canvas, where[a], where[b], grey, 1)
  return canvas


def sketch(landmarks: np.ndarray, crop_hw) -> np.ndarray:
  """The renderer's sketch of ``landmarks`` for a face crop of size
  ``crop_hw``: (128, 128, 3) float32 in [0, 224/255]."""
  import cv2  # pylint: disable=import-outside-toplevel
  canvas = draw_canvas(landmarks, canvas_size(crop_hw))
  return (cv2.resize(canvas, (SKETCH_SIZE, SKETCH_SIZE)) / 255.0).astype(np.float32)


# --------------------------------------------------------------------------
# Template preprocessing (inference_single.py)

#: Pixels added around the landmarks' box on every side before cropping.
CROP_MARGIN_PX = 25


def _positions(mesh_ids) -> list[int]:
  return [ORI_SEQUENCE.index(i) for i in mesh_ids]


def crop_box(mesh: np.ndarray, frame_hw, margin: int = CROP_MARGIN_PX
             ) -> tuple[int, int, int, int]:
  """IP_LAP's face crop ``(y1, y2, x1, x2)`` of one frame: the box of the
  131 points (``mesh``: (131, 2) image-normalised (x, y) in
  :data:`ORI_SEQUENCE` order) widened by ``margin`` pixels on each side,
  clipped to the frame, ``int()`` of the normalised bounds times h or w."""
  h, w = (int(v) for v in frame_hw)
  x, y = np.asarray(mesh, np.float64)[:, 0], np.asarray(mesh, np.float64)[:, 1]
  x_min, x_max = max(x.min() - margin / w, 0.0), min(x.max() + margin / w, 1.0)
  y_min, y_max = max(y.min() - margin / h, 0.0), min(y.max() + margin / h, 1.0)
  return int(y_min * h), int(y_max * h), int(x_min * w), int(x_max * w)


def crop_landmarks(mesh: np.ndarray, frame_hw, box) -> np.ndarray:
  """The 131 points normalised to the integer crop ``box`` (from
  :func:`crop_box`), in full-face order: (2, 131) float32, x row then y
  row (pose points first, then content)."""
  h, w = (int(v) for v in frame_hw)
  y1, y2, x1, x2 = box
  pts = np.asarray(mesh, np.float64)[list(FULL_FACE_ORDER)]
  x = (w * pts[:, 0] - x1) / (x2 - x1)
  y = (h * pts[:, 1] - y1) / (y2 - y1)
  return np.stack([x, y]).astype(np.float32)


def lip_openness(mesh: np.ndarray) -> float:
  """Distance between the upper and lower lip midpoints (mesh points 0 and
  17) in image-normalised coordinates."""
  a, b = _positions(LIP_MIDPOINTS)
  return float(np.linalg.norm(np.asarray(mesh, np.float64)[a]
                              - np.asarray(mesh, np.float64)[b]))


def _torch_linspace_int(end: int, steps: int) -> np.ndarray:
  """``int(torch.linspace(0, end, steps))`` as torch computes it in float32
  (the first half counted up from 0, the second down from ``end``)."""
  if steps == 1:
    return np.zeros(1, np.int64)
  step = np.float32(end) / np.float32(steps - 1)
  i = np.arange(steps)
  half = steps // 2
  up = np.float32(0) + step * i.astype(np.float32)
  down = np.float32(end) - step * (steps - 1 - i).astype(np.float32)
  return np.where(i < half, up, down).astype(np.float32).astype(np.int64)


def reference_frames(openness, count: int) -> np.ndarray:
  """Frames whose faces serve as references: the frames sorted by mouth
  openness (stable), sampled at ``int(torch.linspace(0, L - 1, count))``
  (IP_LAP takes 15 for reference landmarks, 25 for reference images)."""
  order = np.argsort(np.asarray(openness, np.float64), kind="stable")
  return order[_torch_linspace_int(len(order) - 1, count)]
