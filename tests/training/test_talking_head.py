"""The talking-head trainer: real steps on tiny configs (32x32 vox_mini frames)."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import traverse_util

from train_helpers import fixed_batch, run_steps, tiny_config
from dagan_jax import config as config_lib
from dagan_jax.errors import NonFiniteLossError
from dagan_jax.input import pipeline
from dagan_jax.models import build as build_lib
from dagan_jax.models.vgg import VGGFeatures
from dagan_jax.training import talking_head as th
from dagan_jax.training.checkpointing import Checkpointer
from dagan_jax.training.monitor import read_metrics


@pytest.mark.slow
def test_step_on_4_devices_equals_1_device(vox_root):
  """Data parallelism changes no number: same global batch, same key."""
  cfg = tiny_config(vox_root)
  batch = fixed_batch(cfg)
  m1, s1 = run_steps(cfg, jax.devices()[:1], batch)
  m4, s4 = run_steps(cfg, jax.devices()[:4], batch)
  # Step 1 (same parameters): losses agree to float precision; gradient
  # norms to ~1e-3, because a sub-ulp change in a forward value flips the
  # branch of a non-smooth op (grid_sample's floor, ReLU, max-pool) at a few
  # pixels. The synchronised BatchNorm gradient itself is exact
  # (test_sync_batchnorm.py).
  for k in m1[0]:
    rtol = 1e-2 if k.startswith("grad_norm") else 2e-4
    np.testing.assert_allclose(m1[0][k], m4[0][k], rtol=rtol, atol=1e-5, err_msg=k)
  # Step 2: Adam's first update is lr * sign(g), so gradient entries that are
  # float noise (conv biases in front of BatchNorm, whose true gradient is
  # 0) moved by +-lr; the losses still agree closely.
  assert m1[1]["finite"] == m4[1]["finite"] == 1.0
  for k in m1[1]:
    if not k.startswith("grad_norm"):
      np.testing.assert_allclose(m1[1][k], m4[1][k], rtol=5e-3, atol=1e-5, err_msg=k)
  # Parameters after the first update: identical but for entries whose
  # gradient is float noise, which Adam moves by +-lr either way.
  lr = cfg.train_params.lr_generator
  flat1 = traverse_util.flatten_dict(s1[0].params)
  flat4 = traverse_util.flatten_dict(s4[0].params)
  assert flat1.keys() == flat4.keys()
  diffs = np.concatenate([np.abs(np.ravel(flat1[k]) - np.ravel(flat4[k]))
                          for k in flat1])
  assert diffs.max() <= 2 * lr + 1e-6, diffs.max()
  assert np.mean(diffs <= 1e-6) > 0.98, np.mean(diffs <= 1e-6)
  # BatchNorm running statistics (synchronised over the 4 devices).
  np.testing.assert_allclose(
      np.concatenate([np.ravel(x) for x in jax.tree.leaves(s1[0].batch_stats)]),
      np.concatenate([np.ravel(x) for x in jax.tree.leaves(s4[0].batch_stats)]),
      rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_interrupted_run_resumes_exactly(tmp_path, vox_root):
  """Stop after step 2, resume: steps 3-4 equal those of the uninterrupted run."""
  import shutil
  cfg = tiny_config(vox_root)  # checkpoints at steps 2 and 4
  th.train_and_evaluate(cfg, tmp_path / "a", max_steps=4, progress=False)
  # The interrupted run: run "a" as it was right after saving step 2.
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  shutil.rmtree(tmp_path / "b" / "checkpoints" / "4")
  shutil.rmtree(tmp_path / "b" / "model")
  rows = [r for r in read_metrics(tmp_path / "b") if r["step"] <= 2]
  (tmp_path / "b" / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  summary = th.train_and_evaluate(cfg, tmp_path / "b", max_steps=4, progress=False)
  assert summary["step"] == 4
  assert any("resumed from" in n for n in summary["notes"])
  run_a = {r["step"]: r for r in read_metrics(tmp_path / "a")}
  run_b = {r["step"]: r for r in read_metrics(tmp_path / "b")}
  assert set(run_a) == set(run_b) == {1, 2, 3, 4}
  for step in (3, 4):
    for key in ("generator_total", "perceptual", "equivariance_value",
                "discriminator_total"):
      assert run_a[step][key] == run_b[step][key], (step, key)
  # The exported models are identical too.
  _, va = th.checkpoints.load_model(tmp_path / "a" / "model")
  _, vb = th.checkpoints.load_model(tmp_path / "b" / "model")
  for x, y in zip(jax.tree.leaves(va), jax.tree.leaves(vb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_non_finite_loss_stops_naming_step_and_term(tmp_path, vox_root):
  cfg = tiny_config(vox_root, overrides=["train_params.lr_generator=1e30",
                                         "train_params.checkpoint_every=1"])
  with pytest.raises(NonFiniteLossError) as err:
    th.train_and_evaluate(cfg, tmp_path, max_steps=5, progress=False)
  msg = str(err.value)
  assert "step 2" in msg and "generator_total" in msg, msg
  # Step 1 was good and is the last checkpoint; nothing later was written.
  ckpt = Checkpointer(tmp_path)
  assert ckpt.all_steps() == [1]
  ckpt.close()


def _write_yaml(cfg, path: pathlib.Path) -> pathlib.Path:
  path.write_text(config_lib.to_yaml(cfg))
  return path


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, vox_root):
  cfg = tiny_config(vox_root, overrides=["train_params.checkpoint_every=1000"])
  cfg_path = _write_yaml(cfg, tmp_path / "tiny.yaml")
  workdir = tmp_path / "run"
  proc = subprocess.Popen(
      [sys.executable, "-m", "dagan_jax.cli", "train", "--config", str(cfg_path),
       "--workdir", str(workdir), "--no-progress", "--max-steps", "1000"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 600
  try:
    while time.time() < deadline:
      steps = [r["step"] for r in read_metrics(workdir)]
      if steps and max(steps) >= 1:
        break
      assert proc.poll() is None, proc.stdout.read()
      time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, out
  assert "on signal" in out
  ckpt = Checkpointer(workdir)
  saved = ckpt.all_steps()
  ckpt.close()
  assert saved and 1 <= saved[-1] < 1000
  meta = json.loads((workdir / "model" / "model_info.json").read_text())
  assert meta["step"] == saved[-1]


@pytest.mark.slow
def test_bfloat16_compute_step_is_finite_and_close(vox_root):
  cfg = tiny_config(vox_root, overrides=["train_params.compute_dtype='bfloat16'"])
  batch = fixed_batch(cfg)
  m16, s16 = run_steps(cfg, jax.devices()[:1], batch, num_steps=1)
  assert m16[0]["finite"] == 1.0
  # Parameters stay float32; losses agree with float32 to bfloat16 precision.
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(s16[0].params))
  m32, _ = run_steps(tiny_config(vox_root), jax.devices()[:1], batch, num_steps=1)
  for k in ("perceptual", "equivariance_value", "gen_gan", "disc_gan"):
    np.testing.assert_allclose(m16[0][k], m32[0][k], rtol=0.05, err_msg=k)


def test_held_out_reconstruction_l1_runs_at_the_training_size(vox_root):
  """The trainer's eval resizes test clips as the input pipeline does and
  reports the copy-the-source baseline computed on the same frames."""
  import cv2
  from dagan_jax.training import evaluation as train_eval
  cfg = tiny_config(vox_root)
  task = th.make_task(cfg, global_batch_size=4, steps_per_epoch=1,
                      vgg=VGGFeatures(arch="vgg16"))
  frozen, _ = th.load_frozen(cfg, task)
  variables = build_lib.init_variables(task.models, jax.random.key(0),
                                       names=th.TRAINED)
  state = th.create_train_state(task, variables)
  res = train_eval.reconstruction_l1(cfg, task, state, frozen, num_videos=1,
                                     num_frames=2, batch_size=2)
  assert 0 < res["reconstruction_l1"] < 1
  name, clip = next(iter(pipeline.reconstruction_videos(vox_root, "test", limit=1)))
  n = len(clip)
  idx = [0] + [int(i) for i in np.unique(np.linspace(0, n - 1, 2).astype(int))]
  small = [cv2.resize((f * 255 + 0.5).astype(np.uint8), (32, 32),
                      interpolation=cv2.INTER_AREA) / 255.0
           for f in clip.read(idx)]
  expect = np.mean([np.abs(small[0] - f).mean() for f in small[1:]])
  np.testing.assert_allclose(res["copy_source_l1"], expect, rtol=1e-5)


@pytest.mark.slow
def test_joint_gradient_shares_discriminator_forward_and_equals_sequential(vox_root):
  """The step's joint gradient (one discriminator forward per image kind,
  shared by both updates) equals the official sequential form: generator
  gradient with the discriminator as a constant, then the discriminator's
  LSGAN gradient on the detached prediction."""
  # The perceptual and equivariance terms do not touch the discriminator;
  # without them the two programs compile in a fraction of the time.
  cfg = tiny_config(vox_root, overrides=[
      "train_params.loss_weights.perceptual=[0,0,0,0,0]",
      "train_params.loss_weights.equivariance_value=0",
      "train_params.loss_weights.equivariance_jacobian=0"])
  batch = {k: np.asarray(v) for k, v in fixed_batch(cfg).items()}
  task = th.make_task(cfg, global_batch_size=4, steps_per_epoch=10,
                      vgg=VGGFeatures(arch="vgg16"))
  assert task.use_gan and not task.use_equivariance
  frozen, _ = th.load_frozen(cfg, task)
  variables = build_lib.init_variables(task.models, jax.random.key(0), names=th.TRAINED)
  state = th.create_train_state(task, variables)
  assert "discriminator" not in state.batch_stats
  tps = th.ops.sample_tps(jax.random.key(3), 4, sigma_affine=0.05, sigma_tps=0.005,
                          points_tps=5)
  gen_only = {"kp_detector": state.params["kp_detector"],
              "generator": state.params["generator"]}

  @jax.jit
  def sequential():
    (g_total, (g_terms, _, pred, kp_drv)), g_grads = jax.value_and_grad(
        th.generator_loss_fn, has_aux=True)(gen_only, state, batch, tps, frozen, task)
    (d_total, _), d_grads = jax.value_and_grad(th.discriminator_loss_fn, has_aux=True)(
        state.params["discriminator"], state, batch["driving"], pred, kp_drv, task)
    return g_total, d_total, g_terms, {**g_grads, "discriminator": d_grads}

  @jax.jit
  def joint():
    (_, aux), grads = jax.value_and_grad(th.generator_loss_fn, has_aux=True)(
        {**gen_only, "discriminator": state.params["discriminator"]},
        state, batch, tps, frozen, task)
    return aux[5], aux[6], aux[0], grads

  seq_lowered, joint_lowered = sequential.lower(), joint.lower()
  want, got = seq_lowered.compile()(), joint_lowered.compile()()
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
  for k in want[2]:
    np.testing.assert_allclose(got[2][k], want[2][k], rtol=1e-5, err_msg=k)
  for name in ("generator", "kp_detector", "discriminator"):
    for (path, a), b in zip(traverse_util.flatten_dict(got[3][name]).items(),
                            traverse_util.flatten_dict(want[3][name]).values()):
      scale = max(float(np.abs(b).max()), 1e-3)
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale,
                                 err_msg=f"{name}/{'/'.join(path)}")
  # One discriminator forward per image kind: the joint program has fewer
  # convolutions than the sequential one.
  n_seq = seq_lowered.as_text().count("stablehlo.convolution")
  n_joint = joint_lowered.as_text().count("stablehlo.convolution")
  assert n_joint < n_seq, (n_joint, n_seq)


@pytest.mark.parametrize("kernels", ["xla", "cpu"])
def test_finite_check_and_grad_norm(kernels):
  """compute.global_norm and compute.all_finite, plain and by staged sums."""
  import jax.numpy as jnp
  import optax

  from dagan_jax import compute
  rng = np.random.default_rng(0)
  tree = {"big": jnp.asarray(rng.standard_normal((300, 400)).astype(np.float32)),
          "small": jnp.asarray(rng.standard_normal((7,)).astype(np.float32)),
          "scalar": jnp.float32(2.0)}
  np.testing.assert_allclose(float(compute.jit(compute.global_norm, kernels=kernels)(tree)),
                             float(optax.tree.norm(tree)), rtol=1e-6)
  assert bool(compute.jit(compute.all_finite, kernels=kernels)(tree))
  for leaf, bad in (("big", np.inf), ("big", np.nan), ("small", -np.inf),
                    ("scalar", np.nan)):
    broken = dict(tree)
    broken[leaf] = tree[leaf].at[(0,) * tree[leaf].ndim].set(bad) \
        if tree[leaf].ndim else jnp.float32(bad)
    assert not bool(compute.jit(compute.all_finite, kernels=kernels)(broken)), (leaf, bad)
