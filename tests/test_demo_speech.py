"""``dagan-jax demo speak`` / ``demo dub``: the command line, the plan of
stages and the small pieces, without running a demo (each is ~10 minutes
of CPU; they were run end to end by hand, see the README). What is
claimed: both sub-words parse and ``dagan-jax demo`` alone is still the
DaGAN demo; each training stage is exactly the ``dagan-jax train`` command
it prints, on the speech sample, the second stage reading what the first
wrote (Audio2Head: the prepared folder and audio2pose's run, keypoint count
of the renderer; IP_LAP: one prepared folder, the landmark run's network);
bad arguments are named errors; the dub's speech is its loudest stretch;
the first and last logged losses are what metrics.json reports
and the closing printout shows."""

from __future__ import annotations

import shlex

import numpy as np
import pytest

from dagan_jax import cli, config as config_lib, demo_speech
from dagan_jax.audio import io as audio_io
from dagan_jax.errors import ConfigError, DataError

SAMPLE = demo_speech.repo_root() / "data" / "speech_sample"


def _parse(*words):
  return cli.build_parser("demo").parse_args(["demo", *words])


def _train_args(stage):
  """The stage's printed command, parsed as `dagan-jax train` parses it."""
  words = shlex.split(stage.command())
  assert words[:2] == ["dagan-jax", "train"]
  args, extra = cli.build_parser("train").parse_known_args(words[1:])
  return args, config_lib.load_config(args.config, extra)


def test_sub_words_parse_and_the_plain_demo_is_unchanged():
  plain = _parse("--steps", "5")
  assert plain.demo_command is None and plain.steps == 5 and plain.out == "demo_out"
  speak = _parse("speak")
  assert (speak.demo_command, speak.out, speak.steps, speak.pose_steps,
          speak.kp_steps, speak.renderer) == ("speak", "demo_speak", 100, 100, 40, None)
  dub = _parse("dub", "--seconds", "2")
  assert (dub.demo_command, dub.out, dub.landmark_steps, dub.renderer_steps,
          dub.seconds) == ("dub", "demo_dub", 100, 16, 2.0)
  for flags in (["speak", "--kp-steps", "0"], ["dub", "--renderer-steps", "-1"]):
    with pytest.raises(ConfigError, match=flags[1]):
      plan = demo_speech.speak_plan if flags[0] == "speak" else demo_speech.dub_plan
      plan(_parse(*flags))
  with pytest.raises(ConfigError, match="--seconds"):
    demo_speech.dub_plan(_parse("dub", "--seconds", "0"))
  with pytest.raises(ConfigError, match="--seconds"):
    demo_speech.speak_plan(_parse("speak", "--seconds", "-1"))
  with pytest.raises(DataError, match="nowhere.mp4"):
    demo_speech.speak_plan(_parse("speak", "--source", "nowhere.mp4"))
  assert cli.main(["demo", "speak", "--renderer", "no/such/dir"]) == 2


def test_speak_plan_chains_renderer_audio2pose_audio2kp(tmp_path):
  out = tmp_path / "o"
  plan = demo_speech.speak_plan(_parse("speak", "--out", str(out), "--steps", "7",
                                       "--kp-steps", "3"))
  assert [s.name for s in plan] == ["renderer", "audio2pose", "audio2kp", "speak"]
  cfgs = {}
  for s in plan[:3]:
    args, cfgs[s.name] = _train_args(s)
    assert args.workdir == str(out / s.name) and args.max_steps == s.steps
    assert cfgs[s.name].dataset_params.root_dir == str(SAMPLE)
  assert [s.steps for s in plan[:3]] == [7, 100, 3]
  r, pose, kp = cfgs["renderer"], cfgs["audio2pose"], cfgs["audio2kp"]
  assert r.trainer == "talking_head" and list(r.dataset_params.frame_shape) == [64, 64, 3]
  assert r.train_params.eval_every == 7       # held-out L1 after training
  assert (pose.trainer, kp.trainer) == ("audio2pose", "audio2kp")
  assert pose.train_params.renderer == str(out / "renderer" / "model")
  assert not pose.train_params.prepared_dir     # the first stage prepares...
  assert kp.train_params.prepared_dir == str(out / "audio2pose" / "prepared")
  assert kp.train_params.speech_model == str(out / "audio2pose")   # ...and hands on
  k = r.model_params.common_params.num_kp
  assert pose.audio2head_params.audio2kp.num_kp == kp.audio2head_params.audio2kp.num_kp == k
  assert plan[3].workdir == out / "audio2kp" / "model"

  # --renderer: no renderer stage; keypoints counted from that model.
  model = tmp_path / "renderer" / "model"
  (model / "variables").mkdir(parents=True)
  small = config_lib.toy_model(config_lib.talking_head_config(), num_kp=6)
  (model / "config.yaml").write_text(config_lib.to_yaml(config_lib.from_dict(small)))
  plan = demo_speech.speak_plan(_parse("speak", "--out", str(out), "--renderer",
                                       str(tmp_path / "renderer")))
  assert [s.name for s in plan] == ["audio2pose", "audio2kp", "speak"]
  _, pose = _train_args(plan[0])
  assert pose.train_params.renderer == str(tmp_path / "renderer")
  assert pose.audio2head_params.audio2kp.num_kp == 6


def test_dub_plan_shares_one_prepared_folder(tmp_path):
  out = tmp_path / "d"
  plan = demo_speech.dub_plan(_parse("dub", "--out", str(out), "--landmark-steps", "9"))
  assert [s.name for s in plan] == ["prepare", "landmark", "renderer", "dub"]
  _, lm = _train_args(plan[1])
  args, rd = _train_args(plan[2])
  assert (lm.trainer, rd.trainer) == ("ip_lap_landmark", "ip_lap_renderer")
  assert lm.train_params.prepared_dir == rd.train_params.prepared_dir == str(plan[0].workdir)
  assert rd.train_params.landmark_model == str(out / "landmark")
  assert [plan[1].steps, args.max_steps] == [9, 16]
  assert rd.dataset_params.root_dir == str(SAMPLE)
  assert plan[3].workdir == out / "renderer" / "model"


def test_the_dub_takes_the_loudest_stretch_of_speech():
  rng = np.random.default_rng(0)
  x = rng.normal(0, 50, 48000).astype(np.int16)                # 3 s of hiss
  x[19200:19200 + 16000] += (8000 * np.sin(np.arange(16000) * 0.3)).astype(np.int16)
  assert demo_speech.loudest_window(x, 1.0) == 19200           # 1.20 s
  assert demo_speech.loudest_window(x[:8000], 1.0) == 0        # shorter than asked
  speech = audio_io.read_speech(SAMPLE / demo_speech.SPEECH)
  start, n = demo_speech.loudest_window(speech, 1.6), 25600
  energy = lambda a: float((a.astype(np.float64) ** 2).sum())  # noqa: E731
  # Against every start on the 40 ms grid, brute force.
  best = max(range(0, len(speech) - n + 1, 640),
             key=lambda k: energy(speech[k:k + n]))
  assert start == best

def test_losses_at_the_first_and_last_step_and_the_printout(tmp_path):
  from dagan_jax.training.monitor import Monitor
  mon = Monitor(tmp_path, total_steps=20, progress=False, enabled=True)
  # As IP_LAP's renderer: a warp-only phase, then terms that start later.
  for step, phase, terms in ((1, 0, {"perceptual_warp": 9.0}),
                             (10, 1, {"perceptual_warp": 7.0, "style": 3.0}),
                             (20, 1, {"perceptual_warp": 5.0, "style": 2.0})):
    mon.scalars(step, {**terms, "phase": phase, "steps_per_second": 3.0,
                       "skipped_clips": 0})
  mon.scalars(20, {"l1": 0.1}, prefix="eval")
  mon.close()
  first, last, since = demo_speech.losses_at_ends(tmp_path)
  assert first == {"step": 1, "perceptual_warp": 9.0, "phase": 0}
  assert last == {"step": 20, "perceptual_warp": 5.0, "style": 2.0, "phase": 1}
  assert since == {"perceptual_warp": [10, 7.0], "style": [10, 3.0]}
  assert demo_speech.losses_at_ends(tmp_path / "none") == ({}, {}, {})
  metrics = {"demo": "dub", "timing": {"total_s": 600.0},
             "stages": {"renderer": {"steps": 20, "seconds_in_all": 99.0,
                                     "last_step": last, "first_logged": since}},
             "dub": {"frames": 36, "frame_size": [256, 256], "speech_seconds": 1.6,
                     "seconds_including_compilation": 200.0,
                     "files": {"video": "o/dub.mp4"}}}
  text = demo_speech.format_summary(metrics, "o/metrics.json")
  assert "finished in 10.0 min" in text and "o/dub.mp4" in text
  assert "style 3 (step 10) -> 2" in text and "perceptual_warp 7 (step 10) -> 5" in text


def test_speak_summary_sheet():
  from dagan_jax.inference.speak import Speech
  rng = np.random.default_rng(1)
  t = 9
  boxes = np.zeros((t + 1, 256, 256), np.uint8)
  boxes[:, 100:150, 100] = 255
  speech = Speech(frames=rng.random((t, 64, 64, 3), np.float32),
                  kp_value=rng.uniform(-0.8, 0.8, (t, 10, 2)).astype(np.float32),
                  kp_jacobian=np.tile(np.eye(2, dtype=np.float32), (t, 10, 1, 1)),
                  poses=np.zeros((t + 1, 6), np.float32), boxes=boxes,
                  pitch_tracker="yin")
  source = rng.random((256, 256, 3), np.float32)
  sheet = demo_speech.speak_summary(source, source[::4, ::4], speech)
  # Two rows (boxes; frames) of 1 + 5 panels of 128 pixels, 2-pixel gaps.
  assert sheet.shape == (2 * 130 + 2, 6 * 130 + 2, 3)
  assert 0 <= sheet.min() and sheet.max() <= 1
  # Box column 2 of "pose 4" (frame 4 of 0, 2, 4, 6, 8): the drawn line,
  # halved by the enlargement to 128, below the caption strip.
  panel = sheet[2:130, 2 + 3 * 130:130 + 3 * 130]
  assert panel[60, 50].min() == 1.0 and panel[60, 60].max() == 0.0
