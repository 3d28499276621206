"""Prints the several-GPU benchmark's table (markdown) from scaling.sh's output folder, and its extrapolation to the
full model.

    python3 scaling_report.py OUT_DIR FULL_LAYERS
"""
import json
import os
import re
import sys

from report import load

PROGRESS = re.compile(r"Calibrate layer (\d+)/(\d+) \(([\d.]+) s\)")


def layer_seconds(log_path):
    """Seconds of each calibrated layer after the first, by index, from the progress lines: layer k took from the time
    the count of layers done first reached k to the time it reached k + 1. (Layer 0's time, which includes the
    start, stays with the time outside the layers.)"""
    reached = {}
    for line in open(log_path):
        match = PROGRESS.search(line)
        if match:
            reached.setdefault(int(match.group(1)), float(match.group(3)))
    return {k: reached[k + 1] - reached[k] for k in sorted(reached) if k >= 1 and k + 1 in reached}


def peak_per_gpu(csv_path):
    """The largest memory in use (MiB) of each GPU index while the run ran."""
    peaks = {}
    if not os.path.exists(csv_path):
        return peaks
    for line in open(csv_path):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            peaks[int(parts[0])] = max(peaks.get(int(parts[0]), 0), int(parts[1]))
    return peaks


def main() -> None:
    out, full = sys.argv[1], int(sys.argv[2])
    config = json.load(open(os.path.join(out, "config.json")))
    layers, dense = config["num_hidden_layers"], config.get("first_k_dense_replace", 0)
    runs = []
    for name in sorted(os.listdir(out)):
        if name.startswith("measure-"):
            measure = json.load(open(os.path.join(out, name)))
            n = measure["devices"]
            result = load(os.path.join(out, f"run-{n}.json"))
            runs.append((n, measure, result))
    runs.sort(key=lambda run: run[0])
    print(f"{open(os.path.join(out, 'card.txt')).read().strip()}; {config['model_type']}, {layers} of {full} layers\n")
    print("| GPUs | wall s | speed-up | scaling efficiency | peak MiB per GPU (max / min) | bytes as one GPU's |")
    print("|---:|---:|---:|---:|---:|---|")
    base = next((m["wall_seconds"] for n, m, r in runs if n == 1 and m["status"] == 0), None)
    for n, measure, result in runs:
        wall = measure["wall_seconds"]
        if measure["status"] != 0 or result is None:
            why = f"failed (status {measure['status']})" if measure["status"] != 0 else "no result printed"
            print(f"| {n} | {why} | | | | |")
            continue
        peaks = peak_per_gpu(os.path.join(out, f"gpu-{n}.csv"))
        used = [peaks.get(i, 0) for i in range(n)]
        memory = f"{max(used):,} / {min(used):,}" if peaks else "—"
        speed = f"{base / wall:.2f}×" if base else ""
        efficiency = f"{base / (n * wall):.0%}" if base else ""
        same = {None: "(reference)", True: "yes", False: "**no**"}[measure["identical_to_one"]]
        print(f"| {n} | {wall:.1f} | {speed} | {efficiency} | {memory} | {same} |")
    print(f"\n**Extrapolated** to all {full} layers (not measured): the time outside layers 1 to {layers - 1} as measured"
          " (the start and layer 0 included), plus every other layer at the measured mean of its kind (dense or MoE).\n")
    print("| GPUs | dense layer s | MoE layer s | full model, extrapolated s |")
    print("|---:|---:|---:|---:|")
    for n, measure, result in runs:
        if measure["status"] != 0 or result is None:
            continue
        seconds = layer_seconds(os.path.join(out, f"run-{n}.log"))
        kinds = [[s for k, s in seconds.items() if k < dense], [s for k, s in seconds.items() if k >= dense]]
        means = [sum(k) / len(k) if k else None for k in kinds]
        outside = measure["wall_seconds"] - sum(seconds.values())
        # Layer 0 is in `outside`; the other dense layers and all MoE layers at their kind's mean.
        dense_full, moe_full = max(min(dense, full) - 1, 0), full - max(min(dense, full), 1)
        if (dense_full and means[0] is None) or (moe_full and means[1] is None):
            continue
        total = outside + dense_full * (means[0] or 0) + moe_full * (means[1] or 0)
        show = lambda v: f"{v:.2f}" if v is not None else ""
        print(f"| {n} | {show(means[0])} | {show(means[1])} | {total:.0f} |")


if __name__ == "__main__":
    main()
