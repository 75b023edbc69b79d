"""An image folder as the workers' Ray Dataset: decoded once, on the cluster's CPUs, in order.

    dataset, manifest = folder_dataset(list_folder("photos/", 64, 3), out=sys.stdout)

Ray Data reads the listed files whole (``read_binary_files``) and decodes, crops and resizes them
in its CPU tasks (``data/folders.decode_images``), in the listed order; the rows are held in the
object store, so every worker's in-memory share (``data/reader.rank_rows``) is the same rows on
every run and after a restart, and a later epoch decodes nothing. The files that fail to decode
are dropped here, once, with one warning each and their count, and ``count`` (and the label
counts) of the manifest the workers get are those of the images that decoded.

Ray's own ``read_images`` is not used: it raises on the first corrupt file and ends the run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

from distgan.data.folders import FolderManifest, decode_images, folder_classes
from distgan.errors import DataError

DECODE_BATCH = 64  # files a decoding task turns into rows at once


def folder_dataset(manifest: FolderManifest, out):
    """The decoded images of ``manifest``'s folder as a materialized Ray Dataset of ``image``
    (C*H*W uint8 bytes) and ``label`` rows in listed order, and the manifest that counts them.
    Prints a warning line per unreadable file to ``out``; DataError when none decodes."""
    import ray
    from ray.data.expressions import col

    # The driver's own execution of the decode: listed order, so that rank_rows is exact.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    # Ray Data logs each execution's plan and timing at INFO to the driver's stderr: noise here.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    loc = manifest.location()
    c, h, _ = manifest.shape
    decoded = (
        ray.data.read_binary_files(
            [loc.child(f).path for f in manifest.files],
            include_paths=True,
            filesystem=None if loc.is_local else loc.fs,
        )
        .map_batches(
            decode_images,
            batch_size=DECODE_BATCH,
            fn_kwargs={
                "root": loc.path,
                "classes": folder_classes(manifest),
                "resolution": h,
                "channels": c,
            },
        )
        .materialize()
    )
    failed = decoded.filter(expr=col("error") != "").select_columns(["error", "label"]).take_all()
    for row in failed:
        print(f"distgan: warning: {row['error']}; skipped", file=out, flush=True)
    if len(failed) == manifest.count:
        raise DataError(f"{manifest.root}: none of the {manifest.count} images could be read")
    if failed:
        print(
            f"distgan: skipped {len(failed)} of {manifest.count} images that could not be read",
            file=out,
            flush=True,
        )
    images = (
        decoded.filter(expr=col("error") == "").select_columns(["image", "label"]).materialize()
    )
    return images, _without(manifest, Counter(row["label"] for row in failed))


def _without(manifest: FolderManifest, failed: Counter) -> FolderManifest:
    """``manifest`` counting only the images that decoded (``failed``: label -> files lost)."""
    count = manifest.count - sum(failed.values())
    if manifest.label_counts is None:
        return dataclasses.replace(manifest, count=count)
    counts = {k: n - failed[k] for k, n in manifest.label_counts.items() if n > failed[k]}
    return dataclasses.replace(
        manifest,
        count=count,
        labels=tuple(sorted(counts)),
        label_counts=counts,
    )
