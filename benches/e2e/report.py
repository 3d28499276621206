"""Prints the race's table (markdown) from run.sh's output folder.

    python3 report.py OUT_DIR LAYERS
"""
import json
import os
import sys


def load(path):
    """The JSON object on the last line of a file (tools may print other lines before it)."""
    try:
        lines = [line for line in open(path).read().splitlines() if line.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def main() -> None:
    out, layers = sys.argv[1], int(sys.argv[2])
    card = open(os.path.join(out, "card.txt")).read().strip() if os.path.exists(os.path.join(out, "card.txt")) else "?"
    config_path = os.path.join(out, "config.json")
    config = json.load(open(config_path)) if os.path.exists(config_path) else {}
    shape = {"mixtral": "Mixtral-8x7B"}.get(config.get("model_type"), "Qwen3-30B-A3B")
    print(f"Card: {card}; {layers} layers of {shape} (random bf16)\n")
    print("| tool | format | total s | then sync s | load s | calibrate s | quantize+write s | layer-tokens/s | peak GPU MiB | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = {}
    for fmt in ("fp8", "nvfp4"):
        for tool in ("ours", "modelopt"):
            result, measure = load(os.path.join(out, f"{tool}-{fmt}.json")), load(os.path.join(out, f"{tool}-{fmt}.measure.json"))
            if not result or not measure:
                print(f"| {tool} | {fmt} | failed (see {tool}-{fmt}.log) | | | | | | | |")
                continue
            s = result["seconds"]
            if tool == "ours":
                load_s, calib, qw = 0.0, s["calibrate"], s["quantize"] + s["write"]
                rate = result["tokens"] * layers / max(calib, 1e-9)
            else:
                load_s, calib, qw = s["load"], s["calibrate"], s["quantize_write"]
                rate = result["layer_tokens_per_second"]
            synced = measure.get("sync_seconds", 0.0)
            rows[(tool, fmt)] = (measure["wall_seconds"], measure["peak_gpu_mib"], synced)
            print(f"| {'moe-quant' if tool == 'ours' else 'ModelOpt'} | {fmt} | {measure['wall_seconds']:.1f} | {synced:.1f} | {load_s:.1f} | {calib:.1f} | {qw:.1f} | "
                  f"{rate:,.0f} | {measure['peak_gpu_mib']:,} | {result['peak_rss_bytes'] / 2**30:.1f} |")
    print()
    disk = load(os.path.join(out, "disk.json"))
    if disk:
        # The floor takes the disk at its best: the faster of the two reads (older runs measured one thread only).
        four = disk.get("read_four_threads_seconds")
        read_seconds = min(disk["read_seconds"], four or disk["read_seconds"])
        read_rate, write_rate = disk["read_bytes"] / read_seconds, disk["write_bytes"] / disk["write_seconds"]
        reads = f"{disk['read_bytes'] / disk['read_seconds'] / 1e9:.2f} GB/s on one thread" + (
            f", {disk['read_bytes'] / four / 1e9:.2f} GB/s on four" if four else "")
        print(f"- disk: the checkpoint ({disk['read_bytes'] / 1e9:.1f} GB) read cold at {reads}; "
              f"{disk['write_bytes'] / 2**30:.0f} GiB written with fsync at {write_rate / 1e9:.2f} GB/s; both at once "
              f"{disk['read_and_write_at_once_seconds']:.1f} s (one after the other: {disk['read_seconds'] + disk['write_seconds']:.1f} s)")
    for fmt in ("fp8", "nvfp4"):
        if ("ours", fmt) in rows and ("modelopt", fmt) in rows:
            (ot, og, osync), (mt, mg, msync) = rows[("ours", fmt)], rows[("modelopt", fmt)]
            print(f"- {fmt}: moe-quant {mt / ot:.1f}× faster end to end ({(mt + msync) / (ot + osync):.1f}× until both "
                  f"outputs are on disk); peak GPU memory {og / max(mg, 1):.2f}× ModelOpt's")
        written = load(os.path.join(out, f"bytes-{fmt}.json"))
        if disk and written and ("ours", fmt) in rows:
            floor = disk["read_bytes"] / read_rate + written["ours"] / write_rate
            print(f"- {fmt}: reading the checkpoint and writing moe-quant's {written['ours'] / 1e9:.2f} GB output alone take "
                  f"{floor:.1f} s on this disk; moe-quant took {rows[('ours', fmt)][0]:.1f} s")
        c = load(os.path.join(out, f"compare-{fmt}.json"))
        if c:
            print(f"- {fmt} outputs: {c['tensors']} tensors, names differ: {len(c['only_ours']) + len(c['only_modelopt'])}, "
                  f"dtype/shape mismatches: {c['dtype_or_shape_mismatches']}, identical quantized bytes: "
                  f"{c['identical_fraction'] * 100:.4f}% ({c['differing_bytes']} of {c['bytes']} differ), max relative difference: "
                  f"weight scales {c['max_rel_weight_scale']:.2e}, input scales {c['max_rel_input_scale']:.2e}")
    half = load(os.path.join(out, f"ours-nvfp4-{layers // 2}-layers.measure.json"))
    full = load(os.path.join(out, "ours-nvfp4.measure.json"))
    if half and full:
        print(f"- linearity (moe-quant, nvfp4): {layers // 2} layers {half['wall_seconds']:.1f} s, {layers} layers {full['wall_seconds']:.1f} s")


if __name__ == "__main__":
    main()
