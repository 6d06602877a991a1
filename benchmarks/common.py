"""Helpers shared by the benchmark scripts: timing, machine facts, the results table."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and its reduced-precision matrix features (Linux /proc/cpuinfo):
    avx512_bf16, avx512_fp16, amx_bf16/amx_tile/amx_fp16; ("", []) where unknown."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return "", []
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    wanted = ("avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "amx_tile")
    return model, [f for f in wanted if f in flags]


def machine_facts() -> str:
    import torch

    cap = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    model, flags = cpu_model_and_flags()
    cpu = f"{model}, " if model else ""
    precision = f" low-precision={'+'.join(flags) if flags else 'none'}"
    return (f"{cpu}{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"threads={torch.get_num_threads()} cpu_capability={cap}{precision}")


def print_table(title: str, rows: list[tuple[str, dict[str, float]]], unit: str, ours: str = "edgetam-kit") -> None:
    """rows: (metric, {engine: value}); prints values and ratio peer/ours (> 1: ours faster)."""
    engines = list(rows[0][1])
    print(f"\n{title}")
    header = f"{'metric':<28}" + "".join(f"{e:>16}" for e in engines) + "".join(
        f"{'  x vs ' + e:>18}" for e in engines if e != ours)
    print(header)
    print("-" * len(header))
    for metric, vals in rows:
        line = f"{metric:<28}" + "".join(f"{vals[e] * (1000 if unit == 'ms' else 1):>14.1f}{unit[:2]:>2}" for e in engines)
        line += "".join(f"{vals[e] / vals[ours]:>17.2f}x" for e in engines if e != ours)
        print(line)
