r"""Audio2Head's speech networks over a DaGAN / DaGAN++ / FOMM model trained
on VoxCeleb at 256x256.

Two stages, each a run of this config: `:audio2pose` (head poses from
speech and the identity image; targets: our face tools' head poses) and
`:audio2kp` (the default: the renderer's keypoints and Jacobians from
speech, pose boxes and the identity image; targets: the renderer's frozen
detector on the real frames). The renderer is not retrained. Sizes are the
released Audio2Head's: audio2kp with block_expansion 32, 5 levels, 64-frame
windows; audio2pose with ResNet-34 embeddings of 256 and a 2-layer LSTM;
15 keypoints (DaGAN's).

Commands (VoxCeleb clips with sound in FOMM's layout /data/vox/{train,test};
the renderer trained by configs/vox256_dagan.py in runs/vox256_dagan; the
face extra installed, and pyworld for Harvest, Audio2Head's pitch tracker):

  dagan-jax data check --root /data/vox --audio       # sound, lengths, lip sync
  dagan-jax data prepare --root /data/vox --layout vox --split train \
      --out /data/vox_a2h --pitch harvest --model runs/vox256_dagan/model
  dagan-jax train --config configs/audio2head_vox256.py:audio2pose \
      --workdir runs/a2h_vox_pose \
      --config.train_params.prepared_dir=/data/vox_a2h
  dagan-jax train --config configs/audio2head_vox256.py:audio2kp \
      --workdir runs/a2h_vox_kp \
      --config.train_params.prepared_dir=/data/vox_a2h \
      --config.train_params.speech_model=runs/a2h_vox_pose
  dagan-jax speak --checkpoint runs/a2h_vox_kp --source face.png \
      --audio speech.wav --out talk.mp4

The renderer is the model the keypoints were prepared with (the prepared
folder's manifest names it; train_params.renderer overrides it, and must
have the same model_params). Its config replaces this one's model_params
and frame shape; audio2head_params.audio2kp.num_kp must be its keypoint
count (15 here; --config.audio2head_params.audio2kp.num_kp=10 for a FOMM /
Audio2Head renderer), and the prepared pitch tracker this config's. Both
are checked before the first step.

Expect: the official code released inference only, so there are no
published training curves to match; the trainers' settings are ours
(dagan_jax.config.speech_train_params). Preparing costs about 12 minutes
per hour of video on 2 CPU cores (Harvest) plus the renderer's keypoints.
An epoch is 25 windows per speaker: VoxCeleb1's 1,211 training speakers
give about 7,600 audio2kp steps at batch 4 and 1,900 audio2pose steps at
batch 16, 20 epochs each. Watch train/kp_value (10 x the mean keypoint
L1 in [-1, 1] units: a one-pixel error at 256 reads 0.078) and the
audio2kp/samples pictures (predicted keypoints on the detector's), and
for audio2pose train/pose with motion_std and motion_velocity staying low
(the predicted head moves as much and as fast as real ones) and the red
(predicted) boxes moving with the green (real) ones in audio2pose/samples.
"""

from dagan_jax import config as config_lib


def get_config(arg=None):
  trainer = (arg or "audio2kp").strip()
  if trainer not in config_lib.SPEECH_TRAINERS:
    raise ValueError(f"configs/audio2head_vox256.py: unknown stage {trainer!r}; "
                     f"expected one of {config_lib.SPEECH_TRAINERS}")
  d = config_lib.speech_config(trainer)
  d["name"] = f"vox256_{trainer}"
  d["dataset_params"]["root_dir"] = "/data/vox"
  d["train_params"]["prepared_dir"] = "/data/vox_a2h"
  return config_lib.from_dict(d)
