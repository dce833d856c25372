r"""Audio2Head's speech networks over a DaGAN / DaGAN++ model on HDTF at
256x256.

As configs/audio2head_vox256.py (two stages, `:audio2pose` and the default
`:audio2kp`; released Audio2Head sizes; the renderer's model_params and
frame shape taken from the model the keypoints were prepared with), on
HDTF: one speaker per video, so windows are drawn per clip
(id_sampling off), and an epoch is 25 windows per clip.

Commands (HDTF clips with sound in the HDTF layout /data/hdtf/{train,test},
a 256x256 renderer, e.g. configs/hdtf512_daganpp.py retrained with
--config.dataset_params.frame_shape='[256, 256, 3]', in runs/hdtf256):

  dagan-jax data check --root /data/hdtf --layout hdtf --audio
  dagan-jax data prepare --root /data/hdtf --layout hdtf --split train \
      --out /data/hdtf_a2h --pitch harvest --model runs/hdtf256/model
  dagan-jax train --config configs/audio2head_hdtf256.py:audio2pose \
      --workdir runs/a2h_hdtf_pose \
      --config.train_params.prepared_dir=/data/hdtf_a2h
  dagan-jax train --config configs/audio2head_hdtf256.py:audio2kp \
      --workdir runs/a2h_hdtf_kp \
      --config.train_params.prepared_dir=/data/hdtf_a2h \
      --config.train_params.speech_model=runs/a2h_hdtf_pose
  dagan-jax speak --checkpoint runs/a2h_hdtf_kp --source face.png \
      --audio speech.wav --out talk.mp4

Expect: no published Audio2Head numbers on HDTF (the paper trains on
VoxCeleb); HDTF's ~400 long, frontal, studio clips move the head less than
VoxCeleb, so expect smaller motion statistics (motion_std, motion_velocity
targets) and faster keypoint fits. What to watch: as the vox256 config.
"""

from dagan_jax import config as config_lib


def get_config(arg=None):
  trainer = (arg or "audio2kp").strip()
  if trainer not in config_lib.SPEECH_TRAINERS:
    raise ValueError(f"configs/audio2head_hdtf256.py: unknown stage {trainer!r}; "
                     f"expected one of {config_lib.SPEECH_TRAINERS}")
  d = config_lib.speech_config(trainer)
  d["name"] = f"hdtf256_{trainer}"
  d["dataset_params"].update({"root_dir": "/data/hdtf", "layout": "hdtf",
                              "id_sampling": False})
  d["train_params"]["prepared_dir"] = "/data/hdtf_a2h"
  return config_lib.from_dict(d)
