"""benchmarks/run.py: the smallest path produces well-formed JSON and tables."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

from benchmarks import hlo_flops, run


def test_tiny_run_writes_json_and_markdown(tmp_path):
  out, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
  md.write_text("# Notes kept\n\ntext before\n")
  assert run.main(["--tiny", "--in-process", "--rows", "peak,inference:smoke:1",
                   "--json", str(out), "--markdown", str(md),
                   "--section", "test"]) == 0
  report = json.loads(out.read_text())
  assert set(report) >= {"command", "machine", "results", "official_reference"}
  for key in ("cpu", "cpu_count", "jax", "flax", "date", "loadavg", "commit"):
    assert key in report["machine"], key
  peak, inf = report["results"]
  assert peak["kind"] == "peak" and peak["peak_f32_gflops_per_s"] > 0
  assert inf["kind"] == "inference" and "error" not in inf, inf.get("error")
  for key in ("frames_per_s", "s_per_frame", "compile_s", "flops", "xla_flops",
              "peak_bytes", "peak_rss_bytes", "loadavg_before", "loadavg_after",
              "achieved_gflops_per_s", "fraction_of_peak", "times_s"):
    assert key in inf, key
  assert inf["prediction_finite"]
  assert inf["frames_per_s"] == pytest.approx(1 / inf["median_s"])
  text = md.read_text()
  assert text.startswith("# Notes kept\n\ntext before\n")
  assert "<!-- benchmarks:test:begin" in text and "**Inference**" in text
  assert "| smoke (64x64, narrow; tests only) | 1 |" in text
  # The kernel set each row ran is recorded.
  assert inf["kernels"] == "auto"
  # A second run replaces the section instead of appending another.
  run.update_markdown(str(md), "test", "replaced\n")
  text = md.read_text()
  assert text.count("benchmarks:test:begin") == 1 and "replaced" in text


def test_compile_only_and_append(tmp_path):
  out = tmp_path / "bench.json"
  assert run.main(["--tiny", "--in-process", "--rows", "nonsense:smoke:1",
                   "--json", str(out)]) == 0
  assert run.main(["--tiny", "--in-process", "--compile-only", "--append",
                   "--rows", "inference:smoke:1", "--json", str(out)]) == 0
  old, inf = json.loads(out.read_text())["results"]
  assert old["row"] == "nonsense:smoke:1"
  assert inf["skipped"].startswith("compiled only")
  assert inf["flops"] > 0 and inf["peak_bytes"] > 0 and "times_s" not in inf
  assert "compiled only" in run.markdown_report(json.loads(out.read_text()))


def test_unknown_row_is_reported_not_raised(tmp_path):
  out = tmp_path / "bench.json"
  assert run.main(["--tiny", "--in-process", "--rows", "nonsense:smoke:1",
                   "--json", str(out)]) == 0
  (res,) = json.loads(out.read_text())["results"]
  assert "unknown row kind" in res["error"]


def test_hlo_flops_counts_loop_bodies_times_their_trip_count():
  def scan(x, w):
    return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=10)[0]

  x = jnp.ones((64, 64))
  compiled = jax.jit(scan).lower(x, x).compile()
  counted = hlo_flops.matmul_flops(compiled.as_text())
  assert counted["flops"] == 10 * 2 * 64 ** 3
  assert counted["loops"] and counted["unknown_trip_counts"] == 0


@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 1), (1, 2)])
def test_hlo_flops_of_a_conv_and_its_gradients(stride, groups):
  def conv(x, k):
    return jax.lax.conv_general_dilated(
        x, k, (stride, stride), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)

  x, k = jnp.ones((2, 16, 16, 8)), jnp.ones((3, 3, 8 // groups, 6))
  out = 16 // stride
  fwd = 2 * 2 * out * out * 6 * 9 * (8 // groups)
  compiled = jax.jit(conv).lower(x, k).compile()
  assert hlo_flops.matmul_flops(compiled.as_text())["flops"] == fwd
  grad = jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), (0, 1)))
  counted = hlo_flops.matmul_flops(grad.lower(x, k).compile().as_text())["flops"]
  assert counted == pytest.approx(3 * fwd)


def test_rows_run_with_the_chosen_allocator(tmp_path):
  from dagan_jax import allocator
  try:
    _, variables = allocator.allocator_env({}, "glibc-thp")
  except allocator.AllocatorError:
    pytest.skip("no glibc huge-page route on this machine")
  out = tmp_path / "r.json"
  assert run.main(["--tiny", "--rows", "peak", "--allocator", "glibc-thp",
                   "--json", str(out)]) == 0
  report = json.loads(out.read_text())
  assert report["machine"]["allocator"].startswith("glibc with transparent huge pages")
  (row,) = report["results"]
  assert "error" not in row
  assert row["malloc_env"]["GLIBC_TUNABLES"].startswith(variables["GLIBC_TUNABLES"])
  assert "C allocator: glibc with transparent huge pages" in run.markdown_report(report)


def test_a_row_killed_before_it_reports_still_renders(tmp_path):
  """A row whose process died (killed for memory: exit -9) keeps its model
  and batch from the row spec; --render writes the tables from the JSON."""
  out, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
  assert run.main(["--tiny", "--in-process", "--rows", "inference:smoke:1",
                   "--json", str(out)]) == 0
  report = json.loads(out.read_text())
  report["results"].append(run._failed_row("training:smoke:8", "exit -9: "))
  out.write_text(json.dumps(report))
  assert run.main(["--render", "--json", str(out), "--markdown", str(md),
                   "--section", "t"]) == 0
  text = md.read_text()
  assert "| smoke (64x64, narrow; tests only) | 8 | error: exit -9: |" in text
  assert "| smoke (64x64, narrow; tests only) | 1 |" in text
  with pytest.raises(SystemExit):
    run.main(["--render", "--json", str(tmp_path / "missing.json")])


def test_speak_row_times_the_speaker(tmp_path):
  """speak:MODEL:B runs Speaker's steady-state step (audio2pose, boxes, one
  audio2kp window, the window's frames) and a whole speak() on the
  Audio2Head fixture's sentence; the table places it, and a row that died
  still renders."""
  out, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
  assert run.main(["--tiny", "--in-process", "--rows", "speak:audio2head-tiny:2",
                   "--json", str(out), "--markdown", str(md), "--section", "t"]) == 0
  report = json.loads(out.read_text())
  (r,) = report["results"]
  assert r["kind"] == "speak" and "error" not in r, r.get("error")
  # seq_len 8 at test widths: 4 frames per step, rendered 2 at a time.
  assert (r["seq_len"], r["frames_per_step"], r["batch"]) == (8, 4, 2)
  assert r["frames_per_s"] == pytest.approx(4 / r["median_s"])
  assert r["realtime_x"] == pytest.approx(r["frames_per_s"] / 25)
  assert r["s_per_frame"] == pytest.approx(r["median_s"] / 4)
  assert list(r["stages_s_per_frame"]) == ["audio2pose", "pose boxes",
                                           "audio2kp (one window)", "render"]
  assert all(v > 0 for v in r["stages_s_per_frame"].values())
  assert r["compile_s"] >= 0 and r["first_step_s"] >= r["min_s"]
  assert r["prediction_finite"]
  # --tiny: the first half second of the fixture's sentence, 49 feature
  # rows of 10 ms -> 12 frames (one per 4 rows).
  assert r["speak_samples"] == 8000 and r["speak_frames"] == 12
  assert r["speak_realtime_x"] == pytest.approx(12 / 25 / r["speak_s"])
  text = md.read_text()
  assert "**Speech -> talking head**" in text
  assert "| Audio2Head 256x256 at test widths (tests only) | 2 |" in text
  report["results"].append(run._failed_row("speak:audio2head:8", "exit -9: "))
  assert ("| Audio2Head 256x256 (released sizes, 10 kp, seq_len 64) | 8 | "
          "error: exit -9: |") in run.markdown_report(report)
  with pytest.raises(ValueError, match="unknown speak model"):
    run.speak_config("audio3head")


def test_dub_row_and_speech_training_rows(tmp_path, monkeypatch):
  """dub:MODEL:B times Dubber's steady-state step (5 windows' landmarks, 5
  faces rendered and pasted back) on the IP_LAP fixture's template, stage
  by stage; training:MODEL:B of a speech model times its trainer's step;
  both tables place them, and rows that died still render.

  The renderer's widths and 128x128 faces are fixed: at the suite's -O0
  one frame takes seconds, so its network is replaced by a cheap stand-in
  of the same signature here; the template, references, landmark generator
  (1 layer), sketches and paste-back are the row's own."""
  real = run.make_dubber

  def cheap_renderer(*args, **kwargs):
    dubber = real(*args, **kwargs)
    dubber.render_fn = jax.jit(lambda v, face, target, refs, ref_sketches, mel:
                               0.5 * face + 0.5 * target[:, 2])
    return dubber

  monkeypatch.setattr(run, "make_dubber", cheap_renderer)
  out, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
  assert run.main(["--tiny", "--in-process", "--max-row-seconds", "1", "--rows",
                   "dub:ip-lap-tiny:2,training:audio2pose-tiny:2",
                   "--json", str(out), "--markdown", str(md), "--section", "t"]) == 0
  report = json.loads(out.read_text())
  r, tr = report["results"]
  assert r["kind"] == "dub" and "error" not in r, r.get("error")
  assert (r["frames_per_step"], r["batch"], r["window_batch"]) == (5, 2, 5)
  assert r["references"] == {"Nl": 3, "N": 2} and r["landmark_layers"] == 1
  assert r["frames_per_s"] == pytest.approx(5 / r["median_s"])
  assert r["realtime_x"] == pytest.approx(r["frames_per_s"] / 25)
  assert r["s_per_frame"] == pytest.approx(r["median_s"] / 5)
  assert list(r["stages_s_per_frame"]) == ["landmarks", "render", "composite"]
  assert all(v > 0 for v in r["stages_s_per_frame"].values())
  assert r["compile_s"] >= 0 and r["first_step_s"] >= r["min_s"]
  assert r["prediction_finite"] and r["frame_shape"] == [256, 256, 3]
  assert tr["kind"] == "training" and "error" not in tr, tr.get("error")
  assert (tr["stage"], tr["batch"], tr["window"]) == ("audio2pose", 2, 8)
  assert tr["step_finite"] and tr["flops"] > 0 and tr["compile_s"] > 0
  assert tr["samples_per_s"] == pytest.approx(2 / tr["s_per_step"])
  text = md.read_text()
  assert "**Visual dubbing**" in text and "**Training the speech models**" in text
  assert "| IP_LAP at test sizes (1 layer, N = 2; tests only) | 2 |" in text
  assert "| audio2pose at smoke sizes (tests only) | 2 |" in text
  # The talking-head training table does not take the speech rows.
  assert "**Training** (full step" not in text
  report["results"] += [run._failed_row("dub:ip-lap:1", "exit -9: "),
                        run._failed_row("training:ip-lap-renderer:2", "exit -9: ")]
  text = run.markdown_report(report)
  assert ("| IP_LAP 128x128 faces (released sizes: 4-layer landmark Transformer, "
          "N = 25 references) | 1 | error: exit -9: |") in text
  assert ("| IP_LAP renderer, full phase (128x128, 3 references, pix2pixHD D 64 "
          "wide) | 2 | error: exit -9: |") in text
  with pytest.raises(ValueError, match="unknown dub model"):
    run.dub_config("wav2lip")
