"""The models of DaGAN++'s ablation study (TPAMI 2023, Table V) as config values.

Table V (HDTF) compares, from the simplest model up:

============  =========================  ==========  =====================  =========
variant       Table V row                keypoints   attention              depth net
============  =========================  ==========  =====================  =========
baseline      Baseline                   RGB         none                   none
fdn           Baseline w/ FDN            RGB + D     none                   DaGAN's
cam           Baseline w/ CAM            RGB         coarsest scale only    DaGAN's
dagan         DaGAN [12]                 RGB + D     DaGAN's (CVPR 2022)    DaGAN's
fdn++         Baseline w/ FDN++          RGB + D     none                   DaGAN++'s
cam++         Baseline w/ CAM++          RGB         coarsest scale only    DaGAN++'s
gmg           Baseline w/ GMG            RGB         every scale            DaGAN++'s
daganpp       DaGAN++ (Ours)             RGB + D     every scale            DaGAN++'s
============  =========================  ==========  =====================  =========

"FDN"/"FDN++" is the face depth network of DaGAN / DaGAN++ (the latter
trained with the uncertainty head, ``depth_params.uncertainty``), used to
give the keypoint detector RGB + depth (Sec. 3.2.3); "CAM" is the
cross-modal attention on the lowest-level feature map "as done in DaGAN",
"CAM++" the same fed by FDN++ depth; "GMG" the multi-layer
geometry-enhanced generation (Sec. 3.3.3).

Where the paper is silent, and what we chose:

* Every row but ``dagan`` uses DaGAN++'s generator
  (:class:`~dagan_jax.models.geometry_generator.GeometryEnhancedGenerator`,
  3 down-blocks, skip connections at every scale) and differs only in
  ``attention_layers`` / ``use_source_depth``: the baseline is that
  generator with plain warped-feature skips (F_en = F_w) and no depth
  encoder, so that each row adds exactly the component it names. The
  ``dagan`` row is DaGAN's own model (``DepthAwareGenerator``, 2 down-blocks,
  the released configuration).
* The CAM rows put the attention at the coarsest (bottleneck) scale, before
  the ResBlocks, as DaGAN does.
* The GMG row's attention reads FDN++ depth (the row follows FDN++ in the
  table and "our" depth network is DaGAN++'s).

``daganpp_model_params(variant, base)`` maps a row to a ``model_params``
dict; :func:`variant_config` gives a whole validated config;
:func:`requires_depth_network` tells a trainer whether the depth network is
needed at all (False for the baseline only).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Mapping

from dagan_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of Table V.

  Attributes:
    name: our key; row: the label in Table V.
    model, generator_type: ``model_params.model`` / ``generator_type``.
    kp_use_depth: the keypoint detector sees RGB + depth.
    attention_layers: of the DaGAN++ generator (None for DaGAN's).
    depth_uncertainty: the depth network is DaGAN++'s (trained with the
      uncertainty head, Eq. 7-8) rather than DaGAN's.
    paper_hdtf: Table V's (SSIM %, PSNR, LPIPS, L1) on HDTF.
  """
  name: str
  row: str
  model: str
  generator_type: str
  kp_use_depth: bool
  attention_layers: str | None
  depth_uncertainty: bool
  paper_hdtf: tuple[float, float, float, float]


_GEG = "GeometryEnhancedGenerator"
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("baseline", "Baseline", "daganpp", _GEG, False, "none", False,
            (81.0, 31.30, 0.145, 0.0317)),
    Variant("fdn", "Baseline w/ FDN", "daganpp", _GEG, True, "none", False,
            (81.3, 31.57, 0.144, 0.0308)),
    Variant("cam", "Baseline w/ CAM", "daganpp", _GEG, False, "bottleneck",
            False, (82.0, 32.13, 0.139, 0.0307)),
    Variant("dagan", "DaGAN [12]", "dagan", "DepthAwareGenerator", True, None,
            False, (82.3, 32.29, 0.136, 0.0304)),
    Variant("fdn++", "Baseline w/ FDN++", "daganpp", _GEG, True, "none", True,
            (84.3, 32.89, 0.131, 0.0269)),
    Variant("cam++", "Baseline w/ CAM++", "daganpp", _GEG, False, "bottleneck",
            True, (83.2, 32.71, 0.140, 0.0275)),
    Variant("gmg", "Baseline w/ GMG", "daganpp", _GEG, False, "all", True,
            (86.0, 33.21, 0.110, 0.0241)),
    Variant("daganpp", "DaGAN++ (Ours)", "daganpp", _GEG, True, "all", True,
            (86.7, 33.51, 0.109, 0.0239)),
)}

#: ``generator_params`` keys only DaGAN++'s generator accepts.
DAGANPP_GENERATOR_KEYS = ("attention_layers", "use_source_depth",
                          "attention_qk_divisor", "attention_relu",
                          "attention_gamma", "attention_scale",
                          "attention_block_size")
#: Down-blocks of the generators: DaGAN++ Sec. 3.5 (3), DaGAN's release (2).
DAGANPP_NUM_DOWN_BLOCKS = 3
DAGAN_NUM_DOWN_BLOCKS = 2


def _plain(d: Any) -> dict[str, Any]:
  if hasattr(d, "to_dict"):
    return d.to_dict()
  return copy.deepcopy(dict(d))


def get_variant(name: str) -> Variant:
  """The :class:`Variant` called ``name`` (ConfigError if unknown)."""
  if name not in VARIANTS:
    raise ConfigError(f"unknown DaGAN++ ablation variant {name!r}; expected "
                      f"one of {list(VARIANTS)}")
  return VARIANTS[name]


def daganpp_model_params(variant: str, base: Mapping[str, Any]) -> dict[str, Any]:
  """``model_params`` of a Table V row, starting from ``base``.

  Args:
    variant: a key of :data:`VARIANTS`.
    base: a ``model_params`` mapping (e.g. ``config.model_params`` of the
      official vox-adv-256 config); not modified. Its widths, keypoint count,
      dense-motion and discriminator settings are kept.
  Returns:
    a new dict with ``model``, ``generator_type``,
    ``kp_detector_params.use_depth``, ``depth_params.uncertainty`` and the
    generator's ``num_down_blocks`` / ``attention_layers`` /
    ``use_source_depth`` set for the row (DaGAN++-only keys removed for the
    DaGAN row).
  """
  v = get_variant(variant)
  mp = _plain(base)
  for section in ("kp_detector_params", "generator_params"):
    if section not in mp:
      raise ConfigError(f"model_params has no '{section}' section")
  mp["model"] = v.model
  mp["generator_type"] = v.generator_type
  mp["kp_detector_params"]["use_depth"] = v.kp_use_depth
  depth = dict(mp.get("depth_params", {}))
  depth["uncertainty"] = v.depth_uncertainty
  mp["depth_params"] = depth
  gen = mp["generator_params"]
  if v.attention_layers is None:  # DaGAN's own generator
    for key in DAGANPP_GENERATOR_KEYS:
      gen.pop(key, None)
    gen["num_down_blocks"] = DAGAN_NUM_DOWN_BLOCKS
  else:
    gen["num_down_blocks"] = DAGANPP_NUM_DOWN_BLOCKS
    gen["attention_layers"] = v.attention_layers
    gen["use_source_depth"] = v.attention_layers != "none"
  return mp


def variant_config(variant: str, base: Any = None):
  """A validated config (``ml_collections.ConfigDict``) of a Table V row.

  ``base`` is a whole config (dict or ConfigDict); default: the official
  vox-adv-256 settings (:func:`dagan_jax.config.vox_adv_256`).
  """
  from dagan_jax import config as config_lib
  cfg = _plain(base) if base is not None else config_lib.vox_adv_256()
  cfg["model_params"] = daganpp_model_params(variant, cfg["model_params"])
  return config_lib.from_dict(cfg)


def _model_params(config: Any) -> Mapping[str, Any]:
  if "model_params" in config:
    return config["model_params"]
  return config


def requires_depth_network(config: Any) -> bool:
  """Whether a model needs the face depth network at all.

  True when the keypoint detector reads depth (``kp_detector_params.
  use_depth``, default True as in build.py) or the generator reads the
  source depth: DaGAN's generators always do, DaGAN++'s when
  ``use_source_depth`` (default True) or any ``attention_layers`` is not
  ``'none'``. Accepts a whole config or its ``model_params``.
  """
  mp = _model_params(config)
  if bool(mp.get("kp_detector_params", {}).get("use_depth", True)):
    return True
  gen_type = mp.get("generator_type", "DepthAwareGenerator")
  if gen_type != _GEG:
    return True
  gen = mp.get("generator_params", {})
  return (bool(gen.get("use_source_depth", True))
          or gen.get("attention_layers", "all") != "none")


__all__ = ["Variant", "VARIANTS", "get_variant", "daganpp_model_params",
           "variant_config", "requires_depth_network",
           "DAGANPP_GENERATOR_KEYS"]
