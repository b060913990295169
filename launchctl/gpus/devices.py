"""Finding this machine's GPUs: NVML first, then ``nvidia-smi``, then the configured list.

NVML (the ``pynvml`` module of ``nvidia-ml-py``, the ``gpu`` extra) is imported only
when asked for. Indices are NVML's, which are ``nvidia-smi``'s and the PCI bus order;
runs get ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that CUDA counts the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from launchctl.errors import UsageError

T = TypeVar("T")

SMI_QUERY = "index,name,memory.total,memory.used,uuid"
# LAUNCHCTL_GPU_DISCOVERY=off: behave as on a machine without GPUs, so that --gpus is taken
# as given (a dry run of the scheduling, and the tests, on any machine).
DISCOVERY_ENV = "LAUNCHCTL_GPU_DISCOVERY"
SMI_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Device:
    """One GPU as discovery sees it; memory in MiB, None where unknown."""

    index: int
    name: str
    memory_mb: int | None = None
    used_mb: int | None = None
    uuid: str | None = None


def configured(indices: list[int]) -> list[Device]:
    """Devices from a list given by the user, on a machine where none could be found."""
    return [Device(index=i, name="(configured)") for i in indices]


MAX_INDEX = 1024  # more GPUs than any one machine has: a bigger index is a typo


def parse_list(text: str) -> list[int] | None:
    """``0,1,2,3`` or ``0-3`` -> [0, 1, 2, 3]; ``none`` -> None (no GPU scheduling)."""
    value = text.strip().lower()
    if value in ("none", "off"):
        return None
    out: dict[int, None] = {}  # in the order given, each once
    for part in (p.strip() for p in value.split(",")):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise UsageError(f"--gpus expects indices like 0,1,2,3 or 0-3 (or none); got {text!r}")
        span = range(int(first), int(last if dash else first) + 1)
        if not span:
            raise UsageError(f"--gpus: the range {part!r} is empty")
        if span[-1] >= MAX_INDEX:
            raise UsageError(f"--gpus: GPU indices go from 0 to {MAX_INDEX - 1}; got {part!r}")
        out.update(dict.fromkeys(span))
    return list(out)


def with_nvml(read: Callable[[Any], T]) -> T | None:
    """``read(pynvml)`` between NVML's init and shutdown; None when NVML (the library or
    its driver) is not there, or the reading fails. ``pynvml`` is imported only here."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no NVML here
        return None
    try:
        return read(pynvml)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def nvml_devices() -> list[Device] | None:
    """The GPUs NVML reports, or None when NVML (library or driver) is not there."""
    return with_nvml(lambda nvml: [_nvml_device(nvml, i) for i in range(nvml.nvmlDeviceGetCount())])


def _nvml_device(nvml: Any, index: int) -> Device:
    """One device through NVML; older bindings return bytes for names."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    return Device(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        memory_mb=int(memory.total) >> 20,
        used_mb=int(memory.used) >> 20,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def smi_devices() -> list[Device] | None:
    """The GPUs ``nvidia-smi`` lists, or None when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=SMI_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return parse_smi(proc.stdout)


def parse_smi(text: str) -> list[Device]:
    """Rows of ``nvidia-smi --query-gpu=index,name,memory.total,memory.used,uuid``."""
    devices = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue
        devices.append(
            Device(
                index=int(cells[0]),
                name=cells[1],
                memory_mb=_int(cells[2]) if len(cells) > 2 else None,
                used_mb=_int(cells[3]) if len(cells) > 3 else None,
                uuid=cells[4] if len(cells) > 4 and cells[4] else None,
            )
        )
    return devices


def _int(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:  # "[N/A]"
        return None


# What an NVIDIA driver shows a process that NVML can reach: its control device and /proc
# entry (a host, or a container given GPUs), or WSL2's GPU device.
DRIVER_PATHS = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg")


def driver_present() -> bool:
    """Whether NVML could find a driver here, without loading it (pynvml and its library
    take a tenth of the agent's start-up on a machine with no GPU at all)."""
    return any(os.path.exists(p) for p in DRIVER_PATHS)


def discover() -> tuple[list[Device], str]:
    """This machine's GPUs and how they were found: ``nvml``, ``nvidia-smi`` or ``none``."""
    if os.environ.get(DISCOVERY_ENV, "").lower() in ("off", "0", "no"):
        return [], "none"
    found = nvml_devices() if driver_present() else None
    if found:
        return found, "nvml"
    found = smi_devices()
    if found:
        return found, "nvidia-smi"
    return [], "none"


def select(found: list[Device], wanted: list[int] | None) -> list[Device]:
    """The devices an agent manages: all it found, or the ``--gpus`` ones among them.

    On a machine where none were found, the ``--gpus`` list is taken as it is.
    """
    if wanted is None:
        return list(found)
    if not found:
        return configured(wanted)
    by_index = {d.index: d for d in found}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        have = ", ".join(str(i) for i in sorted(by_index))
        raise UsageError(f"--gpus: no GPU {missing[0]} on this machine (it has {have})")
    return [by_index[i] for i in wanted]


def memory_used() -> dict[int, int] | None:
    """Memory used on each device right now, in MiB (NVML, else nvidia-smi); None if unknown."""
    found = nvml_devices() or smi_devices()
    if not found:
        return None
    return {d.index: d.used_mb for d in found if d.used_mb is not None}
