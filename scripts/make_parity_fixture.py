"""Writes a DaGAN parity fixture with the official code: any config, seed, inputs.

The parity tests (``tests/models/test_parity.py``) read a fixture folder named
by ``DAGAN_PARITY_FIXTURE``; ``../shared/fixtures/small`` is one. This script
writes another of the same layout from a local checkout of the official code
(harlanhong/CVPR2022-DaGAN) with torch and torchvision, so the tests can be
run on fixtures their tolerances were never tuned to: the official full-size
networks (``vox-adv-256.yaml``, 15 keypoints), other random weights, other
frames.

    python scripts/make_parity_fixture.py --official-dir ../CVPR2022-DaGAN \\
        --out /tmp/fixture_full --seed 7 --num-kp 15 \\
        --source-video ../shared/data/vox_mini/test/CLIP_A.mp4 \\
        --video ../shared/data/vox_mini/test/CLIP_B.mp4
    DAGAN_PARITY_FIXTURE=/tmp/fixture_full pytest tests/models/test_parity.py

Weights are torch's default initialisation with the normalisation layers made
non-trivial (BatchNorm running statistics and affine parameters, and the
attention's gamma, which starts at 0, drawn at random), so that no layer is
an identity. The arrays are those of ``../shared/fixtures/README.md``, NCHW as torch has
them: the networks' outputs, the keypoint detector's and dense-motion
network's internals, the generator's stage outputs the parity test forces
(``generator.attn_out``, ``generator.bottleneck_out``, ``generator.up_out``),
the driving frame's image pyramid and one random TPS of the equivariance
loss (``transform/*``).
The official modules run unmodified (``benchmarks/official_ab.py`` patches
only what needs a GPU or a download).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.official_ab import (  # noqa: E402
    _import_official, _official_config, stub_animate_imports)


def _randomise_norms(torch, module, gen) -> None:
  """BatchNorm / InstanceNorm affine and running statistics, and the
  attention's gamma, drawn away from their identity defaults."""
  for m in module.modules():
    if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)):
      if getattr(m, "weight", None) is not None:
        m.weight.data = 1 + 0.2 * torch.randn(m.weight.shape, generator=gen)
        m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)
      if getattr(m, "running_mean", None) is not None:
        m.running_mean.data = 0.1 * torch.randn(m.running_mean.shape, generator=gen)
        m.running_var.data = torch.exp(
            0.2 * torch.randn(m.running_var.shape, generator=gen))
  for name, p in module.named_parameters():
    if name.endswith("gamma"):
      p.data = 0.5 + 0.5 * torch.rand(p.shape, generator=gen)


def _frames(video: str, indices: list[int]) -> np.ndarray:
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel
  frames = media.read_frames(video, indices)  # (N, H, W, 3) uint8
  if frames.shape[1:3] != (256, 256):
    raise SystemExit(f"{video}: frames are {frames.shape[1:3]}, expected 256x256")
  return frames.astype(np.float32) / 255.0


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--official-dir", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--seed", type=int, default=7)
  p.add_argument("--num-kp", type=int, default=15)
  p.add_argument("--video", required=True, help="a 256x256 driving clip")
  p.add_argument("--source-video", default=None,
                 help="a 256x256 clip whose first frame is the source (default: --video)")
  p.add_argument("--frames", default="0,5,60",
                 help="source, initial driving and driving frame indices")
  args = p.parse_args(argv)
  out = pathlib.Path(args.out).absolute()
  video = str(pathlib.Path(args.video).absolute())
  source_video = str(pathlib.Path(args.source_video or args.video).absolute())
  (out / "depth").mkdir(parents=True, exist_ok=True)
  idx = [int(i) for i in args.frames.split(",")]
  images = np.concatenate([_frames(source_video, idx[:1]), _frames(video, idx[1:])])

  torch = _import_official(os.path.abspath(args.official_dir))
  stub_animate_imports()
  import yaml  # pylint: disable=import-outside-toplevel
  import depth  # pylint: disable=import-outside-toplevel,import-error
  import modules.generator as gen_lib  # pylint: disable=import-outside-toplevel,import-error
  from animate import normalize_kp  # pylint: disable=import-outside-toplevel,import-error
  from modules.discriminator import MultiScaleDiscriminator  # pylint: disable=import-outside-toplevel,import-error
  from modules.keypoint_detector import KPDetector  # pylint: disable=import-outside-toplevel,import-error

  cfg = _official_config(args.num_kp)
  mp = cfg["model_params"]
  torch.manual_seed(args.seed)
  gen = torch.Generator().manual_seed(args.seed)
  generator = gen_lib.DepthAwareGenerator(**mp["generator_params"], **mp["common_params"])
  discriminator = MultiScaleDiscriminator(**mp["discriminator_params"], **mp["common_params"])
  kp_common = dict(mp["common_params"], num_channels=4)
  kp_detector = KPDetector(**mp["kp_detector_params"], **kp_common)
  encoder = depth.ResnetEncoder(18, False)
  decoder = depth.DepthDecoder(num_ch_enc=encoder.num_ch_enc, scales=range(4))
  nets = (generator, discriminator, kp_detector, encoder, decoder)
  for net in nets:
    _randomise_norms(torch, net, gen)
    net.eval()

  # The generator's stage outputs, recorded as the parity test names them.
  rec: dict[str, torch.Tensor] = {}
  last_r = f"r{mp['generator_params']['num_bottleneck_blocks'] - 1}"
  generator.dense_motion_network.register_forward_hook(
      lambda m, i, o: rec.update(deformation=o["deformation"]))
  generator.AttnModule.register_forward_hook(
      lambda m, i, o: rec.update({"generator.attn_out": o[0],
                                  "generator.attention_rows": o[1][:, ::128, :]}))
  getattr(generator.bottleneck, last_r).register_forward_hook(
      lambda m, i, o: rec.update({"generator.bottleneck_out": o}))
  generator.up_blocks[-1].register_forward_hook(
      lambda m, i, o: rec.update({"generator.up_out": o}))

  # The keypoint detector's and the dense-motion network's internals.
  kp_rec: dict[str, torch.Tensor] = {}
  for mod, name in ((kp_detector.down, "down_out"), (kp_detector.predictor, "predictor_out"),
                    (kp_detector.kp, "kp_logits"), (kp_detector.jacobian, "jacobian_map")):
    mod.register_forward_hook(lambda m, i, o, name=name: kp_rec.update({name: o}))
  dense = generator.dense_motion_network
  dense.down.register_forward_hook(
      lambda m, i, o: rec.update({"dense_motion.down_out": o}))
  dense.hourglass.register_forward_hook(
      lambda m, i, o: rec.update({"dense_motion.hourglass_out": o}))

  def forward_all() -> dict:
    arrays: dict[str, np.ndarray] = {}
    names = ("source", "driving_initial", "driving")
    x = {n: torch.tensor(images[j].transpose(2, 0, 1)[None]) for j, n in enumerate(names)}
    with torch.no_grad():
      disp, kp = {}, {}
      for n in names:
        arrays[f"input/{n}"] = x[n]
        feats = encoder(x[n])
        d = decoder(feats)
        disp[n] = d[("disp", 0)]
        arrays[f"depth/{n}"] = disp[n]
        if n == "source":
          for s in (1, 2, 3):
            arrays[f"depth/source.disp{s}"] = d[("disp", s)]
          for i, f in enumerate(feats):
            if i < 2:
              arrays[f"depth/source.encoder_feature{i}.channel_mean"] = f.mean((2, 3))
            else:
              arrays[f"depth/source.encoder_feature{i}"] = f
        kp_rec.clear()
        kp[n] = kp_detector(torch.cat((x[n], disp[n]), 1))
        for k in ("value", "jacobian"):
          arrays[f"kp_{n}/{k}"] = kp[n][k]
        for k, v in kp_rec.items():
          arrays[f"kp_{n}/kp_detector.{k}"] = v
      kp_norm = normalize_kp(kp_source=kp["source"], kp_driving=kp["driving"],
                             kp_driving_initial=kp["driving_initial"],
                             use_relative_movement=True, use_relative_jacobian=True,
                             adapt_movement_scale=True)
      scale = (float(np.sqrt(_hull_area(kp["source"]) / _hull_area(kp["driving_initial"]))))
      for k in ("value", "jacobian"):
        arrays[f"kp_norm/{k}"] = kp_norm[k]
      arrays["kp_norm/adapt_movement_scale"] = np.float32(scale)
      for group, drv in (("gen_relative", kp_norm), ("gen_absolute", kp["driving"])):
        rec.clear()
        o = generator(x["source"], kp_driving=drv, kp_source=kp["source"],
                      source_depth=disp["source"], driving_depth=disp["driving"])
        for k in ("mask", "sparse_deformed", "occlusion_map", "deformed", "prediction"):
          arrays[f"{group}/{k}"] = o[k]
        for k, v in rec.items():
          arrays[f"{group}/{k}"] = v
      kp_d = {k: v.detach() for k, v in kp["driving"].items()}
      for group, img in (("disc_generated", arrays["gen_absolute/prediction"]),
                         ("disc_real", x["driving"])):
        maps = discriminator({"prediction_1": img}, kp=kp_d)
        for i, f in enumerate(maps["feature_maps_1"]):
          arrays[f"{group}/feature_map{i}"] = f
        arrays[f"{group}/prediction_map"] = maps["prediction_map_1"]
    return arrays

  # Heads rescaled so that their outputs have a set spread on these inputs
  # (with torch's default initialisation the keypoint heatmaps, masks and
  # attention are nearly uniform and the prediction nearly constant, which
  # would test little): in pipeline order, each conv's weight and bias are
  # scaled to a target standard deviation of its output and centred.
  heads = [*(decoder.convs[("dispconv", s)] for s in range(4))]
  heads += [kp_detector.kp, kp_detector.jacobian, generator.dense_motion_network.mask,
            generator.dense_motion_network.occlusion,
            generator.AttnModule.query_conv, generator.AttnModule.key_conv,
            generator.final]
  targets = [1.0] * 4 + [0.5, 0.1, 1.5, 1.0, 1.5, 1.5, 1.0]
  # The Jacobian head starts as the identity (zero weight, bias [1, 0, 0, 1]):
  # give it a random weight, and scale only that, around the identity.
  with torch.no_grad():
    kp_detector.jacobian.weight.normal_(generator=gen)
  for head, target in zip(heads, targets):
    conv = getattr(head, "conv", head)
    around_bias = conv is kp_detector.jacobian
    seen: list = []
    hook = conv.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    forward_all()
    hook.remove()
    outs = torch.cat([o.flatten() for o in seen])
    if around_bias:
      outs = torch.cat([(o - conv.bias.view(1, -1, 1, 1)).flatten() for o in seen])
    std, mean = float(outs.std()), float(outs.mean())
    with torch.no_grad():  # spread `target`, centred on 0 (or on the bias)
      conv.weight.mul_(target / std)
      if conv.bias is not None and not around_bias:
        conv.bias.sub_(mean).mul_(target / std)
  arrays = forward_all()

  # The image pyramid of the perceptual loss and one random TPS of the
  # equivariance loss (official modules/model.py), on the driving frame.
  from modules.model import ImagePyramide, Transform  # pylint: disable=import-outside-toplevel,import-error
  driving = torch.tensor(images[2].transpose(2, 0, 1)[None])
  with torch.no_grad():
    pyramid = ImagePyramide(cfg["train_params"]["scales"], 3)(driving)
  for scale in cfg["train_params"]["scales"]:
    if scale != 1:
      arrays[f"pyramid/driving.prediction_{scale}"] = pyramid[f"prediction_{scale}"]
  torch.manual_seed(args.seed + 1)
  tps = Transform(1, **cfg["train_params"]["transform_params"])
  kp_value = torch.tensor(np.asarray(arrays["kp_driving/value"]))
  arrays["transform/theta"] = tps.theta
  pts = cfg["train_params"]["transform_params"]["points_tps"]
  arrays["transform/control_points"] = tps.control_points.reshape(1, pts, pts, 2)
  arrays["transform/control_params"] = tps.control_params
  with torch.no_grad():
    arrays["transform/transformed_driving"] = tps.transform_frame(driving)
    arrays["transform/warp_kp_driving"] = tps.warp_coordinates(kp_value)
  arrays["transform/jacobian_at_kp_driving"] = tps.jacobian(kp_value.requires_grad_())
  arrays = {k: np.asarray(v.detach().numpy() if hasattr(v, "numpy") else v, np.float32)
            for k, v in arrays.items()}
  np.savez(out / "fixture.npz", **arrays)

  prefixed = lambda m: {f"module.{k}": v for k, v in m.state_dict().items()}  # noqa: E731
  torch.save({"generator": prefixed(generator), "kp_detector": prefixed(kp_detector),
              "discriminator": prefixed(discriminator), "epoch": 0},
             out / "dagan.pth.tar")
  torch.save({**encoder.state_dict(), "height": 256, "width": 256, "use_stereo": False},
             out / "depth" / "encoder.pth")
  torch.save(decoder.state_dict(), out / "depth" / "depth.pth")
  with open(out / "config.yaml", "w") as f:
    yaml.safe_dump(cfg, f)
  meta = {"preset": f"official vox-adv-256, {args.num_kp} keypoints",
          "kp_num": args.num_kp, "generator": "DepthAwareGenerator",
          "seed": args.seed, "depth_num_layers": 18, "torch": torch.__version__,
          "inputs": {"source": f"{os.path.basename(source_video)} frame {idx[0]}",
                     "driving": f"{os.path.basename(video)} frames {idx[1:]}"},
          "demo_flags": f"--relative --adapt_scale --kp_num {args.num_kp}",
          "attention_rows": "attention[:, ::128, :] of the (B, HW, HW) softmax matrix",
          "made_by": "scripts/make_parity_fixture.py",
          "param_counts": {name: sum(p.numel() for p in net.parameters())
                           for name, net in (("generator", generator),
                                             ("kp_detector", kp_detector),
                                             ("discriminator", discriminator),
                                             ("depth_encoder", encoder),
                                             ("depth_decoder", decoder))},
          "arrays": {k: list(v.shape) for k, v in arrays.items()}}
  (out / "meta.json").write_text(json.dumps(meta, indent=1))
  print(f"wrote {len(arrays)} arrays and the official checkpoints to {out}")
  return 0


def _hull_area(kp) -> float:
  from scipy.spatial import ConvexHull  # pylint: disable=import-outside-toplevel
  return float(ConvexHull(kp["value"][0].numpy()).volume)


if __name__ == "__main__":
  sys.exit(main())
