"""Trained generators as files that other programs load without distgan.

    out, sidecar = export_generator("runs/00003-quickstart", "onnx")  # RUN/export/generator.onnx

Three formats of the EMA generator (G when the run kept no EMA) of the latest checkpoint:

- ``pt2``: ``torch.export`` program: ``torch.export.load(f).module()(z)``, plain PyTorch.
- ``onnx``: ONNX graph (opset of torch's exporter): ``onnxruntime.InferenceSession(f)``.
- ``safetensors``: the weights alone (rebuilding the network needs distgan's classes).

Each comes with ``<file>.json`` beside it: the architecture and its options, the inputs (names,
shapes, the latent distribution), the output (NCHW floats in [-1, 1]), where it came from, and
what it costs to run: its parameters and milliseconds per image at batch 1 and 64 on this CPU.
Every input's first dimension is the batch, which stays free (dynamic) in pt2 and ONNX.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import torch

from distgan.config import to_dict
from distgan.errors import JobError
from distgan.generators import load_generator
from distgan.specs import EXPORT_FORMATS, JobSpec
from distgan.storage import is_uri, open_location

SUFFIX = {"pt2": ".pt2", "onnx": ".onnx", "safetensors": ".safetensors"}
SIDECAR_FORMAT = "distgan-generator/1"
OUTPUT = "images"
EXAMPLE_BATCH = 2  # the traced batch size (1 would let the exporter fix the batch at 1)
TIMED_BATCHES = (1, 64)  # the sidecar's inference cost: ms per image at each batch size
WARMUP, REPEATS = 2, 5  # forwards before the timed ones, and timed ones (their median counts)


def generator_inputs(spec: JobSpec, n: int = EXAMPLE_BATCH) -> dict[str, torch.Tensor]:
    """Example inputs of G by the names of its ``forward`` arguments; dim 0 is the batch.

    Everything downstream (the exporters' input names and dynamic batch, the sidecar's input
    list) is built from this dict: a conditional G, ``forward(z, y)``, takes class labels too.
    """
    seeded = torch.Generator().manual_seed(0)  # the global RNG is left alone
    inputs = {"z": torch.randn(n, spec.model.z_dim, generator=seeded)}
    if spec.model.conditional:
        inputs["y"] = torch.arange(n, dtype=torch.long) % 2  # two classes: never a constant
    return inputs


INPUT_DOCS = {
    "z": "latent vectors, each entry drawn from the standard normal N(0, 1)",
    "y": "class labels (int64), 0 to num_classes - 1; the names are in the job's data manifest",
}


def export_generator(
    source: str | Path, fmt: str, out: str | Path | None = None
) -> tuple[Path, Path]:
    """Exports the generator of ``source`` (a run folder or a checkpoint folder) as ``fmt``.

    ``out`` defaults to ``<source>/export/generator.<suffix>`` (for a run in object storage,
    ``export/<run name>/generator.<suffix>`` here). Returns (the file, its JSON).
    JobError for a format or file name that does not fit; CheckpointError from the checkpoint.
    """
    if fmt not in EXPORT_FORMATS:
        raise JobError(f"--format {fmt}: expected one of {', '.join(EXPORT_FORMATS)}")
    if out:
        out = Path(out)
    elif is_uri(str(source)):  # a run in object storage: the file lands here, named after it
        out = Path("export") / open_location(str(source), "RUN").name / f"generator{SUFFIX[fmt]}"
    else:
        out = Path(source) / "export" / f"generator{SUFFIX[fmt]}"
    if out.suffix != SUFFIX[fmt]:
        raise JobError(f"--out {out}: a {fmt} export is a {SUFFIX[fmt]} file; name it so")
    G, spec, folder, ckpt = load_generator(source)
    inputs = generator_inputs(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet(), _replacing(out) as f:
        if fmt == "pt2":
            torch.export.save(_program(G, inputs), f)
        elif fmt == "onnx":
            f.write(_onnx(G, inputs))
        else:
            from safetensors.torch import save

            state = {k: v.detach().contiguous() for k, v in G.state_dict().items()}
            # complexity.json's g_params; the file's other numbers are buffers (BatchNorm's)
            count = str(sum(p.numel() for p in G.parameters()))
            f.write(save(state, metadata={"format": SIDECAR_FORMAT, "parameters": count}))
    sidecar = out.with_name(out.name + ".json")
    ema = ckpt["G_ema"] is not None
    info = describe(G, spec, inputs, fmt, out.name, folder, int(ckpt["step"]), ema)
    with _replacing(sidecar) as f:
        f.write((json.dumps(info, indent=2) + "\n").encode())
    return out, sidecar


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """An open file that replaces ``path`` once the block ends without an error.

    It is written under a fresh random name in ``path``'s folder, created exclusively
    (``mkstemp``), so a symlink planted there beforehand is never followed, and a reader of
    ``path`` sees the old file or the whole new one. Its mode is 0666 less the umask, what
    ``open()`` would give (``mkstemp`` creates 0600).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # Python reads the umask only by setting it: put it straight back
    os.umask(mask)
    return mask


def describe(
    G: torch.nn.Module,
    spec: JobSpec,
    inputs: dict[str, torch.Tensor],
    fmt: str,
    file: str,
    folder: Path,
    step: int,
    ema: bool,
) -> dict:
    """The sidecar JSON: what the file holds and how to feed it."""
    with torch.no_grad():
        shape = list(G(**inputs).shape[1:])  # (C, H, W)
    return {
        "format": SIDECAR_FORMAT,
        "file": file,
        "export": fmt,
        "weights": "G_ema" if ema else "G",
        "model": to_dict(spec)["model"],  # arch, z_dim, width and the other model options
        "num_classes": int(getattr(G, "num_classes", 0) or 0),
        "inputs": [
            {
                "name": name,
                "shape": ["N", *x.shape[1:]],
                "dtype": str(x.dtype).removeprefix("torch."),
                "description": INPUT_DOCS[name],
            }
            for name, x in inputs.items()
        ],  # fmt: skip
        "output": {
            "name": OUTPUT,
            "shape": ["N", *shape],
            "layout": "NCHW",
            "dtype": "float32",
            "range": [-1.0, 1.0],
            "to_uint8": "round((x + 1) * 127.5)",
        },
        "parameters": sum(p.numel() for p in G.parameters()),
        "inference": inference_cost(G, spec),
        "checkpoint": str(folder),
        "step": step,
        "job": to_dict(spec),
    }


def inference_cost(G: torch.nn.Module, spec: JobSpec) -> dict:
    """G's milliseconds per image in PyTorch on this machine's CPU, at each of TIMED_BATCHES:
    the median of REPEATS timed forwards after WARMUP untimed ones (the first calls allocate)."""
    ms = {}
    with torch.no_grad():
        for n in TIMED_BATCHES:
            inputs = generator_inputs(spec, n)
            for _ in range(WARMUP):
                G(**inputs)
            times = []
            for _ in range(REPEATS):
                start = time.perf_counter()
                G(**inputs)
                times.append(time.perf_counter() - start)
            ms[f"batch_{n}"] = 1000 * statistics.median(times) / n
    return {
        "ms_per_image": ms,
        "device": f"cpu, {torch.get_num_threads()} threads",
        "timing": f"PyTorch eager, eval mode, median of {REPEATS} forwards after {WARMUP}",
    }


def _dynamic_batch(inputs: dict[str, torch.Tensor]) -> dict[str, dict]:
    batch = torch.export.Dim("batch")
    return {name: {0: batch} for name in inputs}


def _program(G: torch.nn.Module, inputs: dict[str, torch.Tensor]):
    return torch.export.export(G, (), kwargs=inputs, dynamic_shapes=_dynamic_batch(inputs))


def _onnx(G: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> bytes:
    """The ONNX model as bytes: one file, whatever its size (a generator's weights are small)."""
    try:
        import onnxscript  # noqa: F401 - torch's ONNX exporter needs it
    except ImportError:
        raise JobError(
            "--format onnx: the onnx and onnxscript packages are not installed; "
            "pip install 'distgan[export]'"
        ) from None
    program = torch.onnx.export(
        G,
        (),
        None,  # written by the caller, through the file it opened
        kwargs=inputs,
        input_names=list(inputs),
        output_names=[OUTPUT],
        dynamic_shapes=_dynamic_batch(inputs),
        dynamo=True,
        verbose=False,
    )
    return program.model_proto.SerializeToString()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences the exporters' notes (missing torchvision ops, deprecations): not the user's."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
