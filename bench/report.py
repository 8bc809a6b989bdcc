#!/usr/bin/env python3
"""Turns bench/run.sh's results into the comparison table and docs/BENCHMARKS.md.

    bench/report.py RESULTS.tsv [--report FILE|-] [--started STAMP] [run settings]
    bench/report.py RESULTS.tsv --round2 --label NAME [--report FILE|-] ...

RESULTS.tsv has one line per figure: block size, system, metric, value.
The table is printed; with --report FILE the report is written there, from
the template below (machine, date, settings, how to reproduce, the table).
With --round2 (what bench/run.sh writes now): s3block beside s3backer 2.1.6
and 1.5.4 with the targets of issue 21, as a section spliced into FILE at
the top, replacing only an earlier section of the same label.
"""

import argparse
import collections
import os
import platform
import subprocess
import sys

MIB = 1 << 20


def load(path):
    data = collections.defaultdict(dict)
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4 or parts[3] == "":
                continue
            bs, system, metric, value = parts
            try:
                data[(bs, system)][metric] = float(value)
            except ValueError:
                print(f"report.py: ignoring non-numeric {metric}={value!r} for {system} {bs}", file=sys.stderr)
    return data


def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper()
    return int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)


def fmt(v, digits=1):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def verdict(ok):
    return "–" if ok is None else ("met" if ok else "**missed**")


class Figures:
    """The figures of one system at one block size, with derived ones."""

    def __init__(self, raw, seq_bytes, fio_start_exit=0.0):
        self.raw = raw
        self.seq_bytes = seq_bytes
        # fio's own start and exit, measured on tmpfs in the same run.
        self.fio_start_exit = fio_start_exit

    def get(self, key):
        return self.raw.get(key)

    def until_stored(self, job):
        """A job's seconds until its data was stored: its own time plus the
        wait after it until no block was dirty, where the run waited."""
        secs = self.get(f"{job}_s")
        return None if secs is None else secs + (self.get(f"{job}_clean_extra_s") or 0.0)

    def durable(self, job, extra):
        """Throughput counting the time until the data was in the store."""
        secs, mbps = self.get(f"{job}_s"), self.get(f"{job}_mbps")
        if secs is None or mbps is None:
            return None
        return mbps * secs / (secs + (self.get(extra) or 0.0))

    def durable_iops(self, job, extra):
        secs, iops = self.get(f"{job}_s"), self.get(f"{job}_iops")
        if secs is None or iops is None:
            return None
        return iops * secs / (secs + (self.get(extra) or 0.0))

    def stored_rate(self, job, extra, what):
        """Bytes or I/Os per second from fio's first write until the data
        was in the store: fio's wall time (with the close, in which s3backer
        2.1.6 stores what it holds) less fio's own start and exit, plus the
        wait after it; never less than fio's job runtime."""
        wall, secs, n = self.get(f"{job}_wall_s"), self.get(f"{job}_s"), self.get(f"{job}_{what}")
        if wall is None or n is None:
            return None
        timed = wall - self.fio_start_exit
        if secs is not None:
            timed = max(timed, secs)
        return n / (timed + (self.get(extra) or 0.0))

    def peak_rss_mib(self):
        hwm = [v for k, v in self.raw.items() if k.startswith("hwm_kib_")]
        return max(hwm) / 1024 if hwm else None


def block_table(bs, a, b, ceil, cache_bytes, seq_bytes):
    """Rows for one block size: (figure, s3block, s3backer, ratio, ceiling, fraction, target, verdict)."""
    rows = []
    bsz = size_bytes(bs)

    def add(name, x, y, better, ceiling=None, target=None, ok=None):
        r = ratio(x, y) if better == "higher" else ratio(y, x)
        frac = ratio(x, ceiling) if better == "higher" else ratio(ceiling, x)
        rows.append(
            (name, fmt(x), fmt(y), "–" if r is None else f"{r:.2f}×", fmt(ceiling),
             "–" if frac is None else f"{frac:.0%}", target or "", verdict(ok)))
        return r, frac

    w_a, w_b = a.durable("seqwrite", "seqwrite_clean_extra_s"), b.durable("seqwrite", "seqwrite_clean_extra_s")
    put = ceil.get("raw_put_mbps")
    r = ratio(w_a, w_b)
    f = ratio(w_a, put)
    add("sequential write, MB/s (until stored)", w_a, w_b, "higher", put, "≥ 2× and ≥ 80% of PUT",
        None if r is None and f is None else (r is None or r >= 2) and (f is None or f >= 0.8))
    if (b.get("seqwrite_clean_extra_s") or 0) > 0.05:
        add("  as fio reports it", a.get("seqwrite_mbps"), b.get("seqwrite_mbps"),
            "higher")
    get = ceil.get("raw_get_mbps")
    rd_a, rd_b = a.get("seqread_mbps"), b.get("seqread_mbps")
    r, f = ratio(rd_a, rd_b), ratio(rd_a, get)
    add("cold sequential read, MB/s", rd_a, rd_b, "higher", get, "≥ 2.5× and ≥ 80% of GET",
        None if r is None and f is None else (r is None or r >= 2.5) and (f is None or f >= 0.8))
    rr_a, rr_b = a.get("randread_iops"), b.get("randread_iops")
    r = ratio(rr_a, rr_b)
    add("random 4K read, IOPS", rr_a, rr_b, "higher", ceil.get("raw_single_get_ops"), "≥ 1.5×",
        None if r is None else r >= 1.5)
    rw_a = a.durable_iops("randwrite", "randwrite_clean_extra_s")
    rw_b = b.durable_iops("randwrite", "randwrite_clean_extra_s")
    r = ratio(rw_a, rw_b)
    add("random 4K write + fsync, IOPS (until stored)", rw_a, rw_b, "higher", None, "≥ 5×",
        None if r is None else r >= 5)
    if (b.get("randwrite_clean_extra_s") or 0) > 0.05:
        add("  as fio reports it", a.get("randwrite_iops"), b.get("randwrite_iops"), "higher")
    m_a, m_b = a.get("mkfs_s"), b.get("mkfs_s")
    r = ratio(m_b, m_a)
    add("mkfs.ext4 16 GiB, s", m_a, m_b, "lower", None, "≤ 1/5 of s3backer", None if r is None else r >= 5)
    u_a, u_b = a.get("untar_s"), b.get("untar_s")
    r = ratio(u_b, u_a)
    # About the least time: the unpack with no store below, then the raw
    # store's time for the PUTs s3block made in it.
    puts_untar, native = a.get("puts_untar"), ceil.get("native_untar_s")
    u_ceil = None if not (puts_untar and put and native) else native + puts_untar * bsz / (put * 1e6)
    add("unpack small files + sync, s", u_a, u_b, "lower", u_ceil, "≥ 2×", None if r is None else r >= 2)
    add("  PUTs during the unpack", puts_untar, b.get("puts_untar"), "lower")
    add("e2fsck -fn, s", a.get("fsck_s"), b.get("fsck_s"), "lower")
    add("loop detach, then until stored, s",
        None if a.get("detach_s") is None else a.get("detach_s") + (a.get("ext4_clean_extra_s") or 0),
        None if b.get("detach_s") is None else b.get("detach_s") + (b.get("ext4_clean_extra_s") or 0), "lower")
    for label, what in (("seqwrite", "after the sequential write"), ("fio", "after the random write"),
                        ("ext4", "after the ext4 tests")):
        add(f"unmount (flush and exit) {what}, s", a.get(f"unmount_s_{label}"), b.get(f"unmount_s_{label}"), "lower")
    limit = (cache_bytes + 64 * MIB) / MIB
    p_a, p_b = a.peak_rss_mib(), b.peak_rss_mib()
    add("peak RSS, MiB", p_a, p_b, "lower", None, f"≤ cache + 64 MiB = {limit:.0f}",
        None if p_a is None else p_a <= limit)
    expected = seq_bytes / bsz
    puts_a, puts_b = a.get("puts_seqwrite"), b.get("puts_seqwrite")
    add(f"PUTs during the sequential write (data blocks: {expected:,.0f})", puts_a, puts_b, "lower", None,
        f"exactly {expected:,.0f}", None if puts_a is None else abs(puts_a - expected) <= 2)
    for label, what in (("fio", "read and random jobs"), ("ext4", "ext4 tests")):
        for k in ("gets", "puts", "deletes"):
            add(f"{k[:-1].upper()}s, {what}", a.get(f"{k}_{label}"), b.get(f"{k}_{label}"), "lower")
    return rows


def table(data, block_sizes, cache_bytes, seq_bytes):
    out = []
    mem = Figures(data.get(("1M", "memory"), {}), seq_bytes)
    if mem.raw:
        out += ["### Memory store through FUSE (the FUSE ceiling; 1M blocks, direct I/O, 1M requests; "
                "median of three mounts)", "",
                "| figure | s3block | target | |", "| --- | --- | --- | --- |"]
        w, r = mem.get("mem_write_mbps"), mem.get("mem_read_mbps")
        out.append(f"| sequential write, MB/s | {fmt(w)} | ≥ 1,200 | {verdict(None if w is None else w >= 1200)} |")
        out.append(f"| sequential read, MB/s | {fmt(r)} | ≥ 2,000 | {verdict(None if r is None else r >= 2000)} |")
        out.append("")
    native = data.get(("-", "native"), {}).get("untar_s")
    if native is not None:
        out += [f"The unpack on ext4 over a loop device on a RAM-backed file (no store below): {fmt(native, 2)} s.",
                ""]
    for bs in block_sizes:
        a = Figures(data.get((bs, "s3block"), {}), seq_bytes)
        b = Figures(data.get((bs, "s3backer"), {}), seq_bytes)
        ceil = dict(data.get((bs, "ceiling"), {}))
        if native is not None:
            ceil["native_untar_s"] = native
        if not (a.raw or b.raw or ceil):
            continue
        out += [f"### Block size {bs}", ""]
        if ceil:
            out.append(f"Raw store ceiling ({bs} objects): PUT {fmt(ceil.get('raw_put_mbps'))} MB/s, "
                       f"GET {fmt(ceil.get('raw_get_mbps'))} MB/s; one GET at a time "
                       f"{fmt(ceil.get('raw_single_get_ops'))} per second.")
            out.append("")
        out += ["| figure | s3block | s3backer | s3block vs s3backer | ceiling | s3block / ceiling | target | |",
                "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for row in block_table(bs, a, b, ceil, cache_bytes, seq_bytes):
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def machine():
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem_kib / (1 << 20):.1f} GiB RAM, Linux {platform.release()}; "
            f"{run(['fio', '--version'])}; s3backer {run(['dpkg-query', '-W', '-f=${Version}', 's3backer'])}; "
            f"Garage 2.5.0 (single node, loopback, data_fsync off)")


# ------------------------------------------------------------------ NBD
# bench/nbd.sh's results: s3block-nbd ("nbd"), s3backer 2.1.6 through
# nbdkit ("s3backer") and s3block-fuse ("fuse") on the same jobs. The
# section lives between these markers in docs/BENCHMARKS.md; a report of
# bench/run.sh keeps it.
NBD_BEGIN = "<!-- bench/nbd.sh: begin -->"
NBD_END = "<!-- bench/nbd.sh: end -->"
NBD_JOBS = (
    ("seqwrite", "sequential write + flush, MiB/s", "mibps", 1.5),
    ("seqread", "cold sequential read, MiB/s", "mibps", 1.5),
    ("randread", "random 4K read, IOPS", "iops", None),
    ("randwrite", "random 4K write + flush, IOPS", "iops", 5.0),
    ("copyin", "nbdcopy in (file to volume, --flush), MiB/s", "mibps", None),
    ("copyout", "nbdcopy out (cold, volume to null:), MiB/s", "mibps", None),
)


def nbd_tables(data, block_sizes):
    out = []
    for bs in block_sizes:
        n, s, f = (data.get((bs, k), {}) for k in ("nbd", "s3backer", "fuse"))
        if not (n or s or f):
            continue
        out += [f"### Block size {bs}", "",
                "| job | s3block-nbd | s3backer 2.1.6 (nbdkit) | nbd vs s3backer | target | | s3block-fuse "
                "| load (nbd / s3backer / fuse) |",
                "| --- | ---: | ---: | ---: | --- | --- | ---: | --- |"]
        for job, name, unit, target in NBD_JOBS:
            a, b, c = n.get(f"{job}_{unit}"), s.get(f"{job}_{unit}"), f.get(f"{job}_{unit}")
            r = ratio(a, b)
            ok = None if target is None or r is None else r >= target
            loads = " / ".join("–" if x.get(f"{job}_load_before") is None else
                               f"{x[f'{job}_load_before']:.1f}→{x[f'{job}_load_after']:.1f}" for x in (n, s, f))
            out.append(f"| {name} | {fmt(a)} | {fmt(b)} | {'–' if r is None else f'{r:.2f}×'} | "
                       f"{'' if target is None else f'≥ {target:g}×'} | {verdict(ok)} | {fmt(c)} | {loads} |")
        out += ["", "Server CPU seconds per GiB moved (user + system of the server process; "
                "Garage's in brackets):", "",
                "| job | s3block-nbd | s3block-fuse | s3backer 2.1.6 (nbdkit) | target | |",
                "| --- | ---: | ---: | ---: | --- | --- |"]
        for job, name, unit, target in NBD_JOBS:
            def cell(x):
                v, g = x.get(f"{job}_cpu_s_per_gib"), x.get(f"{job}_garage_cpu_s_per_gib")
                return "–" if v is None else f"{fmt(v, 2)} ({fmt(g, 2)})"
            a, c = n.get(f"{job}_cpu_s_per_gib"), f.get(f"{job}_cpu_s_per_gib")
            ok = None if a is None or c is None else a <= c
            out.append(f"| {name.rsplit(', ', 1)[0]} | {cell(n)} | {cell(f)} | {cell(s)} | nbd ≤ fuse | {verdict(ok)} |")
        out += ["", "Server stop (SIGTERM or unmount: every written block stored, then exit), s:", "",
                "| after | s3block-nbd | s3backer 2.1.6 (nbdkit) | s3block-fuse |", "| --- | ---: | ---: | ---: |"]
        for phase, what in (("write", "sequential write"), ("fio", "read and random jobs"),
                            ("copyin", "nbdcopy in"), ("copyout", "nbdcopy out")):
            out.append(f"| {what} | " + " | ".join(fmt(x.get(f"stop_s_{phase}"), 2) for x in (n, s, f)) + " |")
        out.append("")
    return "\n".join(out)


NBD_TEMPLATE = """## NBD: s3block-nbd and s3block-fuse beside s3backer 2.1.6 (nbdkit)

Written by `bench/nbd.sh`. s3block-nbd and s3backer 2.1.6's NBD mode
(`nbdkit s3backer ...`, built by `../shared/peers/build-s3backer.sh`) on two
buckets of one Garage server on loopback, same block size, same cache
({cache}: s3backer's `blockCacheSize` is that over the block size, its other
options and nbdkit's at their defaults: 16 nbdkit threads, 20 upload
threads, no read-ahead in NBD mode); s3block-fuse on the same jobs for the
CPU comparison. Each system and block size gets a fresh prefix and a
{seq} volume; the three run side by side, each job on all three (in an
order rotated from job to job) before the next job, and the servers are
restarted between phases (so the reads start cold).

Run of {started} on {machine}.

Jobs: fio's `nbd` engine over a Unix socket (s3block-fuse: fio `libaio`,
`O_DIRECT`, on its file, same depth); sequential write of the whole
volume, 1M requests, {seq_depth} in flight, with a flush at the end
(`end_fsync=1`, in the figure); after a restart, the cold sequential read
(same shape), then random 4K read and random 4K write ({rand_depth} in
flight, {runtime} s, over the whole volume, the write with a flush at the
end); after a restart, `nbdcopy --connections={connections} --threads={connections} --flush` of a
{seq} random file into the volume; after a restart, `nbdcopy` of the volume
to `null:` (same connections; nbdcopy's default 256K requests; its figures
are over its wall time; s3block-fuse's file is served to nbdcopy by
`nbdkit file`, since nbdcopy truncates a file destination). Server CPU is the
server process's user + system time (`/proc/PID/stat`) over the job, per
GiB moved; the load average (1 min) before and after each job is given
since the machine's 2 CPUs are shared.

Targets: s3block-nbd ≥ 1.5× s3backer on sequential write and read, ≥ 5×
on random 4K write; s3block-nbd's CPU per GiB at most s3block-fuse's on
the same jobs.

{table}
Reproduce: `../shared/peers/build-s3backer.sh; scripts/garage.sh install;
bench/nbd.sh` (about {minutes} minutes here; `--quick` for a 64K-only
check that prints the section). Raw figures: `bench/results-nbd-*.tsv`.

{notes}"""


def nbd_section(args, data):
    sizes = sorted({bs for bs, _ in data}, key=size_bytes)
    text = nbd_tables(data, sizes)
    notes = ""
    if args.notes:
        with open(args.notes) as f:
            notes = f.read()
    import re
    nbdkit = subprocess.run(["nbdkit", "--version"], capture_output=True, text=True).stdout.strip() or "nbdkit ?"
    mach = re.sub(r"s3backer [^;]*", f"s3backer 2.1.6 through {nbdkit}", machine())
    if args.commit:
        mach += f"; s3block at {args.commit}"
    body = NBD_TEMPLATE.format(started=args.started, machine=mach, cache=args.cache_size, seq=args.seq_size,
                               seq_depth=args.seq_depth, rand_depth=args.rand_depth, runtime=args.runtime,
                               connections=args.connections, table=text, notes=notes,
                               minutes=args.minutes).rstrip()
    return f"{NBD_BEGIN}\n{body}\n{NBD_END}\n"


def splice_nbd(path, section):
    """Puts the NBD section into the report at PATH, replacing an older one;
    a new one goes before the zstd section, else at the end."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if NBD_BEGIN in text and NBD_END in text:
        head, rest = text.split(NBD_BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(NBD_END, 1)[1]
    elif "\n## zstd beside deflate" in text:
        head, rest = text.split("\n## zstd beside deflate", 1)
        text = head + "\n" + section + "\n## zstd beside deflate" + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def kept_nbd_section(path):
    """The NBD section of an existing report, to carry over."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    if NBD_BEGIN not in text or NBD_END not in text:
        return ""
    return NBD_BEGIN + text.split(NBD_BEGIN, 1)[1].split(NBD_END, 1)[0] + NBD_END + "\n"


TEMPLATE = """# Benchmarks: s3block beside s3backer

s3block and s3backer mounted side by side on two buckets of one Garage
server on loopback, with the same block size and cache size, running the
same jobs; and the ceilings they are measured against: the object store's
own PUT and GET throughput (the `raw_store` example: the same `object_store`
S3 client s3block uses, objects of the block size, {concurrency} requests in
flight, which is s3block's default upload concurrency; its GETs come after
the page cache is dropped, as the cold read's do), its rate with one GET in
flight, and the memory store through FUSE.

Run of {started} on {machine}.

Settings: cache {cache} for each daemon (s3backer: `--blockCacheSize` =
cache / block size, its other options at their defaults, 20 upload threads);
s3block at its defaults otherwise ({concurrency} uploads in flight, 4 MiB
read-ahead); volumes of 16 GiB; sequential jobs of {seq} with 1M requests
(`--end_fsync=1` on the write); random jobs 4K, `psync`, {runtime} s
time-based over the first {seq} (the region the sequential write filled),
the write with an fsync at the end; {files} small files (bench/make-tree.py,
deterministic) unpacked into ext4 on a loop device, then `sync`.

## How to read it

- Throughput is over fio's job runtime, which includes the end fsync and
  leaves out fio's own start and exit (about 0.3 s per job here; the raw
  results keep it as `*_fio_overhead_s`).
- Rows marked "until stored" add, after fio exits, the time until the
  daemon's stats show no dirty block (what s3block's fsync guarantees).
  Uploads made while fio exits are not counted against either daemon.
  Where that adds more than 0.05 s, fio's own figure follows on the next
  row.
- Request counts come from each daemon's stats file: the count just
  before the unmount less the count right after mounting, so the mount's
  own requests (lock, mount token, volume descriptor) are left out.
- Ratios are s3block's advantage (above 1 is better for s3block, for times
  too); "s3block / ceiling" is the share of the raw store's throughput.
- The unpack's ceiling is about the least time it can take: the same
  unpack on ext4 over a RAM-backed loop file, plus the raw store's time for
  the PUTs s3block made during it. The kernel writes ext4's blocks out at
  the `sync`, after the files are unpacked, so little of the two overlaps.
  s3backer's PUT count for the unpack may leave out uploads still running
  when its `sync` returned.
- The random 4K read's ceiling is the raw store's rate with one GET in
  flight, over objects of the block size in a scattered order. A read that
  misses the cache waits for its block's GET, and fio's `psync` job has one
  read in flight, so neither daemon can pass that rate except by hitting
  its cache (a 64 MiB cache over the 1 GiB job hits about one read in 16).

{table}
## Reproduce

```
apt-get install -y fio s3backer e2fsprogs jq
scripts/garage.sh install            # once, about 10 minutes
bench/run.sh                         # about 11 minutes on 2 cores (4.5 of them s3backer's mkfs at 64K); writes this file
bench/run.sh --quick                 # 64K only, smaller jobs, prints the table
bench/run.sh --block-sizes 1M --parts ceiling,fio --report -
```

It needs root (FUSE, loop devices, dropping the page cache). Everything it
starts is stopped and detached on exit; logs and raw figures stay in
`/tmp/s3block-bench.*`. The micro-benchmarks are `cargo bench -p
s3block-examples` (zero detection, deflate) and `cargo bench -p
s3block-cache` (cache hit path, write-back path).

{notes}"""


# ------------------------------------------------------------------ round 2
# bench/run.sh's results now: s3block, s3backer 2.1.6 ("s3backer2") and
# s3backer 1.5.4 ("s3backer1"; results of the first round call it
# "s3backer"), with CPU seconds per GiB and the load around each job.
R2_END = "<!-- bench/run.sh: later runs go above this line -->"


def r2_begin(label):
    return f"<!-- bench/run.sh {label}: begin -->"


def r2_end(label):
    return f"<!-- bench/run.sh {label}: end -->"


def r2_rows(bs, a, b2, b1, ceil, cache_bytes, seq_bytes):
    """(figure, s3block, s3backer 2.1.6, s3backer 1.5.4, vs 2.1.6, ceiling, share of ceiling, target, verdict)."""
    rows = []
    bsz = size_bytes(bs)

    def add(name, x, y, z, better, ceiling=None, target="", ok=None, digits=1):
        r = ratio(x, y) if better == "higher" else ratio(y, x)
        share = ratio(x, ceiling) if better == "higher" else ratio(ceiling, x)
        rows.append((name, fmt(x, digits), fmt(y, digits), fmt(z, digits), "–" if r is None else f"{r:.2f}×",
                     fmt(ceiling, digits), "–" if share is None else f"{share:.0%}", target, verdict(ok)))

    def both(r, need_r, share, need_share):
        # Without s3backer 2.1.6's figure the target cannot be judged.
        if r is None:
            return None
        return r >= need_r and (share is None or share >= need_share)

    put, get = ceil.get("raw_put_mbps"), ceil.get("raw_get_mbps")
    w = [x.stored_rate("seqwrite", "seqwrite_clean_extra_s", "bytes") / 1e6
         if x.stored_rate("seqwrite", "seqwrite_clean_extra_s", "bytes") is not None else None for x in (a, b2, b1)]
    add("sequential write, MB/s (first write to stored)", *w, "higher", put, "≥ 1.5× and ≥ 85% of PUT",
        both(ratio(w[0], w[1]), 1.5, ratio(w[0], put), 0.85))
    add("  fio's job runtime only, MB/s", *(x.get("seqwrite_mbps") for x in (a, b2, b1)), "higher")
    rd = [x.get("seqread_mbps") for x in (a, b2, b1)]
    add("cold sequential read, MB/s", *rd, "higher", get, "≥ 1.5× and ≥ 85% of GET",
        both(ratio(rd[0], rd[1]), 1.5, ratio(rd[0], get), 0.85))
    rr = [x.get("randread_iops") for x in (a, b2, b1)]
    need = {"1M": 2.5, "256K": 1.5}.get(bs)
    r = ratio(rr[0], rr[1])
    add("cold random 4K read, IOPS", *rr, "higher", ceil.get("raw_single_get_ops"),
        f"≥ {need}×" if need else "", None if need is None or r is None else r >= need)
    kib = [None if x.get("randread_bytes_per_read") is None else x.get("randread_bytes_per_read") / 1024
           for x in (a, b2, b1)]
    add("  KiB downloaded per read", *kib, "lower", None, "≤ 64 KiB" if bs == "1M" else "",
        None if bs != "1M" or kib[0] is None else kib[0] <= 64)
    add("  GETs during it", *(x.get("randread_gets") for x in (a, b2, b1)), "lower")
    add("  of its misses, those that waited for a whole block (s3block's stats)", *(x.get("randread_whole_fetches") for x in (a, b2, b1)),
        "lower", digits=0)
    # The misses' pace: GETs a second over the job, beside the store's own
    # one-at-a-time rate for 64 KiB ranges (what s3block fetches per miss).
    gps = [None if x.get("randread_gets") is None or not x.get("randread_s") else x.get("randread_gets") / x.get("randread_s")
           for x in (a, b2, b1)]
    add("  GETs per second during it (ceiling: one 64 KiB ranged GET at a time)", *gps, "higher",
        ceil.get("raw_single_range_ops"))
    rw = [x.stored_rate("randwrite", "randwrite_clean_extra_s", "ios") for x in (a, b2, b1)]
    r = ratio(rw[0], rw[1])
    add("random 4K write + fsync, IOPS (first write to stored)", *rw, "higher", None, "≥ 5×", None if r is None else r >= 5)
    add("  fio's job runtime only, IOPS", *(x.get("randwrite_iops") for x in (a, b2, b1)), "higher")
    add("mkfs.ext4, s", *(x.get("mkfs_s") for x in (a, b2, b1)), "lower")
    # Until stored where the run waited for it (s3backer's sync returns
    # before its uploads end), else until sync returned.
    u = [x.until_stored("untar") for x in (a, b2, b1)]
    r = ratio(u[1], u[0])
    puts_untar, native = a.get("puts_untar"), ceil.get("native_untar_s")
    u_ceil = None if not (puts_untar and put and native) else native + puts_untar * bsz / (put * 1e6)
    stored = any(x.get("untar_clean_extra_s") is not None for x in (a, b2, b1))
    n = max((x.get("untar_samples") or 1) for x in (a, b2, b1))
    add("unpack small files + sync, s" + (" (until stored)" if stored else "")
        + (f", median of {n:.0f}" if n > 1 else ""), *u, "lower", u_ceil, "≥ 2×",
        None if r is None else r >= 2)
    if stored:
        add("  until sync returned, s", *(x.get("untar_s") for x in (a, b2, b1)), "lower")
    add("  PUTs during the unpack", *(x.get("puts_untar") for x in (a, b2, b1)), "lower")
    for job, what in (("seqwrite", "sequential write (until stored)"), ("seqread", "cold sequential read"),
                      ("randread", "cold random 4K read"), ("randwrite", "random 4K write (until stored)"),
                      ("untar", "unpack + sync (per GiB of tar)")):
        c = [x.get(f"{job}_cpu_s_per_gib") for x in (a, b2, b1)]
        add(f"CPU s per GiB, {what}", *c, "lower", None, "≤ 0.6× s3backer 2.1.6",
            None if c[0] is None or c[1] is None else c[0] <= 0.6 * c[1], digits=2)
    limit = (cache_bytes + 64 * MIB) / MIB
    p = [x.peak_rss_mib() for x in (a, b2, b1)]
    add("peak RSS, MiB", *p, "lower", None, f"≤ cache + 64 MiB = {limit:.0f} and < s3backer 2.1.6",
        None if p[0] is None else p[0] <= limit and (p[1] is None or p[0] < p[1]))
    expected = seq_bytes / bsz
    pw = [x.get("puts_seqwrite") for x in (a, b2, b1)]
    add(f"PUTs during the sequential write (data blocks: {expected:,.0f})", *pw, "lower", None,
        f"exactly {expected:,.0f}", None if pw[0] is None else abs(pw[0] - expected) <= 2)
    for label, what in (("fio", "random jobs"), ("ext4", "ext4 tests")):
        for k in ("gets", "puts", "deletes"):
            add(f"{k[:-1].upper()}s, {what}", *(x.get(f"{k}_{label}") for x in (a, b2, b1)), "lower")
    return rows


def r2_unpack_samples(a, b2, b1):
    """Each system's unpacks until stored, in the order run, and which one
    gave the table its figures (runs since the bench takes several)."""
    cells = []
    for name, x in (("s3block", a), ("s3backer 2.1.6", b2), ("s3backer 1.5.4", b1)):
        n = x.get("untar_samples")
        if not n:
            continue
        times = [t for t in (x.until_stored(f"untar_{i}") for i in range(1, int(n) + 1)) if t is not None]
        m = x.get("untar_median_sample")
        cells.append(f"{name} " + ", ".join(f"{t:.2f}" for t in times)
                     + ("" if m is None else f" (median: sample {m:.0f})"))
    return "; ".join(cells)


def r2_upload_starts(a):
    """s3block's uploads of each mount by why they started (runs since the
    bench records them), or an empty string."""
    cells = []
    for label, what in (("fio", "random jobs"), ("ext4", "ext4 tests")):
        n = [a.get(f"uploads_{k}_{label}") for k in ("written_whole", "delay", "flush", "dirty_limit")]
        if all(v is not None for v in n):
            cells.append(f"{what} " + " / ".join(f"{v:,.0f}" for v in n))
    return "; ".join(cells)


def r2_loads(a, b2, b1):
    """The 1-minute load before and after each job, per system, and the
    seconds the store took to settle before it (runs since the bench waits
    for that)."""
    out = []
    for job in ("seqwrite", "seqread", "randread", "randwrite", "untar"):
        cells = []
        for x in (a, b2, b1):
            lb, la = x.get(f"{job}_load_before"), x.get(f"{job}_load_after")
            settle = x.get(f"{job}_settle_s")
            cells.append("–" if lb is None else
                         f"{lb:.1f}→{la:.1f}" + ("" if settle is None else f" ({settle:.0f} s)"))
        out.append(f"{job} {' / '.join(cells)}")
    return "; ".join(out)


def r2_tables(data, cache_bytes, seq_all):
    out = []
    sizes = sorted({bs for bs, sys_ in data if sys_ not in ("memory", "native", "setup")}, key=size_bytes)
    native = data.get(("-", "native"), {}).get("untar_s")
    mem = data.get(("1M", "memory"), {})
    if mem:
        out += [f"Memory store through FUSE (1M blocks, direct I/O, median of three mounts): write "
                f"{fmt(mem.get('mem_write_mbps'))} MB/s, read {fmt(mem.get('mem_read_mbps'))} MB/s.", ""]
        bw, br = mem.get("bare_write_mbps"), mem.get("bare_read_mbps")
        if bw is not None and br is not None:
            out += ["| same jobs | s3block, memory store | bare in-memory FUSE file | s3block / bare | target | |",
                    "| --- | ---: | ---: | ---: | --- | --- |"]
            for what, a, b in (("write", mem.get("mem_write_mbps"), bw), ("read", mem.get("mem_read_mbps"), br)):
                ratio = None if a is None or not b else a / b
                out.append(f"| direct 1M {what}, MB/s | {fmt(a)} | {fmt(b)} | "
                           f"{'–' if ratio is None else f'{ratio:.2f}'} | ≥ 0.7 | "
                           f"{verdict(None if ratio is None else ratio >= 0.7)} |")
            out.append("")
    if native is not None:
        out += [f"The unpack on ext4 over a RAM-backed loop file (no store below): {fmt(native, 2)} s.", ""]
    for bs in sizes:
        # The sequential size of this block size (smaller below 64K).
        seq_bytes = int(data.get((bs, "setup"), {}).get("seq_bytes", seq_all))
        fse = fio_start_exit(data) or 0.0
        a = Figures(data.get((bs, "s3block"), {}), seq_bytes, fse)
        b2 = Figures(data.get((bs, "s3backer2"), {}), seq_bytes, fse)
        b1 = Figures(data.get((bs, "s3backer1"), data.get((bs, "s3backer"), {})), seq_bytes, fse)
        ceil = dict(data.get((bs, "ceiling"), {}))
        if native is not None:
            ceil["native_untar_s"] = native
        if not (a.raw or b2.raw or b1.raw or ceil):
            continue
        out += [f"#### Block size {bs}", ""]
        if seq_bytes != seq_all:
            out += [f"Sequential jobs, and the random jobs' region, of {seq_bytes >> 20} MiB at this block size.", ""]
        if ceil.get("raw_put_mbps") is not None:
            out += [f"Raw store ceiling ({bs} objects, {fmt(ceil.get('raw_in_flight'), 0)} requests in flight, "
                    f"as s3block keeps): PUT {fmt(ceil.get('raw_put_mbps'))} MB/s, GET "
                    f"{fmt(ceil.get('raw_get_mbps'))} MB/s; one GET at a time "
                    f"{fmt(ceil.get('raw_single_get_ops'))} per second"
                    + ("" if ceil.get("raw_single_get_p50_ms") is None
                       else f" (median {fmt(ceil.get('raw_single_get_p50_ms'))} ms)")
                    + ("" if ceil.get("raw_single_range_ops") is None
                       else f"; one 64 KiB ranged GET at a time {fmt(ceil.get('raw_single_range_ops'))} per second "
                            f"(median {fmt(ceil.get('raw_single_range_p50_ms'))} ms, 90th percentile "
                            f"{fmt(ceil.get('raw_single_range_p90_ms'))} ms)")
                    + ".", ""]
        vol = a.get("ext4_volume_bytes") or b2.get("ext4_volume_bytes")
        out += ["| figure | s3block | s3backer 2.1.6 | s3backer 1.5.4 | vs 2.1.6 | ceiling | share of ceiling "
                "| target | |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for row in r2_rows(bs, a, b2, b1, ceil, cache_bytes, seq_bytes):
            out.append("| " + " | ".join(row) + " |")
        samples = r2_unpack_samples(a, b2, b1)
        if samples:
            out += ["", f"The unpacks, each until stored, s, in the order run: {samples}."]
        starts = r2_upload_starts(a)
        if starts:
            out += ["", f"s3block's uploads by why each started (written whole / after the write delay / for a "
                        f"flush / over the dirty limit; its stats, each mount from its start): {starts}."]
        out += ["", f"Load (1 min) before→after each job, s3block / s3backer 2.1.6 / s3backer 1.5.4 "
                f"(in brackets: seconds waited before the job for Garage to settle): "
                f"{r2_loads(a, b2, b1)}." + ("" if not vol else f" ext4 volume {vol / (1 << 30):g} GiB."), ""]
    return "\n".join(out)


R2_TEMPLATE = """<!-- bench/run.sh {label}: begin -->
### {title}

Written by `bench/run.sh{cmd}` in {minutes} minutes, started {started} on
{machine}; s3block at {commit}.

Settings: cache {cache} for each daemon (s3backer: `--blockCacheSize` =
cache / block size, all its other options at their defaults: 20 upload
threads in 2.1.6 and 1.5.4); s3block at its defaults (uploads in flight
and the read-ahead window scaled to the block size: 64 at 4K, 32 at 256K,
16 at 1M; fetches at once twice the window, within half the cache: 128 at
4K, 64 at 256K, 32 at 1M); sequential jobs of {seq} with 1M requests
(`--end_fsync=1` on the write), each phase on a fresh mount after the page
cache is dropped (so the reads are cold); random
jobs 4K, `psync`, {runtime} s over the first {seq}, the read first on a cold
mount, the write with an fsync at the end; {files} small files unpacked into
ext4 on a loop device, then `sync -f` of that ext4 (the host's dirty pages
flushed before the clock starts), until no block is dirty. CPU is the
daemon's user + system time (`/proc/PID/stat`) from the job's start until
its data is stored, per GiB the job moved. Every write is of fresh random
bytes (fio's
`--refill_buffers`), as the raw ceiling's objects are. "First write to
stored" is fio's wall time, which counts the close (where s3backer 2.1.6
stores what it holds), less fio's own start and exit measured on tmpfs in
the same run ({fio_start_exit}), plus the wait after fio until no block is
dirty. {rtt}

{table}
{notes}
<!-- bench/run.sh {label}: end -->
"""


def fio_start_exit(data):
    """fio's own start and exit as the run measured it; None for runs made
    before it was measured."""
    v = data.get(("-", "setup"), {}).get("fio_start_exit_s")
    return None if v is None else float(v)


def fio_start_exit_text(data):
    v = fio_start_exit(data)
    return "not measured in this run, so nothing is taken out" if v is None else f"{v:.2f} s"


def r2_section(args, data):
    rtt = float(args.rtt or 0)
    if rtt:
        title = f"{args.label}: {rtt:g} ms round trip to Garage"
        rtt_text = (f"Every daemon, and the raw ceiling, reach Garage through `examples/latency_proxy.rs`, "
                    f"which holds each chunk {rtt / 2:g} ms in each direction (pipelined), on the same 2 "
                    f"CPUs.")
        if args.rate:
            unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(args.rate[-1].upper(), 1)
            rate = int(args.rate.rstrip("KkMmGg")) * unit
            rtt_text += (f" The proxy also caps the link at {rate:,} bytes/s ({rate * 8 / 1e6:.0f} Mbit/s) each "
                         f"way, shared by every connection, as a server's network is.")
    else:
        title = f"{args.label}: Garage on loopback"
        rtt_text = "Garage on loopback, no proxy."
    quickack = data.get(("-", "setup"), {}).get("quickack", 0) == 1
    if quickack:
        rtt_text += (" Run with `--quickack`: every connection on loopback ACKed each segment at once, so "
                     "no GET waited for a delayed ACK before its body came.")
    if data.get(("-", "setup"), {}).get("bytes_of_their_own", 0) == 1:
        rtt_text += (" Each write job has a seed of its own and each unpack a tree whose contents are its own, "
                     "so no system writes bytes the store already holds (Garage keeps each distinct block "
                     "once, and skips the disk write of a block it has).")
    if data.get(("-", "setup"), {}).get("fresh_garage_per_block_size", 0) == 1:
        rtt_text += (" Each block size after the first runs on a fresh Garage: a store pays for deletes partly "
                     "on later writes, and the peers' mkfs.ext4 deletes every block of its volume.")
    notes = ""
    if args.notes:
        with open(args.notes) as f:
            notes = f.read()
    mach = machine().replace(
        "s3backer " + subprocess.run(["dpkg-query", "-W", "-f=${Version}", "s3backer"], capture_output=True,
                                     text=True).stdout.strip(),
        "s3backer 2.1.6 and " + subprocess.run(["dpkg-query", "-W", "-f=${Version}", "s3backer"],
                                               capture_output=True, text=True).stdout.strip())
    cmd = ((f" --rtt {rtt:g}" if rtt else "") + (f" --rate {args.rate}" if args.rate else "")
           + (" --quickack" if quickack else ""))
    return R2_TEMPLATE.format(label=args.label, title=title, cmd=cmd, minutes=args.minutes, started=args.started,
                              machine=mach, commit=args.commit or "?", cache=args.cache_size, seq=args.seq_size,
                              runtime=args.runtime, files=args.files, rtt=rtt_text,
                              fio_start_exit=fio_start_exit_text(data),
                              table=r2_tables(data, size_bytes(args.cache_size), size_bytes(args.seq_size)),
                              notes=notes)


def splice_r2(path, label, section):
    """Puts SECTION into the report at PATH: in place of an earlier one of
    the same label, else above the later-runs marker, else at the top
    (after the title) under a new round 2 heading."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks: s3block beside s3backer\n"
    begin, end = r2_begin(label), r2_end(label)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    elif R2_END in text:
        head, rest = text.split(R2_END, 1)
        text = head + section + "\n" + R2_END + rest
    else:
        title, _, rest = text.partition("\n")
        text = (f"{title}\n\n## Round 2: beside s3backer 2.1.6\n\n" + section + "\n" + R2_END + "\n"
                + rest)
    with open(path, "w") as f:
        f.write(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--report", default="-")
    p.add_argument("--started", default="?")
    p.add_argument("--cache-size", default="64M")
    p.add_argument("--seq-size", default="1G")
    p.add_argument("--runtime", default="20")
    p.add_argument("--files", default="20000")
    p.add_argument("--concurrency", default="8")
    p.add_argument("--notes", help="a file whose text ends the report (analysis of this run)")
    p.add_argument("--nbd", action="store_true", help="bench/nbd.sh's results: write the NBD section only")
    p.add_argument("--seq-depth", default="8")
    p.add_argument("--rand-depth", default="32")
    p.add_argument("--connections", default="4")
    p.add_argument("--minutes", default="35")
    p.add_argument("--commit", help="the s3block commit measured")
    p.add_argument("--round2", action="store_true",
                   help="bench/run.sh's results with both s3backer versions: write that section")
    p.add_argument("--label", default="loopback", help="the run's name (round 2)")
    p.add_argument("--rtt", default="0", help="the round trip added by the proxy, ms (round 2)")
    p.add_argument("--rate", default="", help="the link's speed each way set on the proxy, e.g. 12M (round 2)")
    args = p.parse_args()
    data = load(args.results)
    if args.round2:
        section = r2_section(args, data)
        print(section)
        if args.report != "-":
            splice_r2(args.report, args.label, section)
            print(f"section {args.label!r} written into {args.report}", file=sys.stderr)
        return 0
    if args.nbd:
        section = nbd_section(args, data)
        print(section)
        if args.report != "-":
            splice_nbd(args.report, section)
            print(f"NBD section written into {args.report}", file=sys.stderr)
        return 0
    sizes = sorted({bs for bs, sys_ in data if sys_ not in ("memory", "native")}, key=size_bytes)
    text = table(data, sizes, size_bytes(args.cache_size), size_bytes(args.seq_size))
    print(text)
    if args.report != "-":
        notes = ""
        if args.notes:
            with open(args.notes) as f:
                notes = f.read()
        kept = kept_nbd_section(args.report)
        with open(args.report, "w") as f:
            f.write(TEMPLATE.format(started=args.started, machine=machine(), cache=args.cache_size,
                                    concurrency=args.concurrency, seq=args.seq_size, runtime=args.runtime,
                                    files=args.files, table=text, notes=notes).rstrip() + "\n")
            if kept:
                f.write("\n" + kept)
        print(f"report written to {args.report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
