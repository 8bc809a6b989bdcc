#!/usr/bin/env python3
"""Mixed I/O on s3block's device file, every read checked against a model.

Random writes (a 4 KiB page up to 1 MiB, aligned to 4 KiB or not), reads of
what was written (and of what never was: zeros), fsyncs, and punched holes
(fallocate PUNCH_HOLE, which the mount turns into discards), for a given
time. The model is a bytearray of the device's size kept in this process;
every read must equal it, byte for byte. Prints one summary line a minute
and a final JSON line; exits 1 at the first mismatch, naming the offset.

Usage: soak_io.py DEVICE_FILE SECONDS [SEED]
"""

import ctypes
import ctypes.util
import hashlib
import json
import os
import random
import sys
import time

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def punch(fd, offset, length):
    mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    if libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fallocate(PUNCH_HOLE, {offset}, {length}): {os.strerror(err)}")


def main():
    path, seconds = sys.argv[1], float(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDWR)
    size = os.fstat(fd).st_size
    # The whole device is modelled: keep it small (256 MiB is 256 MiB here).
    model = bytearray(size)
    # Writes and reads go to a working set of a quarter of the device most
    # of the time, so that reads hit both the cache and the store.
    hot = size // 4
    counts = {"writes": 0, "reads": 0, "fsyncs": 0, "punches": 0, "bytes_written": 0, "bytes_checked": 0}
    started = time.monotonic()
    next_report = started + 60
    while time.monotonic() - started < seconds:
        op = rng.random()
        span = hot if rng.random() < 0.8 else size
        length = rng.choice([4096, 4096, 16384, 65536, 262144, 1 << 20])
        if rng.random() < 0.2:
            length = rng.randrange(1, length + 1)
        offset = rng.randrange(0, span - length)
        if rng.random() < 0.7:
            offset -= offset % 4096
        if op < 0.45:
            data = rng.randbytes(length)
            n = os.pwrite(fd, data, offset)
            if n != length:
                sys.exit(f"short write at {offset}: {n} of {length} bytes")
            model[offset : offset + length] = data
            counts["writes"] += 1
            counts["bytes_written"] += length
        elif op < 0.90:
            got = os.pread(fd, length, offset)
            want = bytes(model[offset : offset + length])
            if got != want:
                at = next(i for i in range(min(len(got), len(want))) if got[i] != want[i]) if len(got) == len(want) else min(len(got), len(want))
                print(json.dumps({"mismatch_at": offset + at, "read_offset": offset, "length": length, "got_len": len(got), **counts}))
                sys.exit(f"MISMATCH: read of {length} bytes at {offset} differs from the model at byte {offset + at}")
            counts["reads"] += 1
            counts["bytes_checked"] += length
        elif op < 0.97:
            os.fsync(fd)
            counts["fsyncs"] += 1
        else:
            punch(fd, offset, length)
            model[offset : offset + length] = bytes(length)
            counts["punches"] += 1
        now = time.monotonic()
        if now >= next_report:
            next_report += 60
            print(f"{now - started:6.0f} s: " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
    os.fsync(fd)
    # The whole device, read back once at the end.
    for offset in range(0, size, 1 << 20):
        got = os.pread(fd, 1 << 20, offset)
        if got != model[offset : offset + (1 << 20)]:
            sys.exit(f"MISMATCH in the final read of the MiB at {offset}")
        counts["bytes_checked"] += len(got)
    os.close(fd)
    counts["seconds"] = round(time.monotonic() - started, 1)
    counts["sha256"] = hashlib.sha256(model).hexdigest()
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
