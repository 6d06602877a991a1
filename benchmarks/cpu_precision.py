"""How fast this CPU runs EdgeTAM's heavy operations in fp32, bf16 and fp16 (GFLOP/s).

    python benchmarks/cpu_precision.py [--threads 2]

Whether ``precision="bf16"`` can pay depends on the hardware, not on our code: a CPU with AMX
(Intel Sapphire Rapids and later, when the hypervisor exposes it) or full-rate AVX-512 BF16 (AMD
Zen 4) multiplies bf16 matrices about twice as fast as fp32; a CPU without either runs bf16
slower than fp32 (emulated, or at a lower rate). The shapes are those that dominate a tracked
frame: memory attention's MLP (4096 x 256 -> 2048) and its 4096-token self-attention, and a
RepViT 1x1 convolution on a 256x256 map. Medians of 10; ratios > 1 mean faster than fp32.
"""

from __future__ import annotations

import argparse

from common import machine_facts, median_seconds, set_threads


def gflops(fn, flop: float, repeats: int = 10) -> float:
    return flop / median_seconds(fn, repeats, warmup=2) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    set_threads(args.threads)
    import torch
    import torch.nn.functional as F

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    rows: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for name, dt in dtypes.items():
            x, w = torch.randn(4096, 256, dtype=dt), torch.randn(2048, 256, dtype=dt)
            q = torch.randn(1, 1, 4096, 256, dtype=dt)
            img = torch.randn(1, 96, 256, 256, dtype=dt).contiguous(memory_format=torch.channels_last)
            conv = torch.nn.Conv2d(96, 192, 1).to(dt).to(memory_format=torch.channels_last)
            rows.setdefault("linear 4096x256 -> 2048", {})[name] = gflops(lambda: F.linear(x, w), 2 * 4096 * 256 * 2048)
            rows.setdefault("attention 4096 x 4096, d=256", {})[name] = gflops(
                lambda: F.scaled_dot_product_attention(q, q, q), 4 * 4096 * 4096 * 256)
            rows.setdefault("conv 1x1 96 -> 192 @ 256x256", {})[name] = gflops(lambda: conv(img), 2 * 96 * 192 * 256 * 256)
    print(f"machine: {machine_facts()}")
    print(f"\n{'operation (GFLOP/s)':<32}" + "".join(f"{n:>10}" for n in dtypes) + f"{'bf16/fp32':>12}{'fp16/fp32':>12}")
    for op, vals in rows.items():
        print(f"{op:<32}" + "".join(f"{vals[n]:>10.0f}" for n in dtypes)
              + f"{vals['bf16'] / vals['fp32']:>11.2f}x{vals['fp16'] / vals['fp32']:>11.2f}x")


if __name__ == "__main__":
    main()
