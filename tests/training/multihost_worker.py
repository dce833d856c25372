"""One process of a 2-process data-parallel training run on localhost (run by
test_multihost.py): jax.distributed with gloo CPU collectives, 2 CPU devices
per process, the whole trainer (train_and_evaluate: this host's Grain shard,
global arrays, the real step, joint orbax checkpoints) on a shared workdir.

``--sigterm-after-step N`` makes this process send itself SIGTERM once the
run has logged step N (as a preemption of one host would)."""

import argparse
import json
import os
import signal
import sys
import threading
import time

# 2 devices per process, beside the flags the test passes on (the suite's).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=2").strip()
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--process-id", type=int, required=True)
  p.add_argument("--port", type=int, required=True)
  p.add_argument("--root", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--workdir", required=True)
  p.add_argument("--max-steps", type=int, default=2)
  p.add_argument("--sigterm-after-step", type=int, default=0)
  args = p.parse_args()

  from dagan_jax.training import parallel
  parallel.initialize_distributed(f"127.0.0.1:{args.port}", 2, args.process_id,
                                  cpu_collectives="gloo")
  import jax
  from train_helpers import tiny_config
  from dagan_jax.training import talking_head as th

  assert jax.process_count() == 2 and jax.device_count() == 4
  cfg = tiny_config(args.root)
  if args.sigterm_after_step:
    from dagan_jax.training.monitor import read_metrics

    def preempt():
      while not any(r["step"] >= args.sigterm_after_step
                    for r in read_metrics(args.workdir)):
        time.sleep(0.2)
      os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=preempt, daemon=True).start()
  summary = th.train_and_evaluate(cfg, args.workdir, max_steps=args.max_steps,
                                  progress=False)
  with open(f"{args.out}.{args.process_id}", "w") as f:
    json.dump({"devices": jax.device_count(), "trainer_step": summary["step"],
               "signal": summary.get("stopped_by_signal"),
               "notes": summary["notes"]}, f)


if __name__ == "__main__":
  main()
