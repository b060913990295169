"""A sweep's trial: "trains" with the learning rate and batch size the sweep gives it.

The parameters arrive as W&B Launch passes them (WANDB_CONFIG); the metric goes to the
file launchctl names in LAUNCHCTL_METRICS_FILE (one JSON object a line), or, for a
script that uses W&B's client, through wandb.log with WANDB_MODE=offline.
"""

import json
import math
import os
import time

config = {"lr": 0.01, "batch_size": 32, "epochs": 3}
config.update(json.loads(os.environ.get("WANDB_CONFIG") or "{}"))
lr, batch = float(config["lr"]), int(config["batch_size"])

metrics = os.environ.get("LAUNCHCTL_METRICS_FILE")
for epoch in range(1, int(config["epochs"]) + 1):
    # A made-up loss surface: best near lr 0.01 and batch size 32.
    val_loss = (math.log10(lr) + 2) ** 2 + (math.log2(batch) - 5) ** 2 / 10 + 1 / epoch
    print(f"lr {lr} batch {batch} epoch {epoch}: val_loss {val_loss:.4f}")
    if metrics:
        with open(metrics, "a") as fh:
            fh.write(json.dumps({"epoch": epoch, "val_loss": val_loss}) + "\n")
    time.sleep(0.2)
