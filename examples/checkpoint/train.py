"""A training loop that checkpoints, so a preempted run resumes where it stopped.

launchctl requeues a preempted run with the same WANDB_RUN_ID and WANDB_RESUME=allow;
this script keys its checkpoint by that id, so the next attempt continues from it.

    launchctl launch -q default -u examples/checkpoint -E 'python train.py' --set steps=20
    launchctl agent -q default --requeue-running     # Ctrl-C: the run goes back in the queue
    launchctl agent -q default                       # ... and resumes from its checkpoint
"""

import json
import os
import tempfile
import time
from pathlib import Path

config = {"steps": 10, "step_s": 0.2}
config.update(json.loads(os.environ.get("WANDB_CONFIG") or "{}"))
run_id = os.environ.get("WANDB_RUN_ID", "local")
root = (
    config.get("checkpoint_dir") or os.environ.get("LAUNCHCTL_CACHE_DIR") or tempfile.gettempdir()
)
checkpoint = Path(root) / "checkpoints" / f"{run_id}.json"
checkpoint.parent.mkdir(parents=True, exist_ok=True)

state = {"step": 0, "loss": 1.0}
if os.environ.get("WANDB_RESUME") and checkpoint.exists():
    state = json.loads(checkpoint.read_text())
    print(f"resuming {run_id} from step {state['step']}", flush=True)
else:
    print(f"starting {run_id}", flush=True)

while state["step"] < int(config["steps"]):
    time.sleep(float(config["step_s"]))
    state["step"] += 1
    state["loss"] *= 0.9
    tmp = checkpoint.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(checkpoint)  # atomic: a kill never leaves half a checkpoint
    print(f"step {state['step']}: loss {state['loss']:.4f}", flush=True)
print(f"done at step {state['step']}", flush=True)
