"""An unmodified W&B script: launchctl's overrides reach it through wandb.config.

Run it offline: WANDB_MODE=offline launchctl launch -u examples/wandb-config \
    -E 'python train.py' --set lr=0.5
"""

import json
import os

import wandb

run = wandb.init(config={"lr": 0.1, "batch_size": 32})
seen = {"run_id": run.id, "lr": wandb.config.lr, "batch_size": wandb.config.batch_size}
print(json.dumps(seen))
out = os.environ.get("RESULT_FILE")
if out:
    with open(out, "w") as fh:
        json.dump(seen, fh)
run.finish()
