r"""IP_LAP (CVPR 2023) trained on HDTF with the official recipe.

The same two stages and numbers as configs/ip_lap_lrs2.py (landmark
generator: T = 5, Nl = 15, 4 layers, L1 + velocity on all content points,
Adam 1e-4, batch 128; renderer: 128x128 faces, 3 references, 26 warp-only
epochs, then VGG19 perceptual + Gram, LSGAN and feature matching with a
pix2pixHD discriminator, batch 96) on HDTF's frame folders
(``dataset_params.layout='hdtf'``: ``root/{train,test}/<Name>.mp4/`` with
the speech in a sidecar ``<Name>.wav`` beside each folder). The
official models are trained on LRS2 only and tested on HDTF (paper Table 1);
HDTF's long, high-resolution clips give fewer, larger faces: an epoch is
``num_repeats`` = 100 windows per clip here (one per clip, as for LRS2's
~46k clips, would make a few hundred records per epoch), for 200 landmark
and 40 renderer epochs (8 of them warp-only) -- our choice, not the paper's.

  dagan-jax data prepare --root /data/hdtf --layout hdtf --split train \
      --out /data/hdtf_prepared --pitch yin
  dagan-jax train --config configs/ip_lap_hdtf.py:landmark \
      --workdir runs/ip_lap_hdtf_landmark \
      --config.dataset_params.root_dir=/data/hdtf \
      --config.train_params.prepared_dir=/data/hdtf_prepared
  dagan-jax train --config configs/ip_lap_hdtf.py:renderer \
      --workdir runs/ip_lap_hdtf_renderer \
      --config.dataset_params.root_dir=/data/hdtf \
      --config.train_params.prepared_dir=/data/hdtf_prepared \
      --config.train_params.vgg19_weights=/weights/vgg19.pth \
      --config.train_params.landmark_model=runs/ip_lap_hdtf_landmark

The renderer run's model/ holds both networks (`dagan-jax dub --checkpoint
runs/ip_lap_hdtf_renderer ...`). Expect: no published HDTF-trained
numbers exist; the paper's HDTF test results of the LRS2 models (FID 31.41,
Table 1) are the reference. Train on accelerators (batch_size is global and
must divide by the device count).
"""

from dagan_jax import config as config_lib


def get_config(arg=None):
  stage = (arg or "landmark").strip()
  if stage not in ("landmark", "renderer"):
    raise ValueError(f"configs/ip_lap_hdtf.py: unknown stage {stage!r}; "
                     "expected 'landmark' or 'renderer'")
  d = config_lib.ip_lap_train_config(f"ip_lap_{stage}")
  d["name"] = f"ip_lap_hdtf_{stage}"
  # Frames are read at their own size and cropped per frame.
  d["dataset_params"].update({"root_dir": "/data/hdtf", "layout": "hdtf",
                              "id_sampling": False})
  tp = d["train_params"]
  tp["num_repeats"] = 100
  if stage == "landmark":
    tp["num_epochs"] = 200
  else:
    tp.update({"num_epochs": 40, "warp_phase_epochs": 8,
               "perceptual_backbone": "vgg19"})
  return config_lib.from_dict(d)
