"""Summarises a kernel trace written by benches/e2e/kernel_trace.c: time per kernel, copies by direction, and where
the busiest stream sat idle between two kernels (the host not keeping up, or a wait on the host).

    python3 benches/e2e/kernel_report.py TRACE.csv [--match REGEX] [--top N] [--per REGEX]

With --match, only the stretches of the trace from each kernel matching REGEX up to the next kernel that does not
follow within 5 ms count: for example --match 'attention|rms_norm|nvjet|gather|combine|route' keeps the calibration
forward's batches and leaves out the quantization between layers.

With --per, the whole trace is also cut where a kernel matching REGEX starts (--per amax_each: at each layer's
weight maxima, so one segment a layer), and each segment gets a row: its span, kernel time, idle time, longest
idle gap and what came before and after it, and its copies from the device.
"""

import argparse
import collections
import re

COPY_KINDS = {1: "host to device", 2: "device to host", 8: "device to device"}


def read(path):
    kernels, copies = [], []
    with open(path) as trace:
        for line in trace:
            fields = line.rstrip("\n").split(",", 6)
            if fields[0] == "k":
                kernels.append((int(fields[1]), int(fields[2]), int(fields[3]), fields[6]))
            elif fields[0] == "m":
                copies.append((int(fields[1]), int(fields[2]), int(fields[3]), int(fields[4]), int(fields[5])))
    kernels.sort()
    copies.sort()
    return kernels, copies


def stretches(kernels, pattern, join_ns=5_000_000):
    """Index ranges of kernels from a match up to the last kernel that starts within join_ns of the one before."""
    out, start = [], None
    for i, (begin, _, _, name) in enumerate(kernels):
        if start is not None and begin - kernels[i - 1][1] > join_ns:
            out.append((start, i))
            start = None
        if start is None and pattern.search(name):
            start = i
    if start is not None:
        out.append((start, len(kernels)))
    return out


def short(name, width=60):
    return name if len(name) <= width else name[: width - 1] + "…"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("trace")
    parser.add_argument("--match")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--per")
    args = parser.parse_args()
    kernels, copies = read(args.trace)
    if not kernels:
        raise SystemExit(f"{args.trace}: no kernels")
    ranges = stretches(kernels, re.compile(args.match)) if args.match else [(0, len(kernels))]
    chosen = [k for start, end in ranges for k in kernels[start:end]]
    span = sum(kernels[end - 1][1] - kernels[start][0] for start, end in ranges)

    per_kernel = collections.defaultdict(lambda: [0, 0])
    for begin, end, _, name in chosen:
        per_kernel[name][0] += end - begin
        per_kernel[name][1] += 1
    busy = sum(t for t, _ in per_kernel.values())
    print(f"{len(chosen)} kernels in {len(ranges)} stretch(es): {span / 1e9:.3f} s from first to last, "
          f"{busy / 1e9:.3f} s of kernel time ({100 * busy / max(span, 1):.0f}%)")
    print(f"\n| kernel | calls | ms | µs a call | share |\n|---|---:|---:|---:|---:|")
    for name, (total, calls) in sorted(per_kernel.items(), key=lambda item: -item[1][0])[: args.top]:
        print(f"| {short(name)} | {calls} | {total / 1e6:.1f} | {total / 1e3 / calls:.1f} | {100 * total / busy:.1f}% |")

    windows = [(kernels[start][0], kernels[end - 1][1]) for start, end in ranges]
    inside = [c for c in copies if any(a <= c[0] <= b for a, b in windows)]
    by_kind = collections.defaultdict(lambda: [0, 0, 0])
    for begin, end, _, size, kind in inside:
        by_kind[kind][0] += 1
        by_kind[kind][1] += size
        by_kind[kind][2] += end - begin
    print("\n| copies | count | GB | ms |\n|---|---:|---:|---:|")
    for kind, (count, size, total) in sorted(by_kind.items()):
        print(f"| {COPY_KINDS.get(kind, kind)} | {count} | {size / 1e9:.2f} | {total / 1e6:.1f} |")

    streams = collections.Counter(stream for _, _, stream, _ in chosen)
    busiest = streams.most_common(1)[0][0]
    gaps = collections.defaultdict(lambda: [0, 0])
    for start, end in ranges:
        on_stream = [k for k in kernels[start:end] if k[2] == busiest]
        for before, after in zip(on_stream, on_stream[1:]):
            idle = after[0] - before[1]
            if idle > 20_000:
                key = (short(before[3], 36), short(after[3], 36))
                gaps[key][0] += idle
                gaps[key][1] += 1
    total_idle = sum(t for t, _ in gaps.values())
    print(f"\nStream {busiest} idle between two kernels (gaps over 20 µs): {total_idle / 1e6:.1f} ms")
    print("\n| after | before | times | ms |\n|---|---|---:|---:|")
    for (before, after), (total, count) in sorted(gaps.items(), key=lambda item: -item[1][0])[:15]:
        print(f"| {before} | {after} | {count} | {total / 1e6:.1f} |")


    if args.per:
        segments(kernels, copies, re.compile(args.per))


def segments(kernels, copies, pattern):
    """One row per segment of the trace, each starting at a kernel matching `pattern`."""
    starts = [i for i, k in enumerate(kernels) if pattern.search(k[3])]
    if not starts:
        print(f"\nNo kernel matches {pattern.pattern}")
        return
    origin = kernels[0][0]
    print(f"\nSegments starting at {pattern.pattern}\n")
    print("| segment | starts at s | span ms | kernels ms | idle ms | longest gap ms | between | device to host GB, ms |")
    print("|---:|---:|---:|---:|---:|---:|---|---:|")
    for n, (first, end) in enumerate(zip(starts, starts[1:] + [len(kernels)])):
        part = kernels[first:end]
        begin, finish = part[0][0], max(k[1] for k in part)
        busy, idle, reach, longest, between, previous = 0, 0, begin, 0, "", part[0][3]
        for start, stop, _, name in part:
            if start > reach:
                idle += start - reach
                if start - reach > longest:
                    longest, between = start - reach, f"{short(previous, 24)} → {short(name, 24)}"
            busy += stop - start
            if stop > reach:
                reach, previous = stop, name
        down = [c for c in copies if c[4] == 2 and begin <= c[0] < finish]
        print(f"| {n} | {(begin - origin) / 1e9:.3f} | {(finish - begin) / 1e6:.1f} | {busy / 1e6:.1f} | "
              f"{idle / 1e6:.1f} | {longest / 1e6:.1f} | {between} | "
              f"{sum(c[3] for c in down) / 1e9:.2f}, {sum(c[1] - c[0] for c in down) / 1e6:.1f} |")


if __name__ == "__main__":
    main()
