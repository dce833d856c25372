"""The offline 468-point face mesh: BlazeFace detection + MediaPipe's mesh.

Both networks are MediaPipe's TFLite models (Apache-2.0; the files in
``dagan_jax/face/models/`` with their NOTICE), run by ``ai-edge-litert``
(``pip install -e ".[face]"``). Everything around the two networks -- the
SSD anchors, box decoding, weighted non-maximum suppression, the rotated
region of interest and the projection of the mesh back to the frame -- is
written here in numpy, following MediaPipe's CPU graphs
(``face_detection_short_range`` and ``face_landmark_front``) so that the
points agree with MediaPipe's to a fraction of a pixel.

Per frame (no tracking between frames: every frame is detected afresh, so a
frame's result does not depend on its neighbours):

1. The frame is letterboxed to 128x128 (aspect kept, zero padding), scaled
   to [-1, 1], and BlazeFace (short range) scores 896 anchors. Boxes over
   ``min_score`` are merged by weighted NMS (IoU 0.3).
2. The **largest** remaining face is kept (the talking face of a clip is
   the largest one; BlazeFace's score says little about which face matters).
3. Its box, squared on the long side and enlarged 1.5x, rotated so that the
   eyes lie level, is cut out at 192x192 in [0, 1] (edges replicated).
4. The mesh network returns 468 (x, y, z) in crop pixels and a face
   presence logit; a frame whose presence is below 0.5 counts as no face.

Coordinates: continuous pixel coordinates of the input frame (the left
edge of pixel ``i`` is ``i``, its centre ``i + 0.5``, as MediaPipe's
normalised coordinates times the frame size); ``z`` is in the same pixel
scale, smaller = nearer the camera, relative to the face centre.

Frames go through both networks in fixed-size batches (one interpreter
allocation per size), so a clip costs about 1-2 ms per frame on 2 cores
(``benchmarks/run.py --only face_mesh``).
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Callable, Iterable, NamedTuple

import numpy as np

from dagan_jax.errors import ConfigError, DaganError, DataError

MODEL_DIR = os.path.join(os.path.dirname(__file__), "models")
DETECTOR_FILE = os.path.join(MODEL_DIR, "face_detection_short_range.tflite")
MESH_FILE = os.path.join(MODEL_DIR, "face_landmark.tflite")
NUM_POINTS = 468

DETECT_SIZE = 128
MESH_SIZE = 192
NMS_IOU = 0.3
ROI_SCALE = 1.5
PRESENCE_THRESHOLD = 0.5
# BlazeFace short range: four SSD layers at strides 8, 16, 16, 16 with two
# anchors per layer; layers sharing a stride share cells, so a 16x16 grid
# with 2 anchors per cell and an 8x8 grid with 6.
_ANCHOR_GRIDS = ((16, 2), (8, 6))


def _anchors() -> np.ndarray:
  """(896, 2) anchor centres (x, y) in [0, 1], in the model's output order."""
  rows = []
  for cells, per_cell in _ANCHOR_GRIDS:
    c = (np.arange(cells, dtype=np.float64) + 0.5) / cells
    y, x = np.meshgrid(c, c, indexing="ij")
    xy = np.stack([x.ravel(), y.ravel()], axis=-1)
    rows.append(np.repeat(xy, per_cell, axis=0))
  return np.concatenate(rows).astype(np.float32)


ANCHORS = _anchors()


class MeshResult(NamedTuple):
  """The mesh of N frames.

  ``points`` (N, 468, 3) float32, NaN where no face; ``found`` (N,) bool;
  ``boxes`` (N, 4) float32 detection box ``[x0, y0, x1, y1]`` of the chosen
  face (NaN where none was detected); ``num_faces`` (N,) int32 faces
  detected after NMS; ``presence`` (N,) float32 the mesh network's face
  probability (0 where nothing was detected).
  """
  points: np.ndarray
  found: np.ndarray
  boxes: np.ndarray
  num_faces: np.ndarray
  presence: np.ndarray

  @property
  def missing(self) -> np.ndarray:
    """Indices of the frames without a face."""
    return np.flatnonzero(~self.found)


def concat_results(parts: Iterable[MeshResult]) -> MeshResult:
  parts = list(parts)
  if not parts:
    return MeshResult(np.zeros((0, NUM_POINTS, 3), np.float32),
                      np.zeros((0,), bool), np.zeros((0, 4), np.float32),
                      np.zeros((0,), np.int32), np.zeros((0,), np.float32))
  return MeshResult(*(np.concatenate(f) for f in zip(*parts)))


def model_fingerprint(detector_file: str = DETECTOR_FILE,
                      mesh_file: str = MESH_FILE) -> str:
  """Short sha256 of both model files, recorded with prepared data."""
  h = hashlib.sha256()
  for f in (detector_file, mesh_file):
    with open(f, "rb") as fh:
      h.update(fh.read())
  return h.hexdigest()[:16]


def _interpreter_class():
  try:
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DaganError("the face mesh needs ai-edge-litert: "
                     'pip install -e ".[face]"') from e
  return litert.Interpreter


def face_available() -> bool:
  """Whether the face mesh can run (ai-edge-litert importable)."""
  try:
    _interpreter_class()
    return True
  except DaganError:
    return False


class _Net:
  """One TFLite network run in batches of a fixed size."""

  def __init__(self, path: str, batch: int, num_threads: int):
    if not os.path.isfile(path):
      raise ConfigError(f"face model file {path} not found")
    try:
      self.it = _interpreter_class()(model_path=path, num_threads=num_threads)
    except (ValueError, RuntimeError) as e:
      raise ConfigError(f"face model file {path} is not a TFLite model: {e}") from e
    self.inp = self.it.get_input_details()[0]
    self.outs = self.it.get_output_details()
    self.batch = batch
    shape = [batch] + list(self.inp["shape"][1:])
    self.it.resize_tensor_input(self.inp["index"], shape)
    self.it.allocate_tensors()
    self.shape = tuple(shape)

  def __call__(self, x: np.ndarray) -> list[np.ndarray]:
    n = x.shape[0]
    if n < self.batch:   # pad: one allocation for every call
      x = np.concatenate([x, np.zeros((self.batch - n,) + x.shape[1:], x.dtype)])
    self.it.set_tensor(self.inp["index"], np.ascontiguousarray(x, np.float32))
    self.it.invoke()
    return [self.it.get_tensor(o["index"]) for o in self.outs], n


def _per_frame_detections(out: np.ndarray, batch: int, n: int) -> np.ndarray:
  """BlazeFace's (1, batch * 896, d) output -> (n, 896, d).

  The model flattens each SSD grid over the batch before joining the grids,
  so a batched output holds every frame's 16x16-grid anchors first, then
  every frame's 8x8-grid anchors (checked against batch-1 runs in
  tests/face/test_mesh.py)."""
  d = out.shape[-1]
  flat = out.reshape(-1, d)
  first = _ANCHOR_GRIDS[0][0] ** 2 * _ANCHOR_GRIDS[0][1]
  rest = len(ANCHORS) - first
  return np.concatenate([flat[:batch * first].reshape(batch, first, d),
                         flat[batch * first:].reshape(batch, rest, d)],
                        axis=1)[:n]


def _letterbox(frame: np.ndarray, size: int):
  """Frame -> (size, size) float32 in [-1, 1] with the aspect kept, and the
  (scale, pad_x, pad_y) that maps letterbox pixels back to the frame."""
  import cv2  # pylint: disable=import-outside-toplevel
  h, w = frame.shape[:2]
  s = size / max(h, w)
  pad_x, pad_y = (size - w * s) / 2, (size - h * s) / 2
  # dst = s * src + pad in continuous coordinates; cv2 indexes pixel centres.
  m = np.array([[s, 0, pad_x + 0.5 * s - 0.5], [0, s, pad_y + 0.5 * s - 0.5]])
  out = cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  return out.astype(np.float32) / 127.5 - 1.0, (s, pad_x, pad_y)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.clip(x, -100.0, 100.0)))


def decode_detections(raw: np.ndarray, logits: np.ndarray,
                      min_score: float) -> tuple[np.ndarray, np.ndarray]:
  """One frame's BlazeFace outputs -> (boxes (n, 4) [x0, y0, x1, y1],
  keypoints (n, 6, 2)) in letterbox pixels, after weighted NMS."""
  raw = raw.reshape(-1, 16).astype(np.float64)
  scores = _sigmoid(logits.reshape(-1).astype(np.float64))
  keep = scores >= min_score
  if not keep.any():
    return np.zeros((0, 4)), np.zeros((0, 6, 2))
  raw, scores, anchors = raw[keep], scores[keep], ANCHORS[keep] * DETECT_SIZE
  cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
  boxes = np.stack([cx - raw[:, 2] / 2, cy - raw[:, 3] / 2,
                    cx + raw[:, 2] / 2, cy + raw[:, 3] / 2], axis=-1)
  kps = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
  return _weighted_nms(boxes, kps, scores)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  x0 = np.maximum(box[0], boxes[:, 0])
  y0 = np.maximum(box[1], boxes[:, 1])
  x1 = np.minimum(box[2], boxes[:, 2])
  y1 = np.minimum(box[3], boxes[:, 3])
  inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
  area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
  union = area(box) + area(boxes) - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _weighted_nms(boxes, kps, scores):
  """MediaPipe's weighted NMS: each cluster (IoU > 0.3 with its best box)
  becomes the score-weighted mean of its boxes and keypoints."""
  order = np.argsort(-scores, kind="stable")
  out_b, out_k = [], []
  while order.size:
    overlap = _iou(boxes[order[0]], boxes[order]) > NMS_IOU
    members = order[overlap]
    w = scores[members][:, None]
    out_b.append((boxes[members] * w).sum(0) / w.sum())
    out_k.append((kps[members] * w[:, :, None]).sum(0) / w.sum())
    order = order[~overlap]
  return np.stack(out_b), np.stack(out_k)


def roi_from_detection(box: np.ndarray, eyes: np.ndarray) -> tuple[float, float, float, float]:
  """(centre x, centre y, side, angle) of the mesh's region of interest from
  a detection box and its two eye keypoints, all in frame pixels: the box
  centre, the long side enlarged 1.5x, rotated so the eyes lie level."""
  cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
  side = max(box[2] - box[0], box[3] - box[1]) * ROI_SCALE
  (x0, y0), (x1, y1) = eyes
  angle = -math.atan2(-(y1 - y0), x1 - x0)
  angle = (angle + math.pi) % (2 * math.pi) - math.pi
  return float(cx), float(cy), float(side), float(angle)


def _roi_matrix(roi, size: int) -> np.ndarray:
  """2x3 map from crop continuous coordinates to frame continuous ones."""
  cx, cy, side, angle = roi
  c, s = math.cos(angle), math.sin(angle)
  k = side / size
  # p = centre + R @ ((q - size/2) * k)
  return np.array([[c * k, -s * k, cx - (c - s) * side / 2],
                   [s * k, c * k, cy - (s + c) * side / 2]])


def _crop(frame: np.ndarray, roi, size: int) -> np.ndarray:
  import cv2  # pylint: disable=import-outside-toplevel
  m = _roi_matrix(roi, size)
  # cv2 indexes pixel centres: index = continuous - 0.5 on both sides.
  m_idx = m.copy()
  m_idx[:, 2] += m[:, :2].sum(1) * 0.5 - 0.5
  out = cv2.warpAffine(frame, m_idx, (size, size),
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
  return out.astype(np.float32) / 255.0


def _as_uint8(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim == 3:
    frames = frames[None]
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise DataError(f"face mesh: expected (N, H, W, 3) RGB frames, got shape "
                    f"{frames.shape}")
  if frames.dtype == np.uint8:
    return frames
  return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


class FaceMesh:
  """Batched face mesh; ``mesh(frames) -> MeshResult`` (see the module
  docstring). ``frames``: (N, H, W, 3) RGB, uint8 or float in [0, 1]."""

  def __init__(self, *, batch: int = 16, min_score: float = 0.5,
               num_threads: int | None = None,
               detector_file: str = DETECTOR_FILE, mesh_file: str = MESH_FILE):
    if batch < 1:
      raise ConfigError(f"face mesh batch is {batch}; expected >= 1")
    threads = num_threads or min(4, os.cpu_count() or 1)
    self.detector = _Net(detector_file, batch, threads)
    self.mesh_net = _Net(mesh_file, batch, threads)
    self.batch = batch
    self.min_score = float(min_score)
    self.fingerprint = model_fingerprint(detector_file, mesh_file)

  def __call__(self, frames: np.ndarray) -> MeshResult:
    frames = _as_uint8(frames)
    return concat_results(self._chunk(frames[i:i + self.batch])
                          for i in range(0, len(frames), self.batch))

  def _chunk(self, frames: np.ndarray) -> MeshResult:
    n = len(frames)
    points = np.full((n, NUM_POINTS, 3), np.nan, np.float32)
    found = np.zeros(n, bool)
    boxes = np.full((n, 4), np.nan, np.float32)
    num_faces = np.zeros(n, np.int32)
    presence = np.zeros(n, np.float32)
    boxed = [_letterbox(f, DETECT_SIZE) for f in frames]
    (raw, logits), _ = self.detector(np.stack([b[0] for b in boxed]))
    raw = _per_frame_detections(raw, self.batch, n)
    logits = _per_frame_detections(logits, self.batch, n)
    rois, crops, which = [], [], []
    for i in range(n):
      bx, kp = decode_detections(raw[i], logits[i], self.min_score)
      num_faces[i] = len(bx)
      if not len(bx):
        continue
      s, px, py = boxed[i][1]
      bx = (bx - [px, py, px, py]) / s          # letterbox -> frame pixels
      kp = (kp - [px, py]) / s
      best = int(np.argmax((bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])))
      boxes[i] = bx[best]
      roi = roi_from_detection(bx[best], kp[best, :2])
      rois.append(roi)
      crops.append(_crop(frames[i], roi, MESH_SIZE))
      which.append(i)
    if which:
      (lm, flag), m = self.mesh_net(np.stack(crops))
      lm, flag = lm.reshape(self.batch, -1)[:m], flag.reshape(self.batch, -1)[:m]
      for j, i in enumerate(which):
        presence[i] = _sigmoid(float(flag[j, 0]))
        if presence[i] < PRESENCE_THRESHOLD:
          continue
        p = lm[j].reshape(NUM_POINTS, 3).astype(np.float64)
        m = _roi_matrix(rois[j], MESH_SIZE)
        points[i, :, :2] = p[:, :2] @ m[:, :2].T + m[:, 2]
        points[i, :, 2] = p[:, 2] * rois[j][2] / MESH_SIZE
        found[i] = True
    return MeshResult(points, found, boxes, num_faces, presence)


def mesh_frames(frames: Iterable[np.ndarray], mesh: FaceMesh | None = None, *,
                progress: Callable[[int], None] | None = None,
                where: str = "frames") -> MeshResult:
  """The mesh of a stream of (H, W, 3) frames (e.g. a clip decoded frame by
  frame), run ``mesh.batch`` frames at a time, so a long clip is never held
  whole; ``progress(n)`` is called with the frames done after each batch.
  Raises :class:`DataError` naming ``where`` when there are no frames."""
  mesh = mesh or FaceMesh()
  parts, buf = [], []
  for frame in frames:
    buf.append(frame)
    if len(buf) == mesh.batch:
      parts.append(mesh(np.stack(buf)))
      buf = []
      if progress:
        progress(mesh.batch)
  if buf:
    parts.append(mesh(np.stack(buf)))
    if progress:
      progress(len(buf))
  if not parts:
    raise DataError(f"{where}: no frames to mesh")
  return concat_results(parts)
