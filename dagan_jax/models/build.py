"""Build DaGAN's networks from a config and run them as pure functions.

``build_models(config)`` reads ``config.model_params`` the way the official
``run.py`` / ``demo.py`` do:

* ``kp_detector = KPDetector(**kp_detector_params, **common_params)`` with
  ``num_channels + 1`` inputs when ``kp_detector_params.use_depth`` (RGB +
  depth, official ``--rgbd``);
* ``generator = <generator_type>(**generator_params, **common_params)``;
* ``discriminator = MultiScaleDiscriminator(**discriminator_params,
  **common_params)``;
* the depth network: ``ResnetEncoder(depth_params.num_layers)`` and
  ``DepthDecoder(scales=depth_params.scales)``;
* optionally (``with_pose=True``) Face-Depth-Network's pose encoder/decoder;
* with an ``audio2head_params`` section, Audio2Head's speech networks:
  ``audio2pose = Audio2Pose(**audio2head_params.audio2pose)`` (released:
  ResNet-34, width 256) and ``audio2kp =
  Audio2KP(**audio2head_params.audio2kp)``, whose keypoints drive this
  config's generator (so their ``num_kp`` must agree);
* with an ``ip_lap_params`` section, IP_LAP's two networks:
  ``ip_lap_landmark = LandmarkGenerator(T, d_model, nlayers, nhead,
  dim_feedforward)`` and ``ip_lap_renderer = Renderer()`` (its sizes fixed
  but for the ``T`` target sketches it stacks, ``img_size`` square faces).

Variables are kept per network: ``variables[name] = {'params': ...,
'batch_stats': ...}`` with ``name`` one of :data:`NETWORKS` (a network
without state has only ``'params'``). Every function here is pure and
jittable (close over ``models``): eval mode unless noted; pass
``mutable=['batch_stats']`` through ``module.apply`` yourself for training.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax.errors import ConfigError
from dagan_jax.models.audio2kp import Audio2KP
from dagan_jax.models.audio2pose import Audio2Pose
from dagan_jax.models.audio2pose import example_inputs as audio2pose_inputs
from dagan_jax.models.depth import DepthDecoder, ResnetEncoder, num_ch_enc
from dagan_jax.models.discriminator import MultiScaleDiscriminator
from dagan_jax.models import ip_lap_landmark
from dagan_jax.models import ip_lap_renderer
from dagan_jax.models import generator as generator_lib
from dagan_jax.models import geometry_generator
from dagan_jax.models.keypoint_detector import KPDetector
from dagan_jax.models.pose import PoseDecoder, PoseEncoder

Array = jax.Array
Variables = dict[str, Any]

#: Networks of a DaGAN checkpoint, in a fixed order.
NETWORKS = ("depth_encoder", "depth_decoder", "kp_detector", "generator",
            "discriminator")
#: Optional networks (depth training only).
POSE_NETWORKS = ("pose_encoder", "pose_decoder")
#: Audio2Head's speech networks (configs with ``audio2head_params``).
AUDIO_NETWORKS = ("audio2pose", "audio2kp")
#: IP_LAP's networks (configs with ``ip_lap_params``).
IP_LAP_NETWORKS = ("ip_lap_landmark", "ip_lap_renderer")
#: Keys of ``ip_lap_params`` (defaults: :func:`dagan_jax.config.ip_lap_params`).
_IP_LAP_KEYS = {"T", "d_model", "nlayers", "nhead", "dim_feedforward", "Nl",
                "N", "img_size", "mel_step", "fps"}

#: Generator classes by ``model_params.generator_type``: DaGAN's two and
#: DaGAN++'s geometry-enhanced one.
GENERATOR_REGISTRY: dict[str, type[nn.Module]] = {
    **generator_lib.GENERATORS, **geometry_generator.GENERATORS}

_KP_KEYS = {"block_expansion", "num_kp", "num_channels", "max_features",
            "num_blocks", "temperature", "estimate_jacobian", "scale_factor",
            "single_jacobian_map", "pad"}
_GEN_KEYS = {"num_channels", "num_kp", "block_expansion", "max_features",
             "num_down_blocks", "num_bottleneck_blocks", "estimate_occlusion_map",
             "dense_motion_params", "estimate_jacobian"}
_DM_KEYS = {"block_expansion", "num_blocks", "max_features", "scale_factor",
            "kp_variance"}
_DISC_KEYS = {"scales", "num_channels", "block_expansion", "num_blocks",
              "max_features", "sn", "use_kp", "num_kp", "kp_variance"}


@dataclasses.dataclass(frozen=True)
class Models:
  """The linen modules of one DaGAN model (no parameters inside).

  Attributes:
    depth_encoder, depth_decoder: the face depth network.
    kp_detector: keypoint detector (sees RGB + depth when ``use_depth``).
    generator: DepthAwareGenerator / SPADEDepthAwareGenerator.
    discriminator: MultiScaleDiscriminator.
    pose_encoder, pose_decoder: Face-Depth-Network pose net, or None.
    audio2pose, audio2kp: Audio2Head's speech networks, or None.
    ip_lap_landmark, ip_lap_renderer: IP_LAP's landmark generator and
      renderer, or None.
    ip_lap_img_size: the renderer's face size (``ip_lap_params.img_size``).
    use_depth: the detector input is ``cat(RGB, disp0)``.
    frame_shape: ``(H, W, C)`` of the frames (``dataset_params.frame_shape``).
  """
  depth_encoder: ResnetEncoder
  depth_decoder: DepthDecoder
  kp_detector: KPDetector
  generator: nn.Module
  discriminator: MultiScaleDiscriminator
  pose_encoder: PoseEncoder | None = None
  pose_decoder: PoseDecoder | None = None
  audio2pose: Audio2Pose | None = None
  audio2kp: Audio2KP | None = None
  ip_lap_landmark: ip_lap_landmark.LandmarkGenerator | None = None
  ip_lap_renderer: ip_lap_renderer.Renderer | None = None
  ip_lap_img_size: int = 128
  use_depth: bool = True
  frame_shape: tuple[int, int, int] = (256, 256, 3)

  def networks(self) -> dict[str, nn.Module]:
    """Name -> module of every network built (pose nets only if present)."""
    out = {name: getattr(self, name) for name in NETWORKS}
    for name in POSE_NETWORKS + AUDIO_NETWORKS + IP_LAP_NETWORKS:
      if getattr(self, name) is not None:
        out[name] = getattr(self, name)
    return out


def _plain(d: Any) -> dict[str, Any]:
  if d is None:
    return {}
  return d.to_dict() if hasattr(d, "to_dict") else dict(d)


def _check_keys(section: str, d: Mapping[str, Any], allowed: set[str]) -> None:
  unknown = sorted(set(d) - allowed)
  if unknown:
    raise ConfigError(
        f"{section}: unknown key(s) {unknown}; the network accepts "
        f"{sorted(allowed)}")


def build_models(config: Any, *, with_pose: bool = False,
                 attention_implementation: str = "auto") -> Models:
  """Builds every network of ``config`` (a DaGAN config, see ``config.py``).

  Args:
    config: ConfigDict (or dict) with ``model_params`` and ``dataset_params``.
    with_pose: also build the pose encoder/decoder (depth training).
    attention_implementation: of the generator's depth-aware attention
      (see :func:`dagan_jax.ops.attention.attention`).
  Raises:
    ConfigError: unknown generator type or section keys, bad depth layers.
  """
  mp = config["model_params"]
  common = _plain(mp["common_params"])
  kp_params = _plain(mp["kp_detector_params"])
  gen_params = _plain(mp["generator_params"])
  disc_params = _plain(mp["discriminator_params"])
  depth_params = _plain(mp.get("depth_params", {}))
  use_depth = bool(kp_params.pop("use_depth", True))
  gen_type = mp.get("generator_type", "DepthAwareGenerator")
  if gen_type not in GENERATOR_REGISTRY:
    raise ConfigError(
        f"model_params.generator_type is {gen_type!r}; this build knows "
        f"{sorted(GENERATOR_REGISTRY)}")
  num_layers = int(depth_params.get("num_layers", 18))
  if num_layers not in (18, 50):
    raise ConfigError(f"model_params.depth_params.num_layers is {num_layers!r}; "
                      "expected 18 or 50")
  scales = tuple(int(s) for s in depth_params.get("scales", (0, 1, 2, 3)))

  kp_args = {**kp_params, **common}
  kp_args["num_channels"] = int(common["num_channels"]) + (1 if use_depth else 0)
  _check_keys("model_params.kp_detector_params", kp_args, _KP_KEYS)
  kp_detector = KPDetector(**kp_args)

  gen_args = {**gen_params, **common}
  _check_keys("model_params.generator_params", gen_args,
              _GEN_KEYS | frozenset(getattr(GENERATOR_REGISTRY[gen_type],
                                            "EXTRA_CONFIG_KEYS", ())))
  dm = gen_args.get("dense_motion_params")
  if dm is not None:
    dm = _plain(dm)
    _check_keys("model_params.generator_params.dense_motion_params", dm, _DM_KEYS)
    gen_args["dense_motion_params"] = dm
  generator = GENERATOR_REGISTRY[gen_type](
      attention_implementation=attention_implementation, **gen_args)

  disc_args = {**disc_params, **common}
  disc_args.pop("estimate_jacobian", None)
  _check_keys("model_params.discriminator_params", disc_args, _DISC_KEYS)
  disc_args["scales"] = tuple(disc_args.get("scales", (1,)))
  discriminator = MultiScaleDiscriminator(**disc_args)

  frame_shape = tuple(int(v) for v in config["dataset_params"]["frame_shape"])
  pose_encoder = pose_decoder = None
  if with_pose:
    pose_encoder = PoseEncoder(num_layers)
    pose_decoder = PoseDecoder(num_ch_enc(num_layers), 1, 2,
                               image_size=frame_shape[:2])
  audio2pose = audio2kp = None
  if config.get("audio2head_params") is not None:
    a2k = _plain(config["audio2head_params"]["audio2kp"])
    if int(a2k["num_kp"]) != int(common["num_kp"]):
      raise ConfigError(
          f"audio2head_params.audio2kp.num_kp is {a2k['num_kp']} but the "
          f"generator it drives has model_params.common_params.num_kp = "
          f"{common['num_kp']}")
    try:
      audio2kp = Audio2KP.from_config(a2k)
    except ValueError as e:
      raise ConfigError(f"audio2head_params.audio2kp: {e}") from None
    a2p = _plain(config["audio2head_params"].get("audio2pose"))
    _check_keys("audio2head_params.audio2pose", a2p, {"embedding_dim", "blocks"})
    width = int(a2p.get("embedding_dim", 256))
    audio2pose = Audio2Pose(embedding_dim=width, hidden_size=width,
                            blocks=tuple(int(b) for b in a2p.get(
                                "blocks", (3, 4, 6, 3))))
  landmark, renderer, img_size = None, None, 128
  if config.get("ip_lap_params") is not None:
    landmark, renderer, img_size = _build_ip_lap(config["ip_lap_params"])
  return Models(
      depth_encoder=ResnetEncoder(num_layers),
      depth_decoder=DepthDecoder(num_ch_enc(num_layers), scales),
      kp_detector=kp_detector, generator=generator,
      discriminator=discriminator, pose_encoder=pose_encoder,
      pose_decoder=pose_decoder, audio2pose=audio2pose, audio2kp=audio2kp,
      ip_lap_landmark=landmark, ip_lap_renderer=renderer,
      ip_lap_img_size=img_size, use_depth=use_depth,
      frame_shape=frame_shape)  # type: ignore[arg-type]


def _build_ip_lap(section: Any) -> tuple[Any, Any, int]:
  """IP_LAP's landmark generator and renderer from ``ip_lap_params``."""
  p = _plain(section)
  _check_keys("ip_lap_params", p, _IP_LAP_KEYS)
  sizes = {k: int(p[k]) for k in ("T", "d_model", "nlayers", "nhead",
                                  "dim_feedforward")}
  if sizes["d_model"] != ip_lap_landmark.EMBED_DIM:
    raise ConfigError(f"ip_lap_params.d_model is {sizes['d_model']}; IP_LAP's "
                      f"landmark generator only works with "
                      f"{ip_lap_landmark.EMBED_DIM}")
  if sizes["d_model"] % max(sizes["nhead"], 1) or min(sizes.values()) < 1:
    raise ConfigError(f"ip_lap_params: T, nlayers, nhead, dim_feedforward must "
                      f"be positive and nhead divide d_model; got {sizes}")
  if int(p["mel_step"]) != 16:
    raise ConfigError(f"ip_lap_params.mel_step is {p['mel_step']}; the mel "
                      "encoders reduce 80 x 16 chunks to 1 x 1 (16 only)")
  img_size = int(p["img_size"])
  if img_size < 8 or img_size % 4:
    raise ConfigError(f"ip_lap_params.img_size is {img_size}; expected a "
                      "multiple of 4 (the renderer halves it twice)")
  for key in ("Nl", "N", "fps"):
    if not float(p[key]) > 0:
      raise ConfigError(f"ip_lap_params.{key} must be positive, got {p[key]}")
  return (ip_lap_landmark.LandmarkGenerator(**sizes),
          ip_lap_renderer.Renderer(), img_size)


# --------------------------------------------------------------------------
# Dummy inputs and initialisation

def _pyramid_size(size: int, scale: float) -> int:
  """Spatial size of the anti-aliased pyramid level ``scale`` (stride 1/scale)."""
  if scale == 1:
    return size
  return -(-size // int(1 / scale))


def example_inputs(models: Models, batch: int = 1) -> dict[str, tuple]:
  """Positional example inputs of every network (zeros, identity Jacobians)."""
  h, w, c = models.frame_shape
  k = models.kp_detector.num_kp
  img = jnp.zeros((batch, h, w, c), jnp.float32)
  disp = jnp.zeros((batch, h, w, 1), jnp.float32)
  kp = {"value": jnp.zeros((batch, k, 2), jnp.float32),
        "jacobian": jnp.broadcast_to(jnp.eye(2, dtype=jnp.float32),
                                     (batch, k, 2, 2))}
  kp_in = jnp.zeros((batch, h, w, models.kp_detector.num_channels), jnp.float32)
  feats = [jnp.zeros((batch, -(-h // 2 ** (i + 1)), -(-w // 2 ** (i + 1)), ch),
                     jnp.float32)
           for i, ch in enumerate(models.depth_decoder.num_ch_enc)]
  pyramid = {f"prediction_{s}": jnp.zeros(
      (batch, _pyramid_size(h, s), _pyramid_size(w, s), c), jnp.float32)
      for s in models.discriminator.scales}
  inputs = {
      "depth_encoder": (img,),
      "depth_decoder": (feats,),
      "kp_detector": (kp_in,),
      "generator": (img, kp, kp, disp),
      "discriminator": (pyramid, kp),
  }
  if models.pose_encoder is not None:
    pose_feats = [jnp.zeros((batch, -(-h // 2 ** (i + 1)), -(-w // 2 ** (i + 1)), ch),
                            jnp.float32)
                  for i, ch in enumerate(models.pose_decoder.num_ch_enc)]
    inputs["pose_encoder"] = (jnp.zeros((batch, h, w, 6), jnp.float32),)
    inputs["pose_decoder"] = ([pose_feats],)
  if models.audio2pose is not None:
    image, audio = audio2pose_inputs(batch)
    inputs["audio2pose"] = (jnp.zeros(image.shape, image.dtype),
                            jnp.zeros(audio.shape, audio.dtype))
    inputs["audio2kp"] = models.audio2kp.dummy_inputs(batch)
  if models.ip_lap_landmark is not None:
    inputs["ip_lap_landmark"] = ip_lap_landmark.dummy_inputs(
        models.ip_lap_landmark, batch=batch)
    inputs["ip_lap_renderer"] = ip_lap_renderer.example_inputs(
        batch, num_sketches=models.ip_lap_landmark.T,
        image_size=models.ip_lap_img_size)
  return inputs


def init_key(key: jax.Array) -> jax.Array:
  """An ``'rbg'`` PRNG key derived deterministically from any ``key``.

  Parameter initialisation draws one random array per parameter; with the
  default threefry PRNG, XLA:CPU spends most of the init compile on those
  hashes (generator: 19 s vs 4.6 s with 'rbg', measured). The values differ
  from a threefry init but are a fixed function of ``key``.
  """
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if jax.random.key_impl(key) == "rbg":
      return key
    bits = jax.random.bits(key, (4,), jnp.uint32)
  else:  # a raw uint32[2] key
    bits = jax.random.bits(jax.random.wrap_key_data(key), (4,), jnp.uint32)
  return jax.random.wrap_key_data(bits, impl="rbg")


def init_variables(models: Models, key: jax.Array, config: Any = None,
                   names: tuple[str, ...] | None = None) -> dict[str, Variables]:
  """Random variables of every network (PyTorch's default init).

  Deterministic in ``key`` (initialisers draw from :func:`init_key` of it).
  ``config`` is accepted for symmetry with :func:`build_models` (the modules
  already hold everything). Returns ``{name: {'params', 'batch_stats'?}}``.
  """
  del config
  nets = models.networks()
  names = tuple(nets) if names is None else names
  inputs = example_inputs(models)
  keys = jax.random.split(init_key(key), len(names))
  out = {}
  for k, name in zip(keys, names):
    init = jax.jit(nets[name].init)
    out[name] = dict(init({"params": k}, *inputs[name]))
  return out


def abstract_variables(models: Models, names: tuple[str, ...] | None = None
                       ) -> dict[str, Variables]:
  """Shapes/dtypes of every network's variables (``jax.eval_shape``, free)."""
  nets = models.networks()
  names = tuple(nets) if names is None else names
  inputs = example_inputs(models)
  key = jax.random.key(0)
  return {name: dict(jax.eval_shape(nets[name].init, {"params": key},
                                    *inputs[name]))
          for name in names}


def count_params(tree: Any) -> int:
  """Number of scalars in a pytree of arrays / ShapeDtypeStructs."""
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def param_counts(config: Any, *, with_pose: bool = False) -> dict[str, int]:
  """Trainable parameters (the ``'params'`` collection) of every network."""
  models = build_models(config, with_pose=with_pose)
  abstract = abstract_variables(models)
  return {name: count_params(v.get("params", {})) for name, v in abstract.items()}


# --------------------------------------------------------------------------
# Pure forward functions (eval mode)

def depth_outputs(models: Models, variables: Mapping[str, Variables],
                  images: Array) -> dict[str, Array]:
  """``{'disp0': (B,H,W,1), 'disp1', ...}`` of the depth network."""
  feats = models.depth_encoder.apply(variables["depth_encoder"], images)
  return models.depth_decoder.apply(variables["depth_decoder"], feats)


def depth_fn(models: Models, variables: Mapping[str, Variables],
             images: Array) -> Array:
  """``disp0`` ``(B, H, W, 1)``: the raw sigmoid disparity DaGAN consumes."""
  return depth_outputs(models, variables, images)["disp0"]


def kp_detector_input(models: Models, images: Array, disp: Array | None) -> Array:
  """``cat(RGB, disp0)`` when the detector uses depth, else the images."""
  if not models.use_depth:
    return images
  if disp is None:
    raise ValueError("the keypoint detector uses depth: pass disp (B,H,W,1)")
  return jnp.concatenate([images, disp.astype(images.dtype)], axis=-1)


def keypoints_fn(models: Models, variables: Mapping[str, Variables],
                 images: Array, disp: Array | None = None) -> dict[str, Array]:
  """``{'value': (B,K,2), 'jacobian': (B,K,2,2)}`` of frames (and their disp)."""
  return models.kp_detector.apply(variables["kp_detector"],
                                  kp_detector_input(models, images, disp))


def generate_fn(models: Models, variables: Mapping[str, Variables],
                source: Array, kp_source: dict[str, Array],
                kp_driving: dict[str, Array], source_depth: Array,
                driving_depth: Array | None = None) -> dict[str, Array]:
  """The generator's output dict (``prediction`` (B,H,W,C), ...)."""
  return models.generator.apply(variables["generator"], source, kp_driving,
                                kp_source, source_depth, driving_depth)


def discriminate_fn(models: Models, variables: Mapping[str, Variables],
                    pyramid: dict[str, Array], kp: dict[str, Array] | None
                    ) -> dict[str, Any]:
  """Discriminator maps of an image pyramid ``{'prediction_<s>': ...}``."""
  return models.discriminator.apply(variables["discriminator"], pyramid, kp)

