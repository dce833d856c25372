"""IP_LAP's landmark subsets and sketches against the official code's
(the fixture's renderer inputs, drawn by its draw_landmark.py)."""

import numpy as np
import pytest

from dagan_jax.face import ip_lap_landmarks as lm


def test_landmark_subsets():
  assert len(lm.ORI_SEQUENCE) == len(set(lm.ORI_SEQUENCE)) == 131
  assert len(set(lm.POSE_MESH_IDS)) == lm.NUM_POSE == 74
  assert len(set(lm.CONTENT_MESH_IDS)) == lm.NUM_CONTENT == 57
  # Every drawn point is one of the 131, and every one of them is drawn.
  ends = {p for edge in lm.EDGES for p in edge}
  assert ends == set(lm.ORI_SEQUENCE) and len(lm.EDGES) == 125
  # Content is the jaw (lower oval) and the lips; the lips are all content.
  assert {p for e in lm.LIPS for p in e} <= set(lm.CONTENT_MESH_IDS)
  assert set(lm.LIP_MIDPOINTS) <= set(lm.CONTENT_MESH_IDS)


def test_sketches_equal_the_official_renderer_inputs(iplap_npz):
  targets = iplap_npz["renderer/in_target_sketches"][0].transpose(0, 2, 3, 1)
  for i, want in enumerate(targets):
    crop = iplap_npz["sketch/target_crop_hw"][i]
    assert lm.canvas_size(crop) == tuple(iplap_npz["sketch/target_canvas_hw"][i])
    got = lm.sketch(iplap_npz["sketch/target_full_landmarks_pred"][i], crop)
    assert got.shape == (128, 128, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  refs = iplap_npz["renderer/in_ref_sketches"][0].transpose(0, 2, 3, 1)
  for i, want in enumerate(refs):
    crop = iplap_npz["sketch/ref_crop_hw"][i]
    assert lm.canvas_size(crop) == tuple(iplap_npz["sketch/ref_canvas_hw"][i])
    got = lm.sketch(iplap_npz["sketch/ref_full_landmarks"][i], crop)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_points_outside_the_crop_are_not_drawn():
  pts = np.full((2, 131), 0.5, np.float32)
  pts[:, 0] = 1.5  # one pose point outside: its two edges vanish
  canvas = lm.draw_canvas(pts, (128, 128))
  assert canvas.max() == 224 and canvas.sum() > 0
  with pytest.raises(ValueError, match="131"):
    lm.draw_canvas(np.zeros((2, 10)), (128, 128))


def test_template_preprocessing_equals_the_official_code(iplap_npz):
  """Crop boxes, crop-normalised pose and content landmarks, mouth openness
  and the reference frames of the fixture's template video, from its mesh
  points."""
  mesh = iplap_npz["frames/mesh131"]
  hw = (256, 256)
  boxes = np.array([lm.crop_box(m, hw) for m in mesh])
  np.testing.assert_array_equal(boxes, iplap_npz["frames/box_y1y2x1x2"])
  pts = np.array([lm.crop_landmarks(m, hw, b) for m, b in zip(mesh, boxes)])
  np.testing.assert_allclose(pts[:, :, :lm.NUM_POSE], iplap_npz["frames/pose_landmarks"],
                             rtol=0, atol=1e-6)
  np.testing.assert_allclose(pts[:, :, lm.NUM_POSE:], iplap_npz["frames/content_landmarks"],
                             rtol=0, atol=1e-6)
  openness = np.array([lm.lip_openness(m) for m in mesh])
  np.testing.assert_allclose(openness, iplap_npz["frames/lip_dist"], rtol=1e-12)
  np.testing.assert_array_equal(lm.reference_frames(openness, 15),
                                iplap_npz["frames/nl_ref_frames"])
  np.testing.assert_array_equal(lm.reference_frames(openness, 25),
                                iplap_npz["frames/ref_img_frames"])


@pytest.mark.parametrize("end,steps", [(99, 15), (99, 25), (7, 25), (1000, 15),
                                       (24, 25), (3, 2), (0, 1)])
def test_reference_sampling_is_torch_linspace(end, steps):
  torch = pytest.importorskip("torch")
  want = torch.linspace(0, end, steps).int().numpy()
  np.testing.assert_array_equal(lm._torch_linspace_int(end, steps), want)  # pylint: disable=protected-access
