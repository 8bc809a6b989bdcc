#!/usr/bin/env python3
"""Writes a deterministic source-like tree of small files as a tar archive.

    bench/make-tree.py OUT.tar [FILES [SEED]]

The same arguments always give the same archive (fixed seeds, fixed
timestamps). The default is 20,000 files of 200 B to 24 KiB (median about
3 KiB) in about 1,000 directories, roughly the shape of a mid-sized source
tree. The names, sizes and directories depend on FILES only; SEED (default
0) changes the files' contents, so the bench can give every unpack the same
tree in bytes no store has seen: an object store that keeps each distinct
block once (Garage does) would otherwise store a second unpack of the same
tree almost for free.
"""

import io
import random
import sys
import tarfile

WORDS = (
    "static int return struct const unsigned char void block offset length "
    "cache flush write read error buffer size index count value next prev "
    "list node key hash lock mutex thread queue request response object"
).split()


def body(rng: random.Random, size: int) -> bytes:
    out = []
    n = 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
        line = "    " * rng.randint(0, 3) + line + ";\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def main() -> int:
    if len(sys.argv) not in (2, 3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    out_path = sys.argv[1]
    files = int(sys.argv[2]) if len(sys.argv) >= 3 else 20000
    if files < 1:
        print(f"make-tree.py: FILES must be at least 1, got {files}", file=sys.stderr)
        return 2
    seed = int(sys.argv[3]) if len(sys.argv) == 4 else 0
    rng = random.Random(20240607)
    text = random.Random(f"contents {seed}")
    dirs = max(1, files // 20)
    with tarfile.open(out_path, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in range(dirs):
            info = tarfile.TarInfo(f"tree/d{d // 32:03d}/s{d:04d}")
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 1700000000
            tar.addfile(info)
        for i in range(files):
            d = rng.randrange(dirs)
            size = min(24576, max(200, int(rng.lognormvariate(8.0, 0.9))))
            data = body(text, size)
            info = tarfile.TarInfo(f"tree/d{d // 32:03d}/s{d:04d}/f{i:05d}.c")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
