"""The share of step time a worker waits for data: in memory against streaming, local Parquet
against an S3-compatible server, and a folder of JPEGs read as it is, for DCGAN on CPU, as the
BENCHMARKS.md table.

    .venv/bin/python benchmarks/data_stall.py                  # 5 runs of 300 steps
    .venv/bin/python benchmarks/data_stall.py --steps 600 --workers 2
    .venv/bin/python benchmarks/data_stall.py --folder-only    # the JPEG folder alone

Each run is a real ``distgan train`` of the quickstart job on a local Ray instance (127.0.0.1)
with ``data.cache`` memory or stream, and ``data.source`` the embedded shards or their copy in a
moto server started here on 127.0.0.1 (dummy credentials). The figure is ``data_stall`` from
``metrics.jsonl``: the time rank 0 spent in ``next(batches)`` over the log interval, averaged
over the intervals after the first (the first holds Ray Data's start-up and the first pass).

The folder is ``photo_folder.py``'s: the embedded images as RGB JPEGs of 96 to 160 pixels a side,
read with ``data.resolution=28 data.channels=1`` (the quickstart model's shape). Its decode rate
is measured apart too: ``decode_images`` (what Ray Data's tasks run) on one process, images/s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.fs
from photo_folder import write_photo_folder

from distgan.cli import main
from distgan.data import EMBEDDED_DIR
from distgan.data.folders import decode_images, folder_classes, list_folder
from distgan.train.outputs import read_metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server():
    """A moto server on 127.0.0.1 holding a copy of the embedded shards; yields their URI."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
    )  # fmt: skip
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        query = f"?endpoint_override=127.0.0.1:{port}&scheme=http"
        fs, _ = pyarrow.fs.FileSystem.from_uri(f"s3://data{query}&allow_bucket_creation=true")
        fs.create_dir("data")  # the bucket
        pyarrow.fs.copy_files(str(EMBEDDED_DIR), "data/embedded", destination_filesystem=fs)
        yield f"s3://data/embedded{query}"
    finally:
        server.stop()


def decode_rate(folder: Path, n: int = 1000) -> float:
    """Images/s of ``decode_images`` at 28×28 gray on this process (one CPU): file bytes in
    memory, so reading from disk is left out."""
    m = list_folder(str(folder), 28, 1)
    paths = [str(folder / f) for f in m.files[:n]]
    batch = {
        "bytes": np.array([Path(p).read_bytes() for p in paths], dtype=object),
        "path": np.array(paths, dtype=object),
    }
    start = time.perf_counter()
    decode_images(batch, str(folder), folder_classes(m), 28, 1)
    return len(paths) / (time.perf_counter() - start)


def one_run(
    source: str, cache: str, steps: int, workers: int, root: str, extra: tuple = ()
) -> dict:
    argv = ["train", "jobs/quickstart.yaml"] + [
        a
        for s in (
            f"data.source={source}", f"data.cache={cache}", f"train.steps={steps}",
            "train.log_every=50", f"train.checkpoint_every={steps}", f"train.sample_every={steps}",
            "train.max_minutes=0", f"scale.workers={workers}", "eval.every=0", f"run.root={root}",
            *extra,
        )
        for a in ("--set", s)
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    (run,) = [e for e in os.scandir(root) if e.is_dir() and not e.name.endswith("-done")]
    lines = read_metrics(run.path)[1:]  # after the first interval
    os.rename(run.path, f"{run.path}-done")
    return {
        "stall": statistics.mean(m["data_stall"] for m in lines),
        "img_s": statistics.mean(m["images_per_s"] for m in lines),
    }


def main_cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--folder-only", action="store_true", help="only the JPEG folder's run")
    args = ap.parse_args()
    print(f"dcgan (width 32), batch 128, {args.workers} CPU worker(s), {args.steps} steps a run")
    with tempfile.TemporaryDirectory() as folder:
        count = write_photo_folder(Path(folder), 10000, 10)
        rate = decode_rate(Path(folder))
        print(
            f"JPEG folder: {count} files; decode, crop, resize to 28×28: {rate:,.0f} images/s/CPU"
        )
        print("| data | cache | data stall (share of step time) | images/s |")
        print("|---|---|---|---|")
        with tempfile.TemporaryDirectory() as root:
            extra = ("data.resolution=28", "data.channels=1")
            r = one_run(folder, "memory", args.steps, args.workers, root, extra)
            print(f"| JPEG folder | memory | {r['stall']:.1%} | {r['img_s']:,.0f} |", flush=True)
    if args.folder_only:
        return
    with s3_server() as s3_uri, tempfile.TemporaryDirectory() as root:
        for name, source in (("local Parquet", "embedded"), ("S3 (moto, 127.0.0.1)", s3_uri)):
            for cache in ("memory", "stream"):
                r = one_run(source, cache, args.steps, args.workers, root)
                print(f"| {name} | {cache} | {r['stall']:.1%} | {r['img_s']:,.0f} |", flush=True)


if __name__ == "__main__":
    main_cli()
