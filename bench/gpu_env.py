"""The machine a GPU check ran on: device, driver, torch and CUDA versions, and the peak bf16
matmul rate measured with one large matrix product (the yardstick of the MFU columns).

    python bench/gpu_env.py --json OUT/env.json [--size 8192]
"""
import argparse
import json
import subprocess
import sys
import time

import torch

import common  # noqa: F401
from common import device_name, pick_device, sync


def measured_matmul_tflops(device, size, dtype, repeats=20):
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size ** 3 * repeats / (time.perf_counter() - t0) / 1e12


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True, help="where to write the record")
    p.add_argument("--size", type=int, default=8192, help="side of the square matrices")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    a = p.parse_args(argv)
    device = pick_device(a.device)
    rec = {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "python": sys.version.split()[0]}
    if device.type == "cuda":
        rec["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total",
                                        "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
        rec["bf16_supported"] = torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rec["matmul_dtype"] = str(dtype).removeprefix("torch.")
    rec["matmul_size"] = a.size
    rec["matmul_tflops"] = measured_matmul_tflops(device, a.size, dtype)
    with open(a.json, "w") as f:
        json.dump(rec, f, indent=2)
    print(json.dumps(rec, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
