"""Every mistake in ``tests/bad_inputs/cases.yaml``: exit 2, one line, nothing written (or, for
a case marked ``exit: 0``, one warning line and nothing written but its ``--out`` folder).

The cases run in this process through ``distgan.cli.main`` (no Ray: every input check comes
before Ray is reached). The fixtures they point at are built once, here, from real writers: shard
folders from ``write_shards``, run directories whose checkpoints come from ``checkpoint.save`` of
real G and D, and the damaged copies of those (truncated, overwritten, another architecture, a
pickle that would run code).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from distgan.cli import main
from distgan.config import dump_yaml, from_dict
from distgan.data import write_shards
from distgan.train import checkpoint as ckpts
from distgan.train.build import build_state

CASES = yaml.safe_load((Path(__file__).parent / "bad_inputs" / "cases.yaml").read_text())


class _Pwn:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _images(n: int, side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, side, side), dtype=np.uint8)


def _run_dir(root: Path, name: str, job: dict, ckpt: dict | bytes | None) -> Path:
    """A run directory as ``distgan train`` leaves it: job.resolved.yaml and one checkpoint."""
    run = root / name
    (run / "checkpoints" / "step_0000010").mkdir(parents=True)
    (run / "job.resolved.yaml").write_text(dump_yaml(from_dict(job)))
    folder = run / "checkpoints" / "step_0000010"
    if isinstance(ckpt, dict):
        ckpts.save(ckpt, folder)
    elif isinstance(ckpt, bytes):
        (folder / ckpts.STATE_FILE).write_bytes(ckpt)
    else:
        folder.rmdir()
    return run


def _checkpoint(
    job: dict, shape=(1, 28, 28), job_yaml: str | None = None, num_classes: int = 0
) -> dict:
    """A real checkpoint at step 10 of the models of ``job`` (as rank 0 writes it)."""
    spec = from_dict(job)
    state = build_state(spec, shape, torch.device("cpu"), num_classes=num_classes)
    state.step, state.images_seen = 10, 640
    return ckpts.snapshot(
        state, job_yaml or dump_yaml(spec), [ckpts.rng_state()] * 2, {"step": 10.0}
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Builds every fixture the cases name under ``{root}``."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "empty").mkdir()
    write_shards(_images(64, 28), np.arange(64) % 4, root / "data", source="test")
    write_shards(_images(64, 30), None, root / "data30", source="test")
    write_shards(_images(64, 30), np.arange(64) % 4, root / "labelled30", source="test")
    write_shards(_images(64, 28), np.arange(64) % 9, root / "labelled9", source="test")
    for name in ("bad_json", "bad_schema", "truncated", "missing_shard", "modified"):
        shutil.copytree(root / "data", root / name)
    (root / "bad_json" / "manifest.json").write_text("{not json")
    pq.write_table(
        pa.table({"pixels": pa.array(range(64), pa.int64())}),
        root / "bad_schema" / "shard-00000.parquet",
    )
    shard = root / "truncated" / "shard-00000.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    (root / "missing_shard" / "shard-00000.parquet").unlink()
    shard = root / "modified" / "shard-00000.parquet"  # the same rows, other bytes
    pq.write_table(pq.read_table(shard), shard, compression="snappy")
    # Manifests that lie about their shards (1×28×28 images labelled 0..3, 16 of each).
    lies = {
        "lie_shape": {"shape": [1, 32, 32]},
        "lie_label_set": {
            "labels": [0, 1, 2, 3, 4],
            "label_counts": {"0": 16, "1": 16, "2": 16, "3": 8, "4": 8},
        },
        "lie_label_outside": {"labels": [0, 1, 2], "label_counts": {"0": 22, "1": 21, "2": 21}},
    }
    for name, fields in lies.items():
        shutil.copytree(root / "data", root / name)
        manifest = json.loads((root / name / "manifest.json").read_text())
        (root / name / "manifest.json").write_text(json.dumps({**manifest, **fields}))

    # A dataset folder with a planted TorchScript features.pt: code eval.features: auto must not
    # run (issue 22).
    shutil.copytree(root / "data", root / "planted")
    torch.jit.script(torch.nn.Flatten()).save(str(root / "planted" / "features.pt"))

    (root / "images" / "a").mkdir(parents=True)
    Image.fromarray(_images(1, 12)[0, 0]).save(root / "images" / "a" / "good.png")
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "photos" / "cats").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(_images(1, 40, seed=i)[0, 0]).save(root / "photos" / "cats" / f"{i}.png")
    np.savez(root / "float.npz", images=np.zeros((4, 28, 28), np.float32))
    np.savez(root / "ok.npz", images=_images(4, 28)[:, 0])
    (root / "labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, 3) + bytes(3))
    with gzip.open(root / "truncated-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 2051, 100, 28, 28) + bytes(500))

    job = {
        "data": {"source": str(root / "data")},
        "model": {"arch": "mlp", "width": 16, "z_dim": 16},
        "train": {"batch_size": 32},
        "run": {"name": "r", "root": str(root / "runs")},
    }
    dcgan = {**job, "model": {"arch": "dcgan", "width": 8, "z_dim": 16}}
    good = _checkpoint(job)
    _run_dir(root, "run", job, good)
    _run_dir(root, "run_nockpt", job, None)
    _run_dir(root, "run_corrupt", job, b"not a checkpoint at all")
    buffer = root / "whole.pt"
    torch.save(good, buffer)
    _run_dir(root, "run_truncated", job, buffer.read_bytes()[: buffer.stat().st_size // 2])
    torch.save({"format": ckpts.FORMAT, "payload": _Pwn(root / "pwned")}, buffer)
    _run_dir(root, "run_pickle", job, buffer.read_bytes())
    _run_dir(root, "run_other_arch", job, _checkpoint(dcgan))
    reshaped = {**job, "data": {"source": str(root / "data30")}}
    _run_dir(root, "run_reshaped", reshaped, good)
    _run_dir(root, "mixed", job, _checkpoint(job, job_yaml=dump_yaml(from_dict(dcgan))))
    conditional = {**job, "model": {"arch": "dcgan", "width": 8, "z_dim": 16, "conditional": True}}
    _run_dir(root, "run_conditional", conditional, _checkpoint(conditional, num_classes=4))
    _own_models(root, job)
    (root / "fake_ckpt").mkdir()
    torch.save(
        {"format": "someone-else/3", "weights": torch.zeros(3)}, root / "fake_ckpt" / "state.pt"
    )
    buffer.unlink()
    return root


# Builders of a user's own (model.arch: {root}/own/broken.py:NAME) that break the contract.
BROKEN_BUILDERS = """
from torch import nn


class G(nn.Module):
    def __init__(self, z_dim, out):
        super().__init__()
        self.num_classes, self.out, self.fc = 0, out, nn.Linear(z_dim, 1)

    def forward(self, z, y=None):
        return self.fc(z).tanh().view(-1, 1, 1, 1).expand(-1, *self.out)


def raises(z_dim, width, shape, options):
    raise RuntimeError("out of ideas")


def one_module(z_dim, width, shape, options):
    return nn.Linear(1, 1)


def wrong_shape(z_dim, width, shape, options):
    return G(z_dim, (1, 32, 32)), nn.Sequential(nn.Flatten(), nn.LazyLinear(1))


def d_of_two_dims(z_dim, width, shape, options):
    return G(z_dim, shape), nn.Sequential(nn.Flatten(), nn.LazyLinear(1))


def no_classes(z_dim, width, shape, options):
    return nn.Linear(z_dim, 1), nn.Linear(1, 1)
"""


def _own_models(root: Path, job: dict) -> None:
    """Modules of a user's own under {root}/own, and runs trained with the README's example
    (jobs/mymodels.py) whose module then changed (run_own_changed) or went (run_own_missing)."""
    (root / "own").mkdir()
    (root / "own" / "broken.py").write_text(BROKEN_BUILDERS)
    (root / "own" / "syntax.py").write_text("def tiny(:\n")
    example = Path(__file__).resolve().parents[1] / "jobs" / "mymodels.py"
    shutil.copy(example, root / "own" / "mymodels.py")
    digest = hashlib.sha256(example.read_bytes()).hexdigest()
    for name in ("changed", "missing"):
        folder = root / f"own_{name}"
        folder.mkdir()
        shutil.copy(example, folder / "mymodels.py")
        model = {"arch": "mymodels:tiny", "arch_path": str(folder), "arch_sha256": digest}
        own = {**job, "model": {**model, "z_dim": 16}}
        _run_dir(root, f"run_own_{name}", own, _checkpoint(own))
    with open(root / "own_changed" / "mymodels.py", "a") as f:
        f.write("# edited after the run\n")
    (root / "own_missing" / "mymodels.py").unlink()


def _tree(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` -> sha256 of its bytes ('dir' for folders)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _fill(text: str, root: Path, job: Path) -> str:
    return text.replace("{root}", str(root)).replace("{job}", str(job))


def test_the_corpus_holds_at_least_40_distinct_cases():
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(
    case, root, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # a job without run.root would write runs/ here
    job = tmp_path / "job.yaml"
    if isinstance(case.get("job"), bytes):
        job.write_bytes(case["job"])
    elif "job" in case:
        job.write_text(_fill(case["job"], root, job))
    before_root, before_cwd = _tree(root), _tree(tmp_path)
    argv = [_fill(a, root, job) for a in case["argv"]]

    warning = case.get("exit") == 0  # a warning: the command does its work and says why
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's errors (the CLI's _Parser exits 2 itself)
        code = e.code
    finally:
        if warning:  # the only thing a warning case may write, gone whatever the verdict
            written = root / "out"
            shutil.rmtree(written) if written.is_dir() else written.unlink(missing_ok=True)
    out, err = capsys.readouterr()

    lines = err.strip().splitlines()
    assert code == case.get("exit", 2), err
    assert len(lines) == 1, err
    assert "Traceback" not in err and (warning or out == "")
    for want in case["expect"]:
        assert _fill(want, root, job) in lines[0], lines[0]
    if warning:
        assert lines[0].startswith("warning: ")
    assert _tree(root) == before_root, "a fixture was changed"
    assert _tree(tmp_path) == before_cwd, "something was written in the working directory"
    assert not (root / "pwned").exists(), "the pickle payload ran"
    assert not (root / "runs").exists() and not (root / "out").exists()
