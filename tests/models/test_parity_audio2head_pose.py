"""Parity of Audio2Head's head-pose predictor and pose boxes with the official code.

The fixture (``DAGAN_A2H_FIXTURE``, default ``../shared/fixtures/
audio2head_small``) holds the official checkpoint and the arrays the
official ``get_pose_from_audio`` and ``draw_annotation_box`` computed from
its ``source/image`` and ``audio/blocks``. The ``audio2pose`` state_dict is
converted with :func:`dagan_jax.convert.audio2pose.audio2pose_from_state_dict`
(the official network has fixed sizes; nothing depends on this fixture), the
module runs once on the fixture's inputs, and every stored intermediate must
agree to 1e-4 of max(1, max |official|) (float32 rounding; the official run
had autograd on, which moves its own numbers by ~1e-6). The boxes drawn from
the official poses must equal the official boxes pixel for pixel.
"""

from __future__ import annotations

import numpy as np
import pytest

#: Max abs error allowed, relative to max(1, max |official array|).
RTOL = 1e-4
#: Intermediates of ``audio2pose/`` compared (fixture name = ours).
INTERMEDIATES = ("em_img.layer4", "em_img", "em_audio.maxpool",
                 "em_audio.layer4", "em_audio", "lstm_out", "poses_norm")


def _check(name: str, got, want) -> float:
  got = np.asarray(got, np.float64)
  want = np.asarray(want, np.float64)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  scale = max(1.0, float(np.abs(want).max()))
  err = float(np.abs(got - want).max()) / scale
  assert err <= RTOL, f"{name}: max abs error {err * scale:.3g} > {RTOL} * {scale:.3g}"
  return err


def _to_fixture_layout(x: np.ndarray, want_shape: tuple[int, ...]) -> np.ndarray:
  """Our NHWC maps -> the fixture's NCHW; other arrays are reshaped to the
  fixture's shape (our (B, T, ...) for its (T, ...) with B = 1)."""
  x = np.asarray(x)
  if x.ndim == 4:
    x = x.transpose(0, 3, 1, 2)
  return x.reshape(want_shape)


@pytest.fixture(scope="module")
def a2p_run(a2h_npz, a2h_state_dicts):
  import jax
  import jax.numpy as jnp

  from dagan_jax.convert.audio2pose import audio2pose_from_state_dict
  module, variables = audio2pose_from_state_dict(a2h_state_dicts["audio2pose"],
                                                 source="audio2head.pth.tar")
  image = jnp.asarray(a2h_npz["source/image"].transpose(0, 2, 3, 1))
  audio = jnp.asarray(a2h_npz["audio/blocks"][None])
  fn = jax.jit(lambda v, i, a: module.apply(v, i, a, with_intermediates=True))
  poses, inter = fn(variables, image, audio)
  return {k: np.asarray(v) for k, v in inter.items()} | {"poses": np.asarray(poses)}


@pytest.mark.parametrize("name", INTERMEDIATES)
def test_audio2pose_intermediates(a2p_run, a2h_npz, name):
  want = a2h_npz[f"audio2pose/{name}"]
  _check(name, _to_fixture_layout(a2p_run[name], want.shape), want)


def test_audio2pose_rot_trans(a2p_run, a2h_npz):
  from dagan_jax.models.audio2pose import denormalize_pose
  rot, trans = denormalize_pose(a2p_run["poses"][0])
  _check("rot", rot, a2h_npz["audio2pose/rot"])
  _check("trans", trans, a2h_npz["audio2pose/trans"])


def test_denormalize_matches_official(a2h_npz):
  """The official constants and float32 arithmetic: bit for bit."""
  from dagan_jax.models.audio2pose import denormalize_pose
  rot, trans = denormalize_pose(a2h_npz["audio2pose/poses_norm"][0])
  assert rot.dtype == np.float32 and trans.dtype == np.float32
  np.testing.assert_array_equal(rot, a2h_npz["audio2pose/rot"])
  np.testing.assert_array_equal(trans, a2h_npz["audio2pose/trans"])


def test_pose_boxes_equal_official(a2h_npz):
  from dagan_jax.face.pose_boxes import pose_boxes
  want = a2h_npz["pose/boxes"]
  got = pose_boxes(a2h_npz["audio2pose/rot"], a2h_npz["audio2pose/trans"])
  assert got.dtype == np.float32 and got.shape == want.shape
  bad = int((got != want).sum())
  assert bad == 0, f"{bad} pixels differ from the official boxes"


def test_audio_blocks_match_fixture(a2h_npz):
  from dagan_jax.models.audio2pose import audio_blocks
  np.testing.assert_array_equal(audio_blocks(a2h_npz["audio/features"]),
                                a2h_npz["audio/blocks"])


@pytest.mark.parametrize("case", ["renamed", "missing_lstm", "misshaped_output",
                                  "extra"])
def test_checkpoint_mismatch_names_key(a2h_state_dicts, case):
  from dagan_jax.convert.audio2pose import convert_audio2pose
  from dagan_jax.errors import CheckpointMismatchError
  sd = dict(a2h_state_dicts["audio2pose"])
  if case == "renamed":
    sd["em_audio.resnet.layer3.5.bn2.wieght"] = sd.pop(
        "em_audio.resnet.layer3.5.bn2.weight")
    names = ("em_audio.resnet.layer3.5.bn2.wieght",
             "em_audio.resnet.layer3.5.bn2.weight")
  elif case == "missing_lstm":
    del sd["lstm.weight_hh_l1"]
    names = ("lstm.weight_hh_l1",)
  elif case == "misshaped_output":
    sd["output.weight"] = np.zeros((7, 256), np.float32)
    names = ("output.weight",)
  else:
    sd["lstm.weight_ih_l2"] = np.zeros((1024, 256), np.float32)
    names = ("lstm.weight_ih_l2",)
  with pytest.raises(CheckpointMismatchError) as info:
    convert_audio2pose(sd, source="audio2head.pth.tar")
  for name in names:
    assert name in str(info.value)


def test_conversion_layout(a2h_state_dicts):
  """Linear and LSTM weights are transposed, gate order kept (i, f, g, o)."""
  from dagan_jax.convert.audio2pose import convert_audio2pose
  sd = a2h_state_dicts["audio2pose"]
  variables, report = convert_audio2pose(sd)
  assert report.ok
  params = variables["params"]
  np.testing.assert_array_equal(params["lstm"]["kernel_ih_l0"],
                                sd["lstm.weight_ih_l0"].T)
  np.testing.assert_array_equal(params["lstm"]["bias_hh_l1"], sd["lstm.bias_hh_l1"])
  np.testing.assert_array_equal(params["output"]["kernel"], sd["output.weight"].T)
  np.testing.assert_array_equal(params["em_img"]["resnet"]["fc"]["kernel"],
                                sd["em_img.resnet.fc.weight"].T)
  np.testing.assert_array_equal(
      variables["batch_stats"]["em_audio"]["resnet"]["layer2_0"]["downsample_1"]["var"],
      sd["em_audio.resnet.layer2.0.downsample.1.running_var"])
