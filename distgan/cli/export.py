"""``distgan export RUN|CHECKPOINT --format pt2|onnx|safetensors [--out FILE]``.

Writes the EMA generator of a run's latest checkpoint (or of the given checkpoint folder) as a
file that loads without distgan, and ``FILE.json`` beside it (architecture, inputs, output):

    distgan export runs/00003-quickstart --format onnx   # -> RUN/export/generator.onnx(.json)

    import numpy as np, onnxruntime                       # elsewhere, without distgan
    session = onnxruntime.InferenceSession("generator.onnx")
    images = session.run(None, {"z": np.random.randn(8, 100).astype("float32")})[0]  # (8,C,H,W)
"""

from __future__ import annotations

import argparse

from distgan.specs import EXPORT_FORMATS


def add_parser(verbs) -> None:
    p = verbs.add_parser(
        "export",
        help="write a trained generator as pt2, ONNX or safetensors",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("source", metavar="RUN", help="a run directory or a checkpoint folder")
    p.add_argument(
        "--format", required=True, choices=EXPORT_FORMATS, help="pt2, onnx or safetensors"
    )
    p.add_argument("--out", help="the file to write (default RUN/export/generator.<format>)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from distgan.export import export_generator

    out, sidecar = export_generator(args.source, args.format, args.out)
    print(f"written: {out} and {sidecar.name}")
    return 0
