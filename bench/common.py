"""What every benchmark shares: the device's name, a plain-text table, the JSON record."""
import datetime
import json
import os
import platform
import statistics
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from diffuseq.dist import pick_device  # noqa: E402,F401  (the benchmarks' one way to name a device)

# dense bf16 tensor-core peaks (FLOP/s) for model FLOPs utilisation; matched against the GPU name
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def peak_bf16(device):
    if device.type != "cuda":
        return None
    gpu = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in gpu), None)


def cpu_has_bf16():
    """Whether the CPU has bf16 matrix instructions (AVX512-BF16 or AMX); without them bf16
    autocast is emulated and many times slower than fp32 (11x for tiny on an AVX2 EPYC)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def load_note():
    """The 1-minute load average: a benchmark run on a busy machine says so."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def table(header, rows):
    """Rows of cells -> an aligned plain-text table (numbers right-aligned)."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r):
        return "  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def _fmt(c):
    if c is None:
        return "n/a"
    if isinstance(c, float):
        if c != c:
            return "n/a"
        return f"{c:.3g}" if abs(c) < 100 else f"{c:,.0f}"
    return str(c)


def _numeric(s):
    return s.replace(",", "").replace(".", "", 1).replace("x", "").replace("%", "").lstrip("-").isdigit()


def header_lines(name, device, extra=""):
    load = load_note()
    return (f"{name} | {device_name(device)} | torch {torch.__version__} | "
            f"{datetime.datetime.now().isoformat(timespec='seconds')}"
            + (f" | load {load:.2f}" if load is not None else "") + (f" | {extra}" if extra else ""))


def write_json(path, name, device, record):
    path = path or os.path.join(ROOT, "bench", "results", f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    record = {"benchmark": name, "device": device_name(device), "torch": torch.__version__,
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "load_1min": load_note(),
              **record}
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return path
