"""How busy a run's GPUs are, through NVML (issue 18: a silent run whose GPUs compute is
not stalled).

``utilization`` reads ``nvmlDeviceGetUtilizationRates(handle).gpu``: the percent of the
last sample period (1/6 s to 1 s, by device) in which a kernel ran. NVML (``pynvml``, of
``nvidia-ml-py``) is imported only here, only when a silent run has devices; where it
is missing, or its driver is, the answer is None and the run is judged by its output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable


def utilization(indices: Iterable[int]) -> dict[int, int] | None:
    """Each device's compute use in percent, by NVML index; None when NVML cannot tell
    (no library, no driver, a device it does not know)."""
    wanted = list(indices)
    if not wanted:
        return {}
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no NVML here
        return None
    try:
        out: dict[int, int] = {}
        for index in wanted:
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(index))
            out[int(index)] = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        return out
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def busiest(indices: Iterable[int]) -> int | None:
    """The highest compute use among ``indices`` in percent, or None when unknown."""
    found = utilization(indices)
    if not found:
        return None
    return max(found.values())
