"""``dagan-jax convert``: official PyTorch DaGAN checkpoints -> a model directory.

Example (the official demo's files)::

  dagan-jax convert --checkpoint DaGAN_vox_adv_256.pth.tar \\
      --depth-encoder depth/models/weights_19/encoder.pth \\
      --depth-decoder depth/models/weights_19/depth.pth \\
      --config config/vox-adv-256.yaml --out models/dagan_vox

  dagan-jax convert --checkpoint SPADE_DaGAN_vox_adv_256.pth.tar ... \\
      --set model_params.generator_type=SPADEDepthAwareGenerator

  dagan-jax convert --audio2head audio2head.pth.tar --out models/audio2head \\
      [--config config/vox-256.yaml --audio2kp-config config/parameters.yaml]

  dagan-jax convert --ip-lap-landmark landmarkgenerator_checkpoint.pth \\
      --ip-lap-renderer renderer_checkpoint.pth --out models/ip_lap

The result (``config.yaml`` + orbax ``variables/``, see
``dagan_jax.checkpoints``) is what every other command loads with
``--checkpoint DIR``. Matching is strict: a missing, unexpected or mis-shaped
key stops the conversion with a message naming every offending key.
"""

from __future__ import annotations

import argparse

HELP_EPILOG = """\
keys: the 'module.' prefix is stripped; num_batches_tracked, the anti-alias
buffers '*.down.weight' (checked against the config's scale_factor), the depth
encoder's 'encoder.fc.*' and monodepth2's 'height'/'width'/'use_stereo' are
dropped. Official YAML configs say num_kp: 10 while the released checkpoints
use 15 keypoints: pass --set model_params.common_params.num_kp=15 (or use the
default Python config). The default depth network is ResNet-18; for the
ResNet-50 depth weights pass --set model_params.depth_params.num_layers=50.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.formatter_class = argparse.RawDescriptionHelpFormatter
  parser.epilog = HELP_EPILOG
  parser.add_argument("--checkpoint", metavar="X.pth.tar",
                      help="official DaGAN checkpoint with 'generator', "
                           "'kp_detector' (and 'discriminator') state_dicts")
  parser.add_argument("--depth-encoder", metavar="encoder.pth",
                      help="monodepth2 ResNet encoder of the face depth network")
  parser.add_argument("--depth-decoder", metavar="depth.pth",
                      help="monodepth2 depth decoder of the face depth network")
  parser.add_argument("--pose-encoder", metavar="pose_encoder.pth",
                      help="Face-Depth-Network pose encoder (optional, for "
                           "depth training)")
  parser.add_argument("--pose-decoder", metavar="pose.pth",
                      help="Face-Depth-Network pose decoder with intrinsics head")
  parser.add_argument("--audio2head", metavar="X.pth.tar",
                      help="Audio2Head's checkpoint ('audio2pose', 'audio2kp', "
                           "'kp_detector', 'generator'); --config is then its "
                           "config/vox-256.yaml (default: the released sizes)")
  parser.add_argument("--audio2kp-config", metavar="parameters.yaml",
                      help="with --audio2head: its config/parameters.yaml")
  parser.add_argument("--ip-lap-landmark", metavar="L.pth",
                      help="IP_LAP's landmarkgenerator_checkpoint.pth (with "
                           "--ip-lap-renderer; sizes read from the file, "
                           "--set ip_lap_params.nhead=/T= for what it does "
                           "not record)")
  parser.add_argument("--ip-lap-renderer", metavar="R.pth",
                      help="IP_LAP's renderer_checkpoint.pth (with "
                           "--ip-lap-landmark)")
  parser.add_argument("--config", default=None,
                      help="config the weights belong to: an official YAML or a "
                           "dagan-jax Python config (required for DaGAN)")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE",
                      help="config override, e.g. model_params.common_params.num_kp=15 "
                           "(repeatable)")
  parser.add_argument("--out", required=True, metavar="DIR",
                      help="output model directory (config.yaml + variables/)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an existing model in DIR")
  parser.add_argument("--trust-pickle", action="store_true",
                      help="allow full unpickling of the .pth files (only for "
                           "files you trust); default: torch weights_only")


def convert_files(*, config, checkpoint: str | None = None,
                  depth_encoder: str | None = None,
                  depth_decoder: str | None = None,
                  pose_encoder: str | None = None,
                  pose_decoder: str | None = None,
                  trust_pickle: bool = False) -> dict:
  """Library entry point: files -> ``{network: variables}`` (numpy).

  ``config`` is a ConfigDict. Raises ``CheckpointMismatchError`` naming every
  offending key of every file.
  """
  from dagan_jax.convert import dagan
  from dagan_jax.convert.torch_to_flax import load_torch_file, raise_if_failed
  from dagan_jax.errors import ConfigError
  from dagan_jax.models.build import build_models

  if (pose_encoder is None) != (pose_decoder is None):
    raise ConfigError("give both --pose-encoder and --pose-decoder, or neither")
  if (depth_encoder is None) != (depth_decoder is None):
    raise ConfigError("give both --depth-encoder and --depth-decoder, or neither")
  if checkpoint is None and depth_encoder is None and pose_encoder is None:
    raise ConfigError("nothing to convert: give --checkpoint and/or "
                      "--depth-encoder/--depth-decoder")
  with_pose = pose_encoder is not None
  models = build_models(config, with_pose=with_pose)
  num_layers = int(config.model_params.depth_params.num_layers)
  gen_type = config.model_params.generator_type
  variables: dict = {}
  reports = []
  errors = []
  from dagan_jax.errors import CheckpointMismatchError

  def attempt(fn):
    try:
      out, reps = fn()
      variables.update(out)
      reports.extend(reps)
    except CheckpointMismatchError as e:
      errors.append(str(e))

  if checkpoint is not None:
    ckpt = load_torch_file(checkpoint, trust_pickle=trust_pickle)
    attempt(lambda: dagan.convert_dagan_checkpoint(
        ckpt, models, source=checkpoint, generator_type=gen_type))
  if depth_encoder is not None:
    enc = load_torch_file(depth_encoder, trust_pickle=trust_pickle)
    dec = load_torch_file(depth_decoder, trust_pickle=trust_pickle)
    attempt(lambda: dagan.convert_depth(
        enc, dec, models, num_layers=num_layers, encoder_source=depth_encoder,
        decoder_source=depth_decoder))
  if pose_encoder is not None:
    penc = load_torch_file(pose_encoder, trust_pickle=trust_pickle)
    pdec = load_torch_file(pose_decoder, trust_pickle=trust_pickle)
    attempt(lambda: dagan.convert_pose(
        penc, pdec, models, num_layers=num_layers, encoder_source=pose_encoder,
        decoder_source=pose_decoder))
  if errors:
    raise CheckpointMismatchError("\n".join(errors))
  raise_if_failed(reports)
  return variables


def _run_audio2head(args: argparse.Namespace) -> int:
  import os  # pylint: disable=import-outside-toplevel

  from dagan_jax.checkpoints import save_model  # pylint: disable=import-outside-toplevel
  from dagan_jax.config import apply_overrides, from_dict  # pylint: disable=import-outside-toplevel
  from dagan_jax.convert import audio2head  # pylint: disable=import-outside-toplevel
  from dagan_jax.convert.torch_to_flax import load_torch_file  # pylint: disable=import-outside-toplevel
  from dagan_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  if args.checkpoint or args.depth_encoder or args.pose_encoder:
    raise ConfigError("--audio2head converts Audio2Head's file alone; convert "
                      "DaGAN files in another call")
  if args.config:
    config = audio2head.config_from_yaml(args.config, args.audio2kp_config)
  else:
    parameters = None
    if args.audio2kp_config:
      import yaml  # pylint: disable=import-outside-toplevel
      with open(args.audio2kp_config) as f:
        parameters = yaml.safe_load(f)
    config = audio2head.official_config(None, parameters)
  if args.overrides:
    config = from_dict(apply_overrides(config, args.overrides).to_dict())
  ckpt = load_torch_file(args.audio2head, trust_pickle=args.trust_pickle)
  variables = audio2head.convert_audio2head(ckpt, config, source=args.audio2head)
  path = save_model(args.out, variables, config, overwrite=args.overwrite,
                    info={"converted_from": {"audio2head": os.path.abspath(args.audio2head)}})
  print(f"wrote {path}")
  return 0


def _run_ip_lap(args: argparse.Namespace) -> int:
  import os  # pylint: disable=import-outside-toplevel

  from dagan_jax.checkpoints import save_model  # pylint: disable=import-outside-toplevel
  from dagan_jax.convert import ip_lap  # pylint: disable=import-outside-toplevel
  from dagan_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  if not (args.ip_lap_landmark and args.ip_lap_renderer):
    raise ConfigError("IP_LAP needs both --ip-lap-landmark and --ip-lap-renderer")
  if args.checkpoint or args.depth_encoder or args.pose_encoder or \
      args.audio2head or args.config:
    raise ConfigError("--ip-lap-landmark/--ip-lap-renderer convert IP_LAP's "
                      "two files alone (sizes come from the files; use --set "
                      "ip_lap_params.KEY=VALUE), not with DaGAN or Audio2Head "
                      "files or --config")
  config, variables, notes = ip_lap.convert_files(
      args.ip_lap_landmark, args.ip_lap_renderer, overrides=args.overrides,
      trust_pickle=args.trust_pickle)
  info = {"converted_from": {
      "ip_lap_landmark": os.path.abspath(args.ip_lap_landmark),
      "ip_lap_renderer": os.path.abspath(args.ip_lap_renderer)}}
  path = save_model(args.out, variables, config, overwrite=args.overwrite,
                    info=info)
  p = config.ip_lap_params
  print(f"wrote {path} (landmark generator T={p.T}, nlayers={p.nlayers}, "
        f"nhead={p.nhead}, dim_feedforward={p.dim_feedforward}; Nl={p.Nl}, "
        f"N={p.N}, {p.img_size}x{p.img_size} faces)")
  for note in notes:
    print(f"  note: {note}")
  return 0


def run(args: argparse.Namespace) -> int:
  from dagan_jax.checkpoints import save_model
  from dagan_jax.config import load_config

  if args.audio2head:
    return _run_audio2head(args)
  if args.ip_lap_landmark or args.ip_lap_renderer:
    return _run_ip_lap(args)
  if not args.config:
    from dagan_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
    raise ConfigError("--config is required to convert DaGAN checkpoints")
  config = load_config(args.config, args.overrides)
  variables = convert_files(
      config=config, checkpoint=args.checkpoint,
      depth_encoder=args.depth_encoder, depth_decoder=args.depth_decoder,
      pose_encoder=args.pose_encoder, pose_decoder=args.pose_decoder,
      trust_pickle=args.trust_pickle)
  import os
  info = {"converted_from": {k: os.path.abspath(v) for k, v in (
      ("checkpoint", args.checkpoint), ("depth_encoder", args.depth_encoder),
      ("depth_decoder", args.depth_decoder), ("pose_encoder", args.pose_encoder),
      ("pose_decoder", args.pose_decoder)) if v}}
  path = save_model(args.out, variables, config, overwrite=args.overwrite,
                    info=info)
  import json
  counts = json.loads((path / "model_info.json").read_text())["param_counts"]
  print(f"wrote {path}")
  for name in sorted(counts):
    print(f"  {name}: {counts[name]:,} parameters")
  missing = [n for n in ("depth_encoder", "depth_decoder", "kp_detector",
                         "generator") if n not in variables]
  if missing:
    print(f"  note: no {', '.join(missing)} (animation needs them)")
  return 0
