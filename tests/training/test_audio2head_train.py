"""Audio2Head's speech-network trainers (audio2kp, audio2pose) on two real
av_mini clips prepared with a tiny random DaGAN (32x32, 4 keypoints), with
configs/audio2head_smoke.py's tiny networks: each learns one batch, a run
resumes exactly, a NaN in the data stops the run naming the term, inputs
are checked, and the command trains both stages into one model directory.

Steps of audio2kp cost about a second per window on 2 CPU cores (its
volume is 64 x 64 x seq_len whatever the network's width), so the tests
run as few of them as their claims need; the two trainers share the loop,
so exact resume is shown on the cheaper audio2pose."""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import sys

import jax
import numpy as np
import pytest

from dagan_jax import checkpoints, cli
from dagan_jax import config as config_lib
from dagan_jax.errors import ConfigError, NonFiniteLossError
from dagan_jax.face import mesh as mesh_lib
from dagan_jax.input import prepare
from dagan_jax.models import build as build_lib
from dagan_jax.training import audio2head, audio2kp, audio2pose, parallel
from dagan_jax.training.checkpointing import Checkpointer
from dagan_jax.training.monitor import Monitor, read_metrics

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "inference"))
from inference_helpers import save_tiny_model  # noqa: E402

pytestmark = pytest.mark.skipif(not mesh_lib.face_available(),
                                reason="the face extra is not installed")
REPO = pathlib.Path(__file__).parents[2]
SMOKE = REPO / "configs" / "audio2head_smoke.py"
CLIPS = ("grid_s1#bbaf2n.mp4", "grid_s1#bbaf3s.mp4")
STAGES = {"audio2kp": audio2kp, "audio2pose": audio2pose}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, shared_dir):
  """(root, prepared folder, tiny renderer, base): two clips prepared
  with the renderer's keypoints."""
  base = tmp_path_factory.mktemp("a2h")
  (base / "root" / "train").mkdir(parents=True)
  for name in CLIPS:
    shutil.copy(shared_dir / "data/av_mini/train" / name, base / "root" / "train" / name)
  model = save_tiny_model(base / "renderer")
  report = prepare.prepare_dataset(base / "root", base / "prepared",
                                   pitch_tracker="yin", model_dir=str(model),
                                   cache_dir=str(base / "cache"), progress=False,
                                   splits=("train",))
  assert report.ok and len(report.prepared) == len(CLIPS), report.format()
  return base / "root", base / "prepared", model, base


def overrides(prepared, prepared_dir=None) -> list[str]:
  root, out, _, base = prepared
  return [f"train_params.prepared_dir={prepared_dir or out}",
          f"dataset_params.root_dir={root}",
          f"dataset_params.cache_dir={base / 'cache'}",
          "train_params.log_every=1", "train_params.image_every=0",
          "train_params.checkpoint_every=1"]


def smoke_config(stage: str, prepared, *extra, prepared_dir=None):
  return config_lib.load_config(f"{SMOKE}:{stage}",
                                overrides(prepared, prepared_dir) + list(extra))


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_network_learns_one_batch(prepared, stage):
  """Eight steps on one real window (one device): every term finite, the
  loss falls."""
  module = STAGES[stage]
  cfg = smoke_config(stage, prepared)
  inputs = audio2head.resolve_inputs(cfg, prepared[3], module.STAGE)
  cfg = inputs.config
  # The renderer's model_params and frames replace the smoke config's.
  assert cfg.model_params.common_params.num_kp == 4
  assert list(cfg.dataset_params.frame_shape) == [32, 32, 3]
  batch = next(iter(audio2head.make_dataset(cfg, inputs.prepared_dir, module.STAGE,
                                            batch_size=1)))
  assert batch.pop("skipped").sum() == 0
  assert batch["a2h_audio"].shape == (1, 8, 4, 41) and batch["face_found"].all()
  if stage == "audio2kp":
    assert batch["boxes"].shape == (1, 8, 256, 256)
    assert set(np.unique(batch["boxes"])) == {0, 255}
    assert batch["kp_value"].shape == (1, 8, 4, 2)
  mesh = parallel.make_mesh(jax.devices()[:1])
  task = module.make_task(cfg, build_lib.build_models(cfg), 10)
  state = parallel.replicate(audio2head.init_state(task, jax.random.key(0)), mesh)
  step = audio2head.make_train_step(task, mesh)
  gbatch = parallel.global_batch(batch, mesh)
  totals = []
  for _ in range(8):
    state, metrics = step(state, gbatch)
    m = {k: float(v) for k, v in parallel.to_host(metrics).items()}
    assert m["finite"] == 1.0 and all(math.isfinite(v) for v in m.values()), m
    totals.append(m["total"])
  terms = {"audio2kp": ("kp_value", "kp_jacobian"),
           "audio2pose": ("pose", "motion_std", "motion_velocity")}[stage]
  assert set(terms) <= set(m)
  assert totals[-1] < 0.6 * totals[0], totals
  assert min(totals[4:]) < min(totals[:4]), totals


@pytest.mark.slow
def test_interrupted_run_resumes_exactly(prepared, tmp_path):
  """Stop after step 1, resume: step 2 (loss, parameters, BatchNorm
  statistics, data) equals the uninterrupted run's, on 4 devices."""
  cfg = smoke_config("audio2pose", prepared)
  a, b = tmp_path / "a", tmp_path / "b"
  summary = audio2pose.train_and_evaluate(cfg, a, max_steps=2, progress=False)
  assert summary["step"] == 2
  shutil.copytree(a, b)
  shutil.rmtree(b / "checkpoints" / "2")
  shutil.rmtree(b / "model")
  (b / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in read_metrics(b) if r["step"] == 1))
  summary = audio2pose.train_and_evaluate(cfg, b, max_steps=2, progress=False)
  assert any("resumed from" in n for n in summary["notes"])
  ra, rb = read_metrics(a)[-1], read_metrics(b)[-1]
  assert ra["step"] == rb["step"] == 2
  for key in ("total", "pose", "motion_std", "motion_velocity", "grad_norm"):
    assert ra[key] == rb[key], key
  _, va = checkpoints.load_model(a, required=("audio2pose",))
  _, vb = checkpoints.load_model(b, required=("audio2pose",))
  assert sorted(va) == sorted(vb)
  for x, y in zip(jax.tree.leaves(va), jax.tree.leaves(vb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_nan_in_the_data_stops_naming_the_term(prepared, tmp_path):
  _, out, _, _ = prepared
  bad = tmp_path / "prepared"
  shutil.copytree(out, bad)
  for f in (bad / "train").glob("*.npz"):
    with np.load(f) as z:
      arrays = {k: z[k] for k in z.files}
    arrays["kp_value"][:] = np.nan
    np.savez(f, **arrays)
  cfg = smoke_config("audio2kp", prepared, prepared_dir=bad)
  with pytest.raises(NonFiniteLossError) as err:
    audio2kp.train_and_evaluate(cfg, tmp_path / "run", max_steps=3, progress=False)
  msg = str(err.value)
  assert "step 1: non-finite" in msg and "kp_value" in msg, msg
  assert "kp_jacobian" not in msg, msg
  ckpt = Checkpointer(tmp_path / "run")
  assert ckpt.all_steps() == []
  ckpt.close()


def test_inputs_are_checked(prepared, tmp_path):
  cfg = smoke_config("audio2kp", prepared, "audio2head_params.audio2kp.num_kp=5")
  with pytest.raises(ConfigError, match=r"num_kp is 5 but the prepared keypoints"
                     r" .* have K = 4"):
    audio2kp.train_and_evaluate(cfg, tmp_path / "k", max_steps=1, progress=False)
  cfg = smoke_config("audio2pose", prepared, "audio2head_params.pitch_tracker=harvest")
  with pytest.raises(ConfigError, match="prepared with 'yin'"):
    audio2pose.train_and_evaluate(cfg, tmp_path / "p", max_steps=1, progress=False)
  # Keypoints prepared with a model other than the renderer (as the
  # manifest records it).
  _, out, renderer, _ = prepared
  other = tmp_path / "other"
  shutil.copytree(out, other)
  manifest = json.loads((other / prepare.MANIFEST).read_text())
  manifest["tools"]["model"]["model_params_sha"] = "0" * 16
  (other / prepare.MANIFEST).write_text(json.dumps(manifest))
  cfg = smoke_config("audio2kp", prepared, f"train_params.renderer={renderer}",
                     prepared_dir=other)
  with pytest.raises(ConfigError, match="must learn its own renderer's keypoints"):
    audio2kp.train_and_evaluate(cfg, tmp_path / "r", max_steps=1, progress=False)


@pytest.mark.slow
def test_command_trains_both_stages_into_one_model(prepared, tmp_path, monkeypatch):
  """`dagan-jax train` with the smoke config: audio2pose, then audio2kp with
  the first run's network; the second model directory has every network
  `dagan-jax speak` loads, and both runs wrote their pictures."""
  _, _, renderer, _ = prepared
  images = []
  monkeypatch.setattr(Monitor, "image", lambda self, step, tag, image:
                      images.append((step, tag, np.asarray(image).shape)))

  def train(stage, workdir, *extra):
    argv = ["train", "--config", f"{SMOKE}:{stage}", "--workdir", str(workdir),
            "--max-steps", "1", "--no-progress"]
    argv += [f"--config.{o}" for o in overrides(prepared)]
    argv += ["--config.train_params.image_every=1"] + [f"--config.{e}" for e in extra]
    assert cli.main(argv) == 0

  train("audio2pose", tmp_path / "pose")
  train("audio2kp", tmp_path / "kp", f"train_params.speech_model={tmp_path / 'pose'}")
  assert [(s, t) for s, t, _ in images] == [(1, "audio2pose/samples"),
                                            (1, "audio2kp/samples")]
  speak_networks = ("audio2pose", "audio2kp", "kp_detector", "generator",
                    "depth_encoder", "depth_decoder")
  cfg, final = checkpoints.load_model(tmp_path / "kp", required=speak_networks)
  assert sorted(final) == sorted(speak_networks)
  assert cfg.trainer == "audio2kp" and cfg.audio2head_params.pitch_tracker == "yin"
  _, pose_model = checkpoints.load_model(tmp_path / "pose", required=("audio2pose",))
  _, tiny = checkpoints.load_model(renderer)
  for got, want in ((final["audio2pose"], pose_model["audio2pose"]),
                    (final["kp_detector"], tiny["kp_detector"]),
                    (final["generator"], tiny["generator"])):
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  rows = read_metrics(tmp_path / "pose")
  assert rows[-1]["step"] == 1 and math.isfinite(rows[-1]["motion_velocity"])
