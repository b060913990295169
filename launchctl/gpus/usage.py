"""How busy a run's GPUs are, through NVML (issue 18: a silent run whose GPUs compute is
not stalled).

``utilization`` reads ``nvmlDeviceGetUtilizationRates(handle).gpu``: the percent of the
last sample period (1/6 s to 1 s, by device) in which a kernel ran. NVML (``pynvml``, of
``nvidia-ml-py``) is imported only here, only when a silent run has devices; where it
is missing, or its driver is, the answer is None and the run is judged by its output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def utilization(indices: Iterable[int]) -> dict[int, int] | None:
    """Each device's compute use in percent, by NVML index; None when NVML cannot tell
    (no library, no driver, a device it does not know)."""
    wanted = list(indices)
    if not wanted:
        return {}
    from launchctl.gpus.devices import with_nvml

    def read(nvml: Any) -> dict[int, int]:
        out: dict[int, int] = {}
        for index in wanted:
            handle = nvml.nvmlDeviceGetHandleByIndex(int(index))
            out[int(index)] = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        return out

    return with_nvml(read)


def busiest(indices: Iterable[int]) -> int | None:
    """The highest compute use among ``indices`` in percent, or None when unknown."""
    found = utilization(indices)
    if not found:
        return None
    return max(found.values())
