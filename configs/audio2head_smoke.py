r"""Audio2Head's speech networks on ../shared/data/av_mini, tiny, for CPU
smoke runs and the tests.

A 32x32 DaGAN renderer at test widths (4 keypoints; RANDOM weights unless
train_params.renderer names a model directory, whose model_params and frame
size are then used: set audio2head_params.audio2kp.num_kp to its keypoint
count), audio2kp at block_expansion 4, 2 levels, 8-frame windows, and
audio2pose with width-32 embeddings from ResNets of one basic block in
each of their first two layers (none in the last two), on 8-frame
windows; speech features with our YIN pitch tracker (no pyworld needed).
The clips are prepared on the fly into WORKDIR/prepared (speech features,
face mesh, crops, head poses and the renderer's keypoints), or read from a
folder `dagan-jax data prepare` wrote:

  dagan-jax data prepare --root ../shared/data/av_mini --split train \
      --out /tmp/av_prep --pitch yin --model RENDERER
  # then add --config.train_params.prepared_dir=/tmp/av_prep below

`configs/audio2head_smoke.py:audio2pose` trains audio2pose, the default
(`:audio2kp`) audio2kp. Both stages, the second reading the first's
prepared folder (and so its random renderer, which the manifest names)
and taking its network, so that its model/ holds every network `dagan-jax
speak` loads:

  dagan-jax train --config configs/audio2head_smoke.py:audio2pose \
      --workdir /tmp/a2h_pose --max-steps 200
  dagan-jax train --config configs/audio2head_smoke.py:audio2kp \
      --workdir /tmp/a2h_kp --max-steps 100 \
      --config.train_params.prepared_dir=/tmp/a2h_pose/prepared \
      --config.train_params.speech_model=/tmp/a2h_pose

`dagan-jax speak --checkpoint /tmp/a2h_kp` then speaks with it: a renderer
of any frame size works (the speech networks keep Audio2Head's 256x256
camera; frames come out at the renderer's size). `dagan-jax demo speak`
runs all of this over a briefly trained 64x64 DaGAN on data/speech_sample.
For real models use configs/audio2head_vox256.py (or a renderer of your
own).

Expect (measured on the 2-core CPU machine while other jobs ran, load
4-16, one device): the audio2pose run takes about 4 minutes (random
renderer 45 s, preparing av_mini's 32 clips 93 s, then 0.15 s/step); its
pose L1 falls from 0.16 to 0.10-0.13 and the motion terms from 0.04 to
about 0.01 by step 200. audio2kp is the heavy one: its 3-D hourglass runs
on 64 x 64 x 8 volumes whatever its width, about 0.5 s per window and 2 s
per step of 4 windows with a 26 s compile (load 4-7); kp_value (10 x the
keypoint L1) falls from 4.6 to 0.3-0.8 by step 100. With a random renderer
the targets barely move, so this checks the plumbing, not speech-driven
motion.
"""

import os

from dagan_jax import config as config_lib

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.normpath(os.path.join(_HERE, "..", "..", "shared", "data",
                                             "av_mini"))


def get_config(arg=None):
  trainer = (arg or "audio2kp").strip()
  if trainer not in config_lib.SPEECH_TRAINERS:
    raise ValueError(f"configs/audio2head_smoke.py: unknown stage {trainer!r}; "
                     f"expected one of {config_lib.SPEECH_TRAINERS}")
  d = config_lib.toy_model(config_lib.speech_config(trainer), frame=32)
  d["name"] = f"smoke_{trainer}"
  d["dataset_params"].update({"root_dir": DEFAULT_ROOT, "id_sampling": False})
  a2h = d["audio2head_params"]
  a2h["audio2kp"].update({"block_expansion": 4, "max_features": 16,
                          "num_blocks": 2, "seq_len": 8,
                          "num_kp": d["model_params"]["common_params"]["num_kp"]})
  a2h["audio2pose"] = {"embedding_dim": 32, "blocks": [1, 1, 0, 0]}
  a2h["pitch_tracker"] = "yin"
  tp = d["train_params"]
  tp.update({"batch_size": 4, "num_epochs": 1, "num_repeats": 25,
             "log_every": 5, "image_every": 100, "checkpoint_every": 100})
  if trainer == "audio2pose":
    tp.update({"window": 8, "learning_rate": 1.0e-3})
  else:
    tp["learning_rate"] = 3.0e-4
  return config_lib.from_dict(d)
