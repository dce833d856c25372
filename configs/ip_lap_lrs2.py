r"""IP_LAP (CVPR 2023) on LRS2, the official training recipe of both stages.

``configs/ip_lap_lrs2.py:landmark`` (default): the Transformer landmark
generator (T = 5 frame windows, 15 reference landmark sets, d_model 512, 4
layers, 4 heads, feed-forward 1024, dropout 0.1), L1 + velocity loss over
all 57 lip and jaw points, Adam 1e-4, batch 128.
``configs/ip_lap_lrs2.py:renderer``: the renderer on 128x128 faces with 3
references per sample, 26 warp-only epochs, then the VGG19 perceptual
pyramid with the Gram term, LSGAN and feature matching against a pix2pixHD
discriminator (64 wide, 3 layers, 2 scales; Adam 1e-4, betas 0.5, 0.999),
batch 96. Faces are cropped per frame at the 131 IP_LAP points' box plus 5
pixels, as the official preprocessing; clips shorter than 25 frames are
skipped, as the official dataset does.

LRS2 (``mvlrs_v1``: ``main/<id>/<n>.mp4`` and ``filelists/train.txt``) is
read with ``dataset_params.layout='lrs2'``; the speech is the mp4's own
stream. Prepare once (face mesh and mel of every clip; about 12 min per
hour of video on 2 CPU cores, so spread it over machines or run it
overnight), then train the stages (either order; the second one's model/
holds both networks, which is what `dagan-jax dub` loads):

  dagan-jax data prepare --root /data/mvlrs_v1 --layout lrs2 --split train \
      --out /data/lrs2_prepared --pitch yin
  dagan-jax train --config configs/ip_lap_lrs2.py:landmark \
      --workdir runs/ip_lap_landmark \
      --config.dataset_params.root_dir=/data/mvlrs_v1 \
      --config.train_params.prepared_dir=/data/lrs2_prepared
  dagan-jax train --config configs/ip_lap_lrs2.py:renderer \
      --workdir runs/ip_lap_renderer \
      --config.dataset_params.root_dir=/data/mvlrs_v1 \
      --config.train_params.prepared_dir=/data/lrs2_prepared \
      --config.train_params.vgg19_weights=/weights/vgg19.pth \
      --config.train_params.landmark_model=runs/ip_lap_landmark
  dagan-jax dub --checkpoint runs/ip_lap_renderer --video template.mp4 \
      --audio speech.wav --out dubbed.mp4

Expect (the official README): the landmark generator's held-out L1 reaches
about 6e-3 (5.87e-3 at epoch 1837, 610k steps, under a day on one RTX
3090); the renderer learns until its FID stops falling (about 20), which
the official run reached on four RTX 3090s; its translation network (and
so the generated faces and FID) only improves after the 26 warp-only
epochs. The paper's LRS2 test numbers: SSIM 0.9399 (Table 1). The
batch_size is global and must divide by the device count; on CPUs the
renderer's step takes many seconds (measured for configs/ip_lap_smoke.py),
so train on accelerators.
"""

from dagan_jax import config as config_lib


def get_config(arg=None):
  stage = (arg or "landmark").strip()
  if stage not in ("landmark", "renderer"):
    raise ValueError(f"configs/ip_lap_lrs2.py: unknown stage {stage!r}; "
                     "expected 'landmark' or 'renderer'")
  d = config_lib.ip_lap_train_config(f"ip_lap_{stage}")
  d["name"] = f"ip_lap_lrs2_{stage}"
  # Frames are read at their own size (160x160 for LRS2) and cropped per
  # frame; frame_shape stays the schema's (it sizes only DaGAN's sections).
  d["dataset_params"].update({"root_dir": "/data/mvlrs_v1", "layout": "lrs2",
                              "id_sampling": False})
  d["train_params"]["skip_bad_data"] = True   # LRS2 has clips under 25 frames
  if stage == "renderer":
    d["train_params"]["perceptual_backbone"] = "vgg19"
  return config_lib.from_dict(d)
