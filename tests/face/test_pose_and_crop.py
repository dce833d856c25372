"""Head pose (rigid fit to the canonical head) and the square face crops."""

import numpy as np
import pytest

from dagan_jax.errors import DataError
from dagan_jax.face import crop as C
from dagan_jax.face import mesh as M
from dagan_jax.face import pose as P
from dagan_jax.input import head_template as T
from dagan_jax.input import media

needs_mesh = pytest.mark.skipif(not M.face_available(), reason="the face extra is not installed")
CLIP = "data/av_mini/test/st_feifeili#clip1.mp4"


def _rotation(rvec):
  import cv2
  return cv2.Rodrigues(np.asarray(rvec, np.float64))[0]


def test_template_faces_the_camera():
  t = P.template()
  assert t.shape == (468, 3)
  np.testing.assert_allclose(t.mean(axis=0), 0, atol=1e-3)
  np.testing.assert_allclose(np.linalg.norm(t[P.LEFT_CHEEK] - t[P.RIGHT_CHEEK]), 140, rtol=1e-5)
  eyes = t[P.LEFT_EYE_OUTER] - t[P.RIGHT_EYE_OUTER]
  np.testing.assert_allclose(eyes[1:], 0, atol=1e-3)          # level, in the image plane
  assert eyes[0] > 0 and t[P.CHIN, 1] > t[P.FOREHEAD, 1]    # x right, y down
  assert t[1, 2] < t[P.RIGHT_CHEEK, 2]                       # the nose tip is nearer


def test_fit_recovers_a_known_pose():
  rng = np.random.default_rng(0)
  for _ in range(5):
    pose = np.concatenate([rng.uniform(-0.5, 0.5, 3), rng.uniform(-60, 60, 2),
                           rng.uniform(200, 380, 1)])
    got = P.fit_pose(P.project(pose))
    np.testing.assert_allclose(got, pose, atol=1e-4)
    assert P.reprojection_error(got, P.project(pose)) < 1e-4


def test_procrustes_mean_undoes_rotation_scale_and_shift():
  rng = np.random.default_rng(1)
  base = P.template()
  shapes = []
  for _ in range(6):
    r = _rotation(rng.uniform(-0.4, 0.4, 3))
    shapes.append(rng.uniform(0.5, 2) * base @ r.T + rng.uniform(-50, 50, 3))
  np.testing.assert_allclose(T.canonical(T.mean_shape(np.stack(shapes))), base, atol=1e-3)


@pytest.fixture(scope="module")
def clip_mesh(shared_dir):
  if not M.face_available():
    pytest.skip("the face extra is not installed")
  frames = np.stack(media.read_native_frames(shared_dir / CLIP, list(range(0, 50, 5))))
  mesh = M.FaceMesh(batch=16)
  return frames, mesh, mesh(frames)


@needs_mesh
def test_real_poses_are_plausible_and_mirror(clip_mesh):
  frames, mesh, res = clip_mesh
  poses = P.head_poses(res.points, frames.shape[1:3], res.found)
  assert np.isfinite(poses).all()
  assert np.abs(poses[:, :3]).max() < 0.6                   # a talking head, not a profile
  assert (poses[:, 5] > 100).all() and (poses[:, 5] < 500).all()
  # A rigid mean head cannot follow the mouth and brows, but it fits within
  # a tenth of the inter-ocular distance (a wrong pose misses by far more).
  for i in range(len(poses)):
    err = P.reprojection_error(poses[i], P.to_camera_frame(res.points[i], frames.shape[1:3]))
    assert err < 0.1 * np.linalg.norm(res.points[i, 33, :2] - res.points[i, 263, :2])
  flipped = P.head_poses(mesh(frames[:, :, ::-1]).points, frames.shape[1:3])
  # A mirror image turns yaw and roll and the horizontal shift around.
  sign = np.array([1, -1, -1, -1, 1, 1])
  np.testing.assert_allclose(flipped[:, :3], poses[:, :3] * sign[:3], atol=0.06)
  np.testing.assert_allclose(flipped[:, 3:], poses[:, 3:] * sign[3:], atol=0.03 * poses[:, 5:].mean())


@needs_mesh
def test_pose_does_not_depend_on_resolution(clip_mesh):
  import cv2
  frames, mesh, res = clip_mesh
  big = np.stack([cv2.resize(f, (512, 512), interpolation=cv2.INTER_CUBIC) for f in frames[:3]])
  a = P.head_poses(res.points[:3], (256, 256))
  b = P.head_poses(mesh(big).points, (512, 512))
  np.testing.assert_allclose(b[:, :3], a[:, :3], atol=0.05)
  np.testing.assert_allclose(b[:, 3:], a[:, 3:], rtol=0.03, atol=2.0)


def test_no_face_gives_nan_rows():
  pts = np.full((2, 468, 3), np.nan, np.float32)
  pts[1, :, :2] = P.project([0.1, 0.0, 0.0, 0.0, 0.0, 300.0])
  poses = P.head_poses(pts, (256, 256))
  assert np.isnan(poses[0]).all() and np.isfinite(poses[1]).all()


def test_clip_box_is_the_raised_median_square():
  # Frames whose mesh boxes are [10+k, 20, 110+k, 140] (face size 120).
  pts = np.zeros((5, 4, 2), np.float32)
  for k in range(5):
    pts[k] = [[10 + k, 20], [110 + k, 20], [10 + k, 140], [110 + k, 140]]
  pts[4] = np.nan                                              # a frame without a face
  box = C.clip_box(pts)
  side = 1.9 * 120
  np.testing.assert_allclose(box, [61.5 - side / 2, 80 - side / 2 - 0.06 * side, side], rtol=1e-6)
  per_frame = C.frame_boxes(pts)
  np.testing.assert_allclose(per_frame[0], [60 - side / 2, 80 - side * 0.56, side], rtol=1e-6)
  assert np.isnan(per_frame[4]).all()
  with pytest.raises(DataError, match="clip.mp4: no frame has a face"):
    C.clip_box(np.full((3, 4, 2), np.nan), where="clip.mp4")


def test_crop_pads_outside_and_matches_slicing_inside():
  import cv2
  rng = np.random.default_rng(0)
  frame = rng.integers(1, 256, (100, 120, 3), np.uint8)
  # Inside, same size: plain slicing.
  np.testing.assert_array_equal(C.crop(frame, [10, 20, 64], 64), frame[20:84, 10:74])
  # Inside, shrinking: the slice area-resized.
  np.testing.assert_array_equal(
      C.crop(frame[None], [10, 20, 64], 32)[0],
      cv2.resize(frame[20:84, 10:74], (32, 32), interpolation=cv2.INTER_AREA))
  # Half outside: zeros there, the frame elsewhere.
  out = C.crop(frame, [-32, -32, 64], 64)
  assert (out[:32] == 0).all() and (out[:, :32] == 0).all()
  np.testing.assert_array_equal(out[32:, 32:], frame[:32, :32])
  # Enlarging (bilinear) keeps the picture: a 2x upsample of a constant patch.
  flat = np.full((50, 50, 3), 77, np.uint8)
  np.testing.assert_array_equal(C.crop(flat, [5, 5, 40], 80), np.full((80, 80, 3), 77))
  with pytest.raises(DataError, match="not a finite square"):
    C.crop(frame, [np.nan, 0, 10], 8)
  with pytest.raises(DataError, match="clip.mp4: crop box .* does not overlap the 100x120 frame"):
    C.crop(frame, [200, 0, 10], 8, where="clip.mp4")
  # Boxes are cut on the pixel grid, halves up.
  assert C.box_pixels([1.5, -0.5, 63.6]) == (2, 0, 64)


@needs_mesh
def test_clip_box_holds_the_face_of_a_real_clip(clip_mesh):
  frames, _, res = clip_mesh
  x0, y0, side = C.clip_box(res.points, res.found)
  xy = res.points[..., :2]
  assert (xy[..., 0] > x0).all() and (xy[..., 0] < x0 + side).all()
  assert (xy[..., 1] > y0).all() and (xy[..., 1] < y0 + side).all()
  face = np.median(C.mesh_boxes(xy)[:, 2:] - C.mesh_boxes(xy)[:, :2], axis=0).max()
  np.testing.assert_allclose(side, 1.9 * face, rtol=0.05)
