"""Every config file loads, validates and builds its networks (shapes only)."""

import pathlib

import pytest

from dagan_jax import config as config_lib
from dagan_jax.models import build as build_lib
from dagan_jax.models import variants

CONFIGS = sorted(pathlib.Path(__file__).resolve().parents[1].glob("configs/*.py"))
SPECS = [str(p) for p in CONFIGS] + [
    f"{CONFIGS[0].parent / 'hdtf512_daganpp.py'}:{v}" for v in variants.VARIANTS] + [
    f"{CONFIGS[0].parent / 'smoke.py'}:{v}" for v in ("depth", "daganpp")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: pathlib.Path(s).name)
def test_config_loads_and_builds(spec):
  cfg = config_lib.load_config(spec)
  doc = pathlib.Path(spec.split(":")[0]).read_text()
  assert "dagan-jax train --config" in doc  # the docstring gives the command
  counts = build_lib.param_counts(cfg)
  assert all(n > 0 for n in counts.values())


def test_paper_parameter_counts():
  dagan = build_lib.param_counts(config_lib.load_config(
      str(CONFIGS[0].parent / "vox256_dagan.py")))
  trainable = dagan["kp_detector"] + dagan["generator"] + dagan["discriminator"]
  assert round(trainable / 1e6, 1) == 63.1  # DaGAN++ paper, Sec. 4.3


def test_unknown_smoke_variant_is_named():
  with pytest.raises(ValueError, match="unknown variant 'nope'"):
    config_lib.load_config(str(CONFIGS[0].parent / "smoke.py") + ":nope")
