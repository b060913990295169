"""A tiny "training" script that needs nothing but Python.

It reads its hyperparameters the way W&B Launch passes them (WANDB_CONFIG), so
`launchctl launch ... --set lr=0.5` changes what it does without code changes.
"""

import json
import os
import time

config = {"lr": 0.1, "epochs": 3}
config.update(json.loads(os.environ.get("WANDB_CONFIG") or "{}"))

print(f"run {os.environ.get('WANDB_RUN_ID', '?')} starting with config {config}")
loss = 1.0
for epoch in range(int(config["epochs"])):
    loss *= 1 - float(config["lr"])
    print(f"epoch {epoch + 1}/{config['epochs']}: loss {loss:.4f}")
    time.sleep(float(config.get("sleep", 0.1)))
print("done")
