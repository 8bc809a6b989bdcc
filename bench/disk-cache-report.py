#!/usr/bin/env python3
"""Turns bench/disk-cache.sh's figures into the tables of its section of docs/BENCHMARKS.md.

    bench/disk-cache-report.py RESULTS.tsv [--curve CURVE.tsv] [--png OUT.png]
        [--block-size 256K] [--cache-size 32M] [--disk-cache-size 2G] [--disk-max-dirty BYTES]

RESULTS.tsv: block size, system, metric, value (one figure a line).
CURVE.tsv: system, seconds, writer's bytes, bytes not in the bucket, PUTs,
writes that waited (one sample a second during the big write). The tables
are printed as Markdown; with --png the curve is drawn (needs matplotlib).
"""

import argparse
import collections
import sys

MIB = 1 << 20


def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper()
    return int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)


def load(path):
    data = collections.defaultdict(dict)
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            bs, system, metric, value = parts
            try:
                data[(bs, system)][metric] = float(value)
            except ValueError:
                data[(bs, system)][metric] = value
    return data


def load_curve(path):
    curves = collections.defaultdict(list)
    with open(path) as f:
        next(f, None)
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) != 6:
                continue
            n = [x.replace(",", "") or "0" for x in p[2:]]
            try:
                curves[p[0]].append((float(p[1]), int(n[0]), int(n[1]), int(n[2]), int(n[3])))
            except ValueError:
                continue
    return curves


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def verdict(ok):
    return "–" if ok is None else ("met" if ok else "**missed**")


def load_cell(fig, job):
    a, b = fig.get(f"{job}_load_before"), fig.get(f"{job}_load_after")
    if a is None:
        return "–"
    return f"{a:.1f}" if b is None else f"{a:.1f}→{b:.1f}"


def curve_phases(samples, budget, bs):
    """Writer rate while the dirty bytes are under 90% of the budget, and
    after; the upload rate over the whole write (PUTs × block size)."""
    if len(samples) < 3:
        return None
    samples = sorted(samples)
    total = max(s[1] for s in samples)
    # The writer's end: the first sample with all bytes written.
    end = next((s for s in samples if s[1] >= total), samples[-1])
    full = next((s for s in samples if s[2] >= 0.9 * budget), None)
    t0, w0, p0 = samples[0][0], samples[0][1], samples[0][3]
    last = samples[-1]
    upload = (last[3] - p0) * bs / max(last[0] - t0, 1e-9)
    out = {"upload_bps": upload, "peak_unstored": max(s[2] for s in samples), "end_t": end[0]}
    if full is None or full[0] >= end[0]:
        out["before_bps"] = (end[1] - w0) / max(end[0] - t0, 1e-9)
        out["full_t"] = None
        out["after_bps"] = None
    else:
        out["before_bps"] = (full[1] - w0) / max(full[0] - t0, 1e-9)
        out["full_t"] = full[0]
        out["full_written"] = full[1]
        out["after_bps"] = (end[1] - full[1]) / max(end[0] - full[0], 1e-9)
    return out


def tables(data, curves, bs, cache_bytes, disk_bytes, max_dirty):
    g = lambda sysname, metric, b=bs: data.get((b, sysname), {}).get(metric)  # noqa: E731
    L, R, B, N, P = "s3block-local", "s3block-remote", "s3backer", "s3backer-noverify", "plain"
    out = ["| job | s3block local | s3block remote | s3backer 2.1.6 | plain file | target | ratio | |",
           "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]

    # Warm random read.
    rl, rb, rn, rp = (g(s, "randread_iops") for s in (L, B, N, P))
    r1 = None if rl is None or rb is None else rl / rb
    r2 = None if rl is None or rp is None else rl / rp
    ok = None if r1 is None and r2 is None else (r1 is None or r1 >= 5) and (r2 is None or r2 >= 0.5)
    out.append(f"| warm random 4K read after a remount, IOPS | {fmt(rl)} | | {fmt(rb)} (no verify: {fmt(rn)}) "
               f"| {fmt(rp)} | ≥ 5× s3backer, ≥ ½ plain | {fmt(r1, 2)}× s3backer ({fmt(None if rl is None or rn is None else rl / rn, 2)}× "
               f"no verify), {fmt(r2, 2)}× plain | {verdict(ok)} |")
    # Unpack.
    ul, ur, ub, up = (g(s, "untar_s") for s in (L, R, B, P))
    q1 = None if ul is None or ub is None else ub / ul
    q2 = None if ur is None or ub is None else ub / ur
    out.append(f"| unpack {{files}} files + sync, s | {fmt(ul, 2)} | {fmt(ur, 2)} | {fmt(ub, 2)} | {fmt(up, 2)} "
               f"| local ≥ 5×, remote ≥ 2× s3backer | local {fmt(q1, 2)}×, remote {fmt(q2, 2)}× | "
               f"{verdict(None if q1 is None else q1 >= 5)} / {verdict(None if q2 is None else q2 >= 2)} |")
    # fsync latency.
    fl, fr, fb, fp = (g(s, "fsyncwrite_fsync_p50_us") for s in (L, R, B, P))
    f1 = None if fl is None or fp is None else fl / fp
    out.append(f"| random 4K write, fsync=1: p50 fsync latency, µs | {fmt(fl)} | {fmt(fr)} | {fmt(fb)} | {fmt(fp)} "
               f"| local ≤ 2× plain | local {fmt(f1, 2)}× plain | {verdict(None if f1 is None else f1 <= 2)} |")
    # Big write.
    ph = curve_phases(curves.get(R, []), max_dirty, size_bytes(bs)) if curves else None
    if ph:
        ok = ph["before_bps"] >= 1.5 * ph["upload_bps"] and (ph["full_t"] is None or ph["after_bps"] is not None)
        when = ("the budget never filled" if ph["full_t"] is None else
                f"budget 90% full at {ph['full_t']:.0f} s ({ph['full_written'] / MIB:,.0f} MiB written); "
                f"then {ph['after_bps'] / MIB:.0f} MiB/s")
        out.append(f"| {{big}} sequential write: writer MiB/s until the dirty budget fills | | "
                   f"{ph['before_bps'] / MIB:.0f} | | | not throttled to upload speed ({ph['upload_bps'] / MIB:.0f} MiB/s) "
                   f"before | {when} | {verdict(ok)} |")
    # RSS.
    limit = (cache_bytes + 64 * MIB) / MIB
    for rbs in sorted({b for b, s in data if s.startswith("s3block") and b != "-"}, key=size_bytes):
        hw = [v for (b, s), m in data.items() if b == rbs and s.startswith("s3block")
              for k, v in m.items() if k.startswith("hwm_kib_")]
        hb = [v for (b, s), m in data.items() if b == rbs and s.startswith("s3backer")
              for k, v in m.items() if k.startswith("hwm_kib_")]
        a = max(hw) / 1024 if hw else None
        c = max(hb) / 1024 if hb else None
        out.append(f"| peak RSS at {rbs} blocks, MiB (max over its mounts) | {fmt(a)} | | {fmt(c)} | | "
                   f"≤ {limit:.0f} | | {verdict(None if a is None else a <= limit)} |")
    out.append("")

    # Details.
    out += ["| detail | s3block local | s3block remote | s3backer 2.1.6 | s3backer no verify | plain file |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]

    def row(name, metric, digits=1, b=bs):
        vals = [g(s, metric, b) for s in (L, R, B, N, P)]
        if all(v is None for v in vals):
            return
        out.append(f"| {name} | " + " | ".join(fmt(v, digits) for v in vals) + " |")

    row("fill: sequential write of the region, MiB/s", "fill_mibps")
    row("  s3backer: after fio, until nothing dirty, s", "fill_stored_extra_s", 2)
    row("unmount after the fill, s", "unmount_s_fill", 2)
    row("mount with a warm cache, s", "warm_mount_s", 2)
    row("warm random read: load before→after", "randread_load_before")
    row("warm random read: requests (GETs, s3backer's include its checks)", "randread_gets", 0)
    row("warm random read: reads served by the disk tier", "randread_disk_hits", 0)
    row("warm random read: reads the local disk did (the rest: page cache)", "randread_disk_reads", 0)
    row("plain file: the random read through the page cache, IOPS", "randread_buffered_iops")
    row("  reads the local disk did", "randread_buffered_disk_reads", 0)
    row("random 4K write + fsync, IOPS", "fsyncwrite_iops")
    row("  fsync p90, µs", "fsyncwrite_fsync_p90_us")
    row("  fsync p99, µs", "fsyncwrite_fsync_p99_us")
    row("  fsync mean, µs", "fsyncwrite_fsync_mean_us")
    row("  after fio, until stored, s", "fsyncwrite_stored_extra_s", 2)
    row("  load before", "fsyncwrite_load_before")
    row("mkfs.ext4 (no lazy init), s", "mkfs_s", 2)
    row("unpack: of which tar (before the sync), s", "untar_tar_s", 2)
    row("unpack: load before", "untar_load_before")
    row("unpack: after `sync`, until stored, s", "untar_stored_extra_s", 2)
    row("unpack: PUTs (to the end of uploads)", "untar_puts", 0)
    row("big write: writer's last write, s (sampled once a second)", "big_written_s")
    row("big write: fio exited (after its close), s", "big_fio_exit_s")
    row("big write: all stored, s", "big_stored_s")
    row("big write: writer MiB/s overall", "big_writer_mibps")
    row("big write: writes that waited for the dirty budget", "big_waits", 0)
    row("big write: load before", "big_load_before")
    out.append("")
    return "\n".join(out), ph


def curve_table(samples, step=5):
    out = ["| s | written, MiB | not in bucket, MiB | PUTs | waits |", "| ---: | ---: | ---: | ---: | ---: |"]
    last_t = None
    for s in sorted(samples):
        if last_t is not None and s[0] - last_t < step - 0.5 and s is not samples[-1]:
            continue
        last_t = s[0]
        out.append(f"| {s[0]:.0f} | {s[1] / MIB:,.0f} | {s[2] / MIB:,.0f} | {s[3]:,} | {s[4]:,} |")
    return "\n".join(out)


def plot(curves, path, max_dirty, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("disk-cache-report.py: no matplotlib, no PNG", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = {"s3block-remote": "s3block", "s3backer": "s3backer 2.1.6"}
    for sysname, samples in sorted(curves.items()):
        samples = sorted(samples)
        t = [s[0] for s in samples]
        label = names.get(sysname, sysname)
        ax.plot(t, [s[1] / MIB for s in samples], label=f"{label}: written by the writer")
        ax.plot(t, [s[2] / MIB for s in samples], linestyle="--", label=f"{label}: not yet in the bucket")
    ax.axhline(max_dirty / MIB, color="grey", linewidth=0.8, linestyle=":")
    ax.text(0, max_dirty / MIB, " s3block's disk dirty budget", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--curve")
    p.add_argument("--png")
    p.add_argument("--block-size", default="256K")
    p.add_argument("--cache-size", default="32M")
    p.add_argument("--disk-cache-size", default="2G")
    p.add_argument("--disk-max-dirty", help="bytes (default half the disk cache)")
    p.add_argument("--files", default="20000")
    p.add_argument("--big-size", default="4G")
    args = p.parse_args()
    data = load(args.results)
    curves = load_curve(args.curve) if args.curve else {}
    disk = size_bytes(args.disk_cache_size)
    max_dirty = size_bytes(args.disk_max_dirty) if args.disk_max_dirty else disk // 2
    text, _ = tables(data, curves, args.block_size, size_bytes(args.cache_size), disk, max_dirty)
    print(text.replace("{files}", f"{int(args.files):,}").replace("{big}", args.big_size))
    for sysname, samples in sorted(curves.items()):
        print(f"\nCurve of {sysname} (every 5 s):\n")
        print(curve_table(samples))
    if args.png and curves:
        plot(curves, args.png, max_dirty,
             f"Sequential write, {args.block_size} blocks, RAM cache {args.cache_size}, disk cache {args.disk_cache_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
