"""What an evaluation ran on and with: the machine, the presets of the adapters, the data's sha256.

Recorded in report.json so that `python -m training compare` can put several families' runs side
by side and refuse (or flag) runs that were evaluated on different data: seconds per answer mean
little without the hardware, and a score means nothing without the rows it was computed on.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil
import torch

from training.adapters.record import TrainingRecord, read_record
from training.files import GIB
from training.model.load import cpuinfo_field


def describe_machine() -> dict:
    """The device the evaluation ran on, the CPU and its cores, RAM and torch's thread count."""
    machine = {"device": "cpu", "cpu": cpu_name(), "cpu_cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "ram_gib": round(psutil.virtual_memory().total / GIB, 1),
               "torch": torch.__version__}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        machine.update(device="cuda", gpu=properties.name, gpu_memory_gib=round(properties.total_memory / GIB, 1))
    return machine


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def adapter_presets(adapters: list[Path]) -> dict[str, str | None]:
    """{adapter folder name: the webui preset named in its training record}."""
    return {Path(adapter).name: (read_record(adapter) or TrainingRecord()).preset for adapter in adapters}
