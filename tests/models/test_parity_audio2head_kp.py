"""Parity of Audio2Head's keypoint generator (official ``AudioModel3D``) and
of its window bookkeeping with the official numbers of the Audio2Head
fixture (``a2h_dir``; README there).

* The fixture's ``audio2kp`` state dict is converted strictly
  (:func:`dagan_jax.convert.audio2kp.convert_audio2kp`) into an
  :class:`~dagan_jax.models.audio2kp.Audio2KP` built from the config's
  ``parameters`` section.
* One batch runs every window the official code ran (``audio2kp/windows_audio``
  with the boxes of ``audio2kp/windows_pose_rows``) plus the window stored
  in ``audio2kp_window/*`` on its own stored inputs; every stored
  intermediate of that window and the keypoints / Jacobians of all windows
  must agree to RTOL of the array's magnitude (max abs error <= RTOL *
  max(1, max |official|), float32 rounding). The batch is cut into chunks of
  at most ``FRAMES_PER_BATCH`` frames (one compiled shape, the last chunk
  padded) so that the full-size configuration fits in memory too.
* The window plan, the window inputs and the stitching are numpy and must
  equal the fixture exactly; edge cases (T = 1, T < L, T = L, T = L + 1, ...)
  must give exactly T frames, frame t from video frame t.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from dagan_jax import compute
from dagan_jax.convert.audio2kp import convert_audio2kp
from dagan_jax.errors import CheckpointMismatchError
from dagan_jax.models import audio2kp as a2kp

#: Max abs error allowed, relative to max(1, max |official array|).
RTOL = 1e-4
#: Frames per compiled batch: 12 windows of the small fixture's L = 16 in
#: one batch, 3 windows of the official L = 64 (a few GB at full size).
FRAMES_PER_BATCH = 192
#: Intermediates of ``audio2kp_window`` stored as N C T H W volumes.
VOLUMES = ("volume", "hourglass_out")


def _assert_close(name: str, ours, official) -> float:
  ours, official = np.asarray(ours), np.asarray(official)
  assert ours.shape == official.shape, (name, ours.shape, official.shape)
  err = float(np.abs(ours.astype(np.float64) - official).max())
  scale = max(1.0, float(np.abs(official).max()))
  if os.environ.get("DAGAN_PARITY_VERBOSE"):
    print(f"{name}: max abs error {err:.3g}, relative {err / scale:.3g}")
  assert err <= RTOL * scale, f"{name}: max abs error {err:.3g} > {RTOL} * {scale:.3g}"
  return err / scale


def _official_layout(name: str, a: np.ndarray, seq_len: int) -> np.ndarray:
  """Our intermediate ``name`` (batch element 0) in the fixture's layout."""
  if name in ("embedding", "kp_logits"):  # (L, h, w, C) -> (L, C, h, w)
    return a.transpose(0, 3, 1, 2)
  if name in ("down_id", "down_pose"):  # (1, h, w, C) -> (1, C, h, w)
    return a.transpose(0, 3, 1, 2)
  if name in VOLUMES or name.startswith(("encoder.", "decoder.")):
    return a.transpose(0, 4, 1, 2, 3)  # N T H W C -> N C T H W
  raise KeyError(name)


@pytest.fixture(scope="module")
def model(a2h_config) -> a2kp.Audio2KP:
  return a2kp.Audio2KP.from_config(a2h_config["parameters"])


@pytest.fixture(scope="module")
def variables(model, a2h_state_dicts):
  variables, report = convert_audio2kp(a2h_state_dicts["audio2kp"], model)
  assert report.ok
  assert set(report.dropped) >= {"down_id.weight", "down_pose.weight"}
  return variables


@pytest.fixture(scope="module")
def run(model, variables, a2h_npz):
  """Keypoints of [stored window, every window run] and the stored window's
  intermediates (ours, batch element 0 only)."""
  z = a2h_npz
  L = model.seq_len
  boxes = z["pose/boxes"]
  audio = np.concatenate([z["audio2kp_window/audio"],
                          z["audio2kp/windows_audio"]])
  pose = np.concatenate([z["audio2kp_window/pose"],
                         boxes[z["audio2kp/windows_pose_rows"]]])
  n = audio.shape[0]
  chunk = max(1, min(n, FRAMES_PER_BATCH // L))
  image = z["source/image"].transpose(0, 2, 3, 1)

  def forward(v, a, p):
    ids = np.broadcast_to(image, (a.shape[0],) + image.shape[1:])
    out, state = model.apply(v, a, p, ids, mutable=["intermediates"])
    inter = a2kp.named_intermediates(state)
    # Element 0 only: (B, ...) arrays and the (B * L, ...) per-frame ones.
    inter = {k: (x[:L] if k in ("embedding", "kp_logits", "jacobian_map")
                 else x[:1]) for k, x in inter.items()}
    return out, inter

  fn = compute.jit(forward)
  values, jacobians, inter = [], [], None
  for lo in range(0, n, chunk):
    idx = np.minimum(np.arange(lo, lo + chunk), n - 1)  # pad: repeat last
    out, part = jax.device_get(fn(variables, audio[idx], pose[idx]))
    keep = min(chunk, n - lo)
    values.append(out["value"][:keep])
    jacobians.append(out["jacobian"][:keep] if "jacobian" in out else None)
    inter = part if inter is None else inter
  jac = None if jacobians[0] is None else np.concatenate(jacobians)
  return np.concatenate(values), jac, inter


def test_convert_keys(model, a2h_state_dicts, variables):
  """Every checkpoint key is used; only counters and buffers are dropped."""
  sd = a2h_state_dicts["audio2kp"]
  _, report = convert_audio2kp(sd, model)
  assert all(k.endswith(("num_batches_tracked", "down_id.weight",
                         "down_pose.weight")) for k in report.dropped)
  assert len(sd) - len(report.dropped) == \
      len(jax.tree_util.tree_leaves(variables))


def test_stored_window_intermediates(run, model, a2h_npz):
  z = a2h_npz
  L = model.seq_len
  _, _, inter = run
  names = [k[len("audio2kp_window/"):] for k in z.files
           if k.startswith("audio2kp_window/")]
  skip = {"index", "start", "audio", "pose", "value", "jacobian",
          "jacobian_map", "jacobian_map_frames"}
  checked = []
  for name in names:
    if name in skip:
      continue
    _assert_close(name, _official_layout(name, inter[name], L),
                  z[f"audio2kp_window/{name}"])
    checked.append(name)
  # Every encoder level and all decoder up-blocks but the last are stored.
  assert {"embedding", "down_id", "down_pose", "volume", "hourglass_out",
          "kp_logits"} <= set(checked)
  assert sum(n.startswith("encoder.down_blocks.") for n in checked) == \
      model.num_blocks
  assert sum(n.startswith("decoder.up_blocks.") for n in checked) == \
      model.num_blocks - 1
  # The last up-block is the first block_expansion channels of the output.
  last = inter[f"decoder.up_blocks.{model.num_blocks - 1}"]
  np.testing.assert_array_equal(
      last, inter["hourglass_out"][..., :model.block_expansion])
  if model.estimate_jacobian:
    frames = z["audio2kp_window/jacobian_map_frames"]
    jm = inter["jacobian_map"][frames]  # (n, h, w, 4K)
    n, h, w, _ = jm.shape
    jm = jm.reshape(n, h, w, model.num_kp, 4).transpose(0, 3, 4, 1, 2)
    _assert_close("jacobian_map", jm, z["audio2kp_window/jacobian_map"])


def test_stored_window_keypoints(run, a2h_npz):
  values, jacobians, _ = run
  _assert_close("value", values[:1], a2h_npz["audio2kp_window/value"])
  if jacobians is not None:
    _assert_close("jacobian", jacobians[:1], a2h_npz["audio2kp_window/jacobian"])


def test_all_windows(run, a2h_npz):
  values, jacobians, _ = run
  z = a2h_npz
  _assert_close("windows_value", values[1:], z["audio2kp/windows_value"])
  if jacobians is not None:
    _assert_close("windows_jacobian", jacobians[1:],
                  z["audio2kp/windows_jacobian"])
  # The stored window is one of them, on the same inputs.
  index = int(z["audio2kp_window/index"])
  np.testing.assert_array_equal(z["audio2kp/windows_audio"][index],
                                z["audio2kp_window/audio"][0])


def test_stitched_keypoints(run, model, a2h_npz):
  """Our windows, stitched, give the driving keypoints of every frame."""
  z = a2h_npz
  values, jacobians, _ = run
  T = z["kp_driving/value"].shape[0]
  plan = a2kp.window_plan(T, model.seq_len)
  value, jac = a2kp.stitch(values[1:], None if jacobians is None
                           else jacobians[1:], plan, T)
  _assert_close("kp_driving/value", value, z["kp_driving/value"])
  if jac is not None:
    _assert_close("kp_driving/jacobian", jac, z["kp_driving/jacobian"])


# --------------------------------------------------------------------------
# Windows (numpy, exact)

def test_window_plan_matches_fixture(a2h_npz, a2h_dir, model):
  z = a2h_npz
  T = z["audio/blocks"].shape[0]
  L = model.seq_len
  plan = a2kp.window_plan(T, L)
  meta = json.loads((a2h_dir / "meta.json").read_text())
  want = [(w["start"], *w["keep_local"]) for w in meta["windows"]["run"]]
  # The last window run may stop early: meta lists the official keep range.
  assert [p.start for p in plan] == [w[0] for w in want]
  assert [p.keep_lo for p in plan] == [w[1] for w in want]
  assert all(p.keep_hi <= w[2] for p, w in zip(plan, want))
  assert len(plan) == z["audio2kp/windows_audio"].shape[0]
  np.testing.assert_array_equal(a2kp.window_pose_rows(plan, L, T),
                                z["audio2kp/windows_pose_rows"])
  audio, pose = a2kp.window_inputs(z["audio/blocks"], z["pose/boxes"], plan, L)
  np.testing.assert_array_equal(audio, z["audio2kp/windows_audio"])
  np.testing.assert_array_equal(pose,
                                z["pose/boxes"][z["audio2kp/windows_pose_rows"]])
  index = int(z["audio2kp_window/index"])
  assert plan[index].start == int(z["audio2kp_window/start"])
  np.testing.assert_array_equal(audio[index], z["audio2kp_window/audio"][0])
  np.testing.assert_array_equal(pose[index], z["audio2kp_window/pose"][0])


def test_stitch_matches_fixture(a2h_npz, model):
  z = a2h_npz
  T = z["kp_driving/value"].shape[0]
  plan = a2kp.window_plan(T, model.seq_len)
  window, local = a2kp.frame_sources(plan)
  np.testing.assert_array_equal(window, z["kp_driving/window"])
  np.testing.assert_array_equal(local, z["kp_driving/local"])
  value, jac = a2kp.stitch(z["audio2kp/windows_value"],
                           z["audio2kp/windows_jacobian"], plan, T)
  np.testing.assert_array_equal(value, z["kp_driving/value"])
  np.testing.assert_array_equal(jac, z["kp_driving/jacobian"])


def _official_loop(T: int, L: int):
  """The official audio2head loop, simulated: windows built at
  range(0, T, L // 2); window b emits slots [0 or L//4, L//4*3) until T
  frames are out. Returns the (window, slot) of every emitted frame."""
  starts = list(range(0, T, L // 2))
  emitted = []
  for b, _ in enumerate(starts):
    lo = 0 if b == 0 else L // 4
    for j in range(lo, L // 4 * 3):
      emitted.append((b, j))
      if len(emitted) >= T:
        break
    if len(emitted) >= T:
      break
  return starts, emitted


def _check_plan(L: int) -> None:
  for T in sorted({1, 2, L // 4, L // 2, L * 3 // 4, L * 3 // 4 + 1, L - 1,
                   L, L + 1, 2 * L, 2 * L + 3, 5 * L + L // 2}):
    plan = a2kp.window_plan(T, L)
    window, local = a2kp.frame_sources(plan)
    starts, emitted = _official_loop(T, L)
    assert list(zip(window.tolist(), local.tolist())) == emitted, (L, T)
    assert [p.start for p in plan] == starts[:len(plan)]
    assert len(window) == T, (L, T)
    # Frame t of the video is frame t of the output.
    video = np.asarray([plan[w].start for w in window]) + local
    np.testing.assert_array_equal(video, np.arange(T))


@pytest.mark.parametrize("L", [4, 8, 16, 64])
def test_window_plan_edges(L):
  _check_plan(L)


def test_window_plan_edges_config(model):
  _check_plan(model.seq_len)


@pytest.mark.parametrize("T_of_L", ["1", "L-1", "L", "L+1"])
def test_window_inputs_padding(T_of_L, model):
  L = model.seq_len
  T = {"1": 1, "L-1": L - 1, "L": L, "L+1": L + 1}[T_of_L]
  rng = np.random.default_rng(T)
  blocks = rng.standard_normal((T, 4, 41)).astype(np.float32)
  boxes = rng.integers(0, 2, (T + 1, 8, 8)).astype(np.float32) * 255
  plan = a2kp.window_plan(T, L)
  audio, pose = a2kp.window_inputs(blocks, boxes, plan, L)
  assert audio.shape == (len(plan), L, 4, 41)
  assert pose.shape == (len(plan), L, 8, 8)
  for w, p in enumerate(plan):
    for j in range(L):
      t = p.start + j
      if t < T:
        np.testing.assert_array_equal(audio[w, j], blocks[t])
      else:
        assert not audio[w, j].any()
      np.testing.assert_array_equal(pose[w, j], boxes[min(t, T)])
  K = model.num_kp
  values = rng.standard_normal((len(plan), L, K, 2)).astype(np.float32)
  jacs = rng.standard_normal((len(plan), L, K, 2, 2)).astype(np.float32)
  value, jac = a2kp.stitch(values, jacs, plan, T)
  assert value.shape == (T, K, 2) and jac.shape == (T, K, 2, 2)
  window, local = a2kp.frame_sources(plan)
  np.testing.assert_array_equal(value, values[window, local])


def test_window_plan_rejects():
  with pytest.raises(ValueError, match="multiple of 4"):
    a2kp.window_plan(10, 6)
  assert a2kp.window_plan(0, 16) == []


@pytest.mark.parametrize("ksize,pad", [((7, 7, 7), (3, 0, 0)),
                                      ((3, 3, 3), (1, 1, 1))])
def test_conv3d_forms_agree(ksize, pad):
  """The plain 3-D convolution and the CPU form (depth taps as 2-D convs)."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 8, 12, 12, 5)).astype(np.float32)
  k = rng.standard_normal(ksize + (5, 4)).astype(np.float32)
  bias = rng.standard_normal(4).astype(np.float32)
  fn = lambda x, k, b: a2kp.conv3d(x, k, b, padding=pad)  # noqa: E731
  plain = np.asarray(compute.jit(fn, kernels="xla")(x, k, bias))
  cpu = np.asarray(compute.jit(fn, kernels="cpu")(x, k, bias))
  ref = np.zeros_like(plain)  # direct sum, float64
  xp = np.pad(x.astype(np.float64), [(0, 0)] + [(p, p) for p in pad] + [(0, 0)])
  kd, kh, kw = ksize
  for d in range(kd):
    for i in range(kh):
      for j in range(kw):
        win = xp[:, d:d + ref.shape[1], i:i + ref.shape[2], j:j + ref.shape[3]]
        ref += win @ k[d, i, j]
  ref += bias
  _assert_close("conv3d xla", plain, ref)
  _assert_close("conv3d cpu", cpu, ref)


# --------------------------------------------------------------------------
# Strict conversion

def test_mismatched_key_raises(model, a2h_state_dicts):
  sd = dict(a2h_state_dicts["audio2kp"])
  sd["kp.weights"] = sd.pop("kp.weight")
  with pytest.raises(CheckpointMismatchError) as err:
    convert_audio2kp(sd, model)
  msg = str(err.value)
  assert "kp.weights" in msg and "kp.weight:" in msg


def test_misshaped_and_buffer_errors(model, a2h_state_dicts):
  sd = dict(a2h_state_dicts["audio2kp"])
  w = sd["predictor.encoder.down_blocks.0.conv.weight"]
  sd["predictor.encoder.down_blocks.0.conv.weight"] = w[:, :, :, :, :2]
  sd["down_pose.weight"] = np.concatenate([sd["down_pose.weight"]] * 2)
  sd["down_id.weight"] = sd["down_id.weight"] * 2
  with pytest.raises(CheckpointMismatchError) as err:
    convert_audio2kp(sd, model)
  msg = str(err.value)
  assert "predictor.encoder.down_blocks.0.conv.weight" in msg
  assert "seq_len" in msg and "down_id.weight" in msg
