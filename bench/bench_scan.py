"""Scan throughput and memory, printed as ratios measured in one run (not a test).

1. scan from in-memory batches vs the bare forward on the same batches   (target >= 0.97)
2. scan from JPEG files on disk (DataLoader workers) vs the bare forward (target >= 0.85, 2 cores)
3. peak RSS of a scan over 10,000 vs 1,000 synthetic images             (target < 50 MB apart)

Usage: python bench/bench_scan.py [--quick] [--device auto|cpu|cuda] [--workers 2]
Uses the real MobileNetV2 weights when the assets are present (random init otherwise; speed is
the same). Memory runs happen in fresh subprocesses so each high-water mark is its own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.config import Settings  # noqa: E402
from service.scan.data import ImageDataset, collate, list_images, normalise  # noqa: E402
from service.scan.layers import resolve_layers  # noqa: E402
from service.scan.models import LoadedModel, ModelSpec, load_model  # noqa: E402
from service.scan.scanner import LayerScanner, pick_device, scan  # noqa: E402


def mobilenet() -> LoadedModel:
    assets = Settings.from_env().assets_dir
    weights = assets / "weights" / "mobilenet_v2-imagenet-from-quantized.pth" if assets else None
    spec = ModelSpec(arch="mobilenet_v2", weights=str(weights) if weights and weights.is_file() else None)
    return load_model(spec)


def jpeg_folder(count: int, into: Path) -> Path:
    """``count`` real photos (the ImageNet samples, repeated) or random JPEGs without assets."""
    assets = Settings.from_env().assets_dir
    photos = sorted((assets / "images" / "imagenet-samples").glob("*.JPEG")) if assets else []
    rng = np.random.default_rng(0)
    for i in range(count):
        target = into / f"{i:06d}.jpg"
        if photos:
            shutil.copyfile(photos[i % len(photos)], target)
        else:
            Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(target, quality=90)
    return into


def paired_times(fns: dict, repeats: int) -> list[dict[str, float]]:
    """Wall time of each function per round, the functions run back to back within a round.

    The machine is shared and its speed drifts by several percent over a minute; a ratio taken
    within one round compares both sides under the same conditions, and the median over rounds
    drops the rounds something else disturbed."""
    rounds = []
    for _ in range(repeats):
        times = {}
        for name, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name] = time.perf_counter() - start
            times[name + " cpu"] = time.process_time() - cpu_start
        rounds.append(times)
    return rounds


def throughput(loaded: LoadedModel, folder: Path, batch_size: int, workers: int, device: torch.device, repeats: int):
    records = list_images(folder)
    layers = resolve_layers(loaded.module, loaded.preprocess.input_size, None)
    batches = [collate([ImageDataset(folder, records, loaded.preprocess)[i] for i in range(s, min(s + batch_size, len(records)))])
               for s in range(0, len(records), batch_size)]
    model = loaded.module.to(device)

    def bare():
        with torch.inference_mode():
            for b in batches:
                model(normalise(b.pixels.to(device), loaded.preprocess))

    def in_memory():
        scanner = LayerScanner(loaded, layers, 9, "max", None, device)
        for b in batches:
            scanner.add(b.pixels, b.ids)

    def from_disk():
        scan(loaded, folder, records, [layer.name for layer in layers], batch_size=batch_size,
             device=str(device), num_workers=workers)

    bare(), in_memory()  # warm-up (allocator, oneDNN primitive cache, catalog cache)
    rounds = paired_times({"bare": bare, "memory": in_memory, "disk": from_disk}, repeats)
    loaded.module.to("cpu")
    return len(records), len(layers), rounds


MEMORY_CHILD = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from service.scan.data import list_images
from service.scan.models import ModelSpec, load_model
from service.scan.scanner import scan
loaded = load_model(ModelSpec(arch="mobilenet_v2", preprocess={{"resize": None, "crop": 32}}))
records = list_images(Path({folder!r}))[:{count}]
scan(loaded, Path({folder!r}), records, None, k=9, batch_size=64, device={device!r}, num_workers={workers})
print(json.dumps({{"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}}))
"""


def peak_rss_kb(folder: Path, count: int, device: str, workers: int) -> dict:
    code = MEMORY_CHILD.format(repo=str(Path(__file__).resolve().parents[1]), folder=str(folder),
                               count=count, device=device, workers=workers)
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tiny_pngs(count: int, into: Path) -> Path:
    rng = np.random.default_rng(1)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(into / f"{i:06d}.png", compress_level=1)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images, one repeat")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    # 320 photos = 10 batches: past the first batches, where nearly every score can still enter the
    # top-k, into the regime that dominates a real scan of thousands of images.
    photos, repeats, small, large = (64, 1, 200, 2_000) if args.quick else (320, 5, 1_000, 10_000)
    device = pick_device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} workers={args.workers} batch={args.batch_size}")

    loaded = mobilenet()
    with tempfile.TemporaryDirectory() as tmp:
        n, n_layers, rounds = throughput(
            loaded, jpeg_folder(photos, Path(tmp)), args.batch_size, args.workers, device, repeats)
    print(f"mobilenet_v2, {n} JPEG photos, {n_layers} default layers, {repeats} rounds "
          "(median img/s; ratio = median over rounds of bare time / scan time in the same round):")
    for key, label, target in (("bare", "bare forward", None), ("memory", "scan, in-memory", 0.97),
                               ("disk", "scan, JPEG from disk", 0.85)):
        rate = statistics.median(n / r[key] for r in rounds)
        line = f"  {label:21s} {rate:7.1f} img/s"
        if target is not None:
            ratios = [r["bare"] / r[key] for r in rounds]
            line += (f"   ratio {statistics.median(ratios):.3f}  (target >= {target}; "
                     f"rounds {min(ratios):.3f}-{max(ratios):.3f})")
            if key == "memory":  # same process, no loader workers: its CPU time is comparable too
                cpu = statistics.median(r["bare cpu"] / r["memory cpu"] for r in rounds)
                line += f"; by this process's CPU time {cpu:.3f} (insensitive to other tenants)"
        print(line)

    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_pngs(large, Path(tmp))
        low, high = (peak_rss_kb(folder, count, str(device), args.workers) for count in (small, large))
    for key in ("self", "children"):
        diff_mb = (high[key] - low[key]) / 1024
        print(f"  peak RSS ({key:8s}) {small:6d} images {low[key] / 1024:7.1f} MB, {large:6d} images "
              f"{high[key] / 1024:7.1f} MB, difference {diff_mb:+.1f} MB  (target < 50)")


if __name__ == "__main__":
    main()
