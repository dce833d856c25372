"""IP_LAP's landmark generator against the official code (the ``lg/`` and
``lg_b2/`` groups of the IP_LAP fixture, ``DAGAN_IPLAP_FIXTURE``).

The fixture's checkpoint is converted strictly, the network is sized from
its state dict (``nhead`` from meta.json, as a state dict does not record
it), and every array the official forward produced is compared: encoder
embeddings, the shared LayerNorm's outputs, the transformer's input tokens
and every layer's output, both heads and the predicted content landmarks,
on the inference window (B = 1) and on the batch-2 call.

Bound: max abs error <= 1e-4 * max(1, max |official|) per array. The
encoders are deep stacks of conv + BatchNorm with per-layer gains of 3-20
in this fixture, which amplify float32 rounding: the official float32
encoder outputs themselves sit up to ~8e-5 from their float64 values, and
ours (float32, any kernel set) as far; the transformer and heads add
little (the output, ~1e-5, is the README's float64 floor).
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from dagan_jax.convert import ip_lap_landmark as conv
from dagan_jax.errors import CheckpointMismatchError
from dagan_jax.face import ip_lap_landmarks as landmarks
from dagan_jax.models import ip_lap_landmark as lg

torch = pytest.importorskip("torch")

#: Max abs error allowed, relative to max(1, max |official array|).
RTOL = 1e-4
CHECKPOINT = "landmarkgenerator_checkpoint.pth"
INPUTS = ("T_mels", "T_pose", "Nl_pose", "Nl_content")
#: Fixture arrays of the groups that are inputs or bookkeeping, not outputs.
NOT_COMPUTED = ("window_frames", "window_mel_chunk_index", "gt_content",
                "nl_ref_frames")


@pytest.fixture(scope="module")
def meta(iplap_dir) -> dict:
  with open(iplap_dir / "meta.json") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def state_dict(iplap_dir):
  ckpt = torch.load(iplap_dir / CHECKPOINT, map_location="cpu",
                    weights_only=False)
  return ckpt["state_dict"]


@pytest.fixture(scope="module")
def nhead(meta) -> int:
  args = meta.get("architecture", {}).get("landmark_generator_args", {})
  return int(args.get("nhead", conv.OFFICIAL_NHEAD))


@pytest.fixture(scope="module")
def model(state_dict, nhead):
  kwargs = conv.landmark_generator_kwargs_from_state_dict(state_dict,
                                                          nhead=nhead)
  module = lg.LandmarkGenerator(**kwargs)
  variables, report = conv.convert_landmark_generator(
      state_dict, module, source=CHECKPOINT)
  return module, variables, report


@pytest.fixture(scope="module")
def forward(model):
  module, _, _ = model

  def run(variables, *inputs):
    return module.apply(variables, *inputs, mutable=["intermediates"])

  return jax.jit(run)


def _check(group: str, npz, produced: dict[str, np.ndarray]) -> list[str]:
  """Compares every computed array of ``group``; returns the lines of a
  report (name, error, bound)."""
  keys = [k for k in npz.files if k.startswith(group + "/")]
  names = [k.split("/", 1)[1] for k in keys]
  computed = [n for n in names
              if not n.startswith("in_") and n not in NOT_COMPUTED]
  unknown = sorted(set(computed) - set(produced))
  assert not unknown, f"{group}: fixture arrays the port does not produce: {unknown}"
  lines, bad = [], []
  for name in computed:
    want = npz[f"{group}/{name}"]
    got = np.asarray(produced[name])
    assert got.shape == want.shape, (group, name, got.shape, want.shape)
    err = float(np.abs(got.astype(np.float64) - want).max())
    bound = RTOL * max(1.0, float(np.abs(want).max()))
    lines.append(f"{group}/{name}: {err:.3g} (bound {bound:.3g})")
    if not err <= bound:
      bad.append(lines[-1])
  assert not bad, "\n".join(bad)
  return lines


def _run(group: str, npz, model, forward) -> dict[str, np.ndarray]:
  _, variables, _ = model
  inputs = lg.from_official_inputs(*(npz[f"{group}/in_{k}"] for k in INPUTS))
  out, state = forward(variables, *inputs)
  produced = {path[-1]: np.asarray(v[0])
              for path, v in flatten_dict(state["intermediates"]).items()}
  produced["out_predict_content"] = np.asarray(lg.to_official_output(out))
  return produced


def test_converter_is_strict_and_complete(model, state_dict, meta):
  module, variables, report = model
  assert report.ok
  n_params = sum(np.size(x) for x in jax.tree_util.tree_leaves(
      variables["params"]))
  want = meta.get("architecture", {}).get("parameter_counts", {}).get(
      "landmark_generator")
  if want is not None:
    assert n_params == want
  # Only the step counters and the two positional tables are dropped.
  assert set(report.dropped) == set(conv.PE_BUFFERS) | {
      k for k in state_dict if k.endswith("num_batches_tracked")}
  # The fused projection is split in its row order.
  w = state_dict["fusion_transformer.transformer_encoder.layers.0."
                 "self_attn.in_proj_weight"].float().numpy()
  attn = variables["params"]["fusion_transformer"]["transformer_encoder"][
      "layers_0"]["self_attn"]
  d = w.shape[1]
  np.testing.assert_array_equal(attn["k_proj"]["kernel"], w[d:2 * d].T)
  assert all(np.asarray(x).dtype == np.float32
             for x in jax.tree_util.tree_leaves(variables))
  assert module.nlayers == len({k.split(".")[3] for k in state_dict
                                if k.startswith(conv.LAYER_PREFIX)})


def test_point_counts_are_the_face_modules():
  assert (lg.NUM_POSE, lg.NUM_CONTENT) == (landmarks.NUM_POSE,
                                           landmarks.NUM_CONTENT)
  assert lg.JAW_POINTS + lg.LIP_POINTS == lg.NUM_CONTENT


def test_checkpoint_file_loader(iplap_dir, state_dict):
  sd = conv.load_landmark_checkpoint(str(iplap_dir / CHECKPOINT))
  assert set(sd) == set(state_dict)
  key = "mel_encoder.0.conv_block.0.weight"
  assert sd[key].dtype == np.float32
  np.testing.assert_array_equal(sd[key], state_dict[key].float().numpy())


def test_positional_table_matches_the_checkpoint(state_dict):
  # A few float32 ulps of the argument p * w (libraries' sin, cos and exp
  # differ in the last bits), which grows with the position p.
  pe = state_dict["fusion_transformer.position_v.pe"].float().numpy()[0]
  n = pe.shape[0]
  bound = 4 * np.finfo(np.float32).eps * (1 + np.arange(n))[:, None]
  err = np.abs(lg.positional_table(n).astype(np.float64) - pe)
  assert np.all(err <= bound), float((err / bound).max())


def test_parity_inference_window(iplap_npz, model, forward):
  lines = _check("lg", iplap_npz, _run("lg", iplap_npz, model, forward))
  print("\n".join(lines))


def test_parity_batch_of_two(iplap_npz, model, forward):
  lines = _check("lg_b2", iplap_npz, _run("lg_b2", iplap_npz, model, forward))
  print("\n".join(lines))


def test_mismatched_keys_are_named(model, state_dict):
  module, _, _ = model
  abstract = lg.abstract_variables(module)
  sd = dict(state_dict)
  sd["mouth_keypoint_map.weight"] = sd.pop("mouse_keypoint_map.weight")
  sd["jaw_keypoint_map.bias"] = torch.zeros(7)
  sd["fusion_transformer.position_a.pe"] = sd[
      "fusion_transformer.position_a.pe"] * 2
  with pytest.raises(CheckpointMismatchError) as err:
    conv.convert_landmark_generator(sd, abstract, source="edited")
  msg = str(err.value)
  for key in ("mouse_keypoint_map.weight", "mouth_keypoint_map.weight",
              "jaw_keypoint_map.bias", "fusion_transformer.position_a.pe"):
    assert key in msg


def test_other_depth_is_diagnosed(model, state_dict):
  module, _, _ = model
  deeper = module.clone(nlayers=module.nlayers + 1)
  with pytest.raises(CheckpointMismatchError) as err:
    conv.convert_landmark_generator(state_dict, deeper)
  msg = str(err.value)
  assert f"layers.{module.nlayers}.self_attn.in_proj_weight" in msg
  assert "landmark_generator_kwargs_from_state_dict" in msg


def test_window_length_is_the_constructors(model):
  module, variables, _ = model
  inputs = lg.dummy_inputs(module.clone(T=module.T + 1))
  with pytest.raises(ValueError, match="T="):
    module.apply(variables, *inputs)
