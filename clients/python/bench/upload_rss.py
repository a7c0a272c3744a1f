#!/usr/bin/env python3
"""The client's peak memory while it packs and uploads a big workspace: incompressible files of
``--mib`` MiB in all (default 300), submitted to a service, whose ``max_upload`` and
``max_workspace`` must allow them (``cordon serve`` with ``max_upload: 1GiB`` and
``max_workspace: 1GiB`` in its config). Compare with ``--mib 0``: the workspace is streamed
from a temporary file, so the peak should not grow with it.

    python3 clients/python/bench/upload_rss.py --server http://127.0.0.1:8420 --token-file DATA/token
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cordon_client import Client  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--mib", type=int, default=300, help="workspace size in MiB, in files of 100 MiB at most")
    args = ap.parse_args()
    client = Client(args.server, token_file=args.token_file, timeout=300)
    with tempfile.TemporaryDirectory(prefix="cordon-upload-rss-") as tmp:
        ws = Path(tmp)
        left, i = args.mib << 20, 0
        (ws / "small.txt").write_text("hi\n")
        while left > 0:
            n = min(left, 100 << 20)
            with open(ws / f"blob{i}", "wb") as f:
                for _ in range(n >> 20):
                    f.write(os.urandom(1 << 20))
            left, i = left - n, i + 1
        spec = {
            "image": "cordon/python:3.11",
            "steps": [{"name": "size", "run": "du -sb ."}],
            "limits": {"scratch": "1GiB", "memory": "2GiB"},
        }
        t0 = time.monotonic()
        job = client.submit(spec, ws)
        t1 = time.monotonic()
        result = job.wait(timeout=900)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"workspace {job.packed}")
    print(f"pack + upload {t1 - t0:.1f} s; job {result.outcome}")
    print(f"client peak RSS {rss:.1f} MiB")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
