"""Run priorities, in W&B's words: critical, high, medium (the default) and low."""

PRIORITIES = {"critical": 0, "high": 1, "medium": 2, "low": 3}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}
DEFAULT_PRIORITY = PRIORITIES["medium"]
