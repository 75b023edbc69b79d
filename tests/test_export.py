"""distgan export: each format loads in a Python that never imports distgan and draws what
distgan draws for the same latents.

The run folder holds a real checkpoint of a DCGAN (BatchNorm, transposed convolutions), written
by checkpoint.save as in test_bad_inputs.py. Its EMA generator's weights and BatchNorm statistics
are moved off their initial values first, so that a format that dropped a buffer would show.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from test_bad_inputs import _checkpoint, _run_dir

from distgan.cli import main
from distgan.config import from_dict
from distgan.generators import load_generator
from distgan.models import generate, models_for_job

JOB = {"model": {"arch": "dcgan", "width": 8, "z_dim": 16}, "run": {"name": "r"}}

# Runs with -I (no current folder, no PYTHONPATH on sys.path) and checks that distgan was never
# imported, by the loaders either.
LOADER = """
import sys
import numpy as np
fmt, path, z_file, out_file = sys.argv[1:]
batches = dict(np.load(z_file))  # name -> latents (N, z_dim)
if fmt == "pt2":
    import torch
    G = torch.export.load(path).module()
    outputs = {k: G(z=torch.from_numpy(z)).detach().numpy() for k, z in batches.items()}
elif fmt == "onnx":
    import onnxruntime
    session = onnxruntime.InferenceSession(path)
    assert [i.name for i in session.get_inputs()] == ["z"]
    outputs = {k: session.run(["images"], {"z": z})[0] for k, z in batches.items()}
else:
    from safetensors.numpy import load_file
    outputs = load_file(path)
assert "distgan" not in sys.modules, "distgan was imported"
np.savez(out_file, **outputs)
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    ckpt = _checkpoint(JOB)
    torch.manual_seed(1)
    for name, t in ckpt["G_ema"].items():  # trained-looking weights and running statistics
        if t.is_floating_point():
            ckpt["G_ema"][name] = t + 0.1 * torch.randn_like(t).abs()
    return _run_dir(root, "run", JOB, ckpt)


def load_elsewhere(fmt: str, path: Path, z: dict, tmp_path: Path) -> dict[str, np.ndarray]:
    """Runs LOADER on ``z`` (name -> latents); returns its outputs by name (for safetensors:
    the tensors of the file)."""
    np.savez(tmp_path / "z.npz", **z)
    (tmp_path / "loader.py").write_text(LOADER)
    done = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "loader.py"), fmt, str(path),
         str(tmp_path / "z.npz"), str(tmp_path / "out.npz")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(tmp_path / "out.npz"))


def latents(n: int, seed: int) -> torch.Tensor:
    """The latents distgan's own ``generate(G, z_dim, n, seed)`` draws."""
    return torch.randn(n, JOB["model"]["z_dim"], generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_a_program_draws_what_distgan_draws_at_any_batch_size(fmt, run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--format", fmt]) == 0
    path = run_dir / "export" / f"generator.{fmt}"
    assert f"written: {path}" in capsys.readouterr().out
    G, spec, _, _ = load_generator(run_dir)
    batches = {"five": (5, 3), "one": (1, 4)}  # (n, seed); traced at 2: the batch stays free
    z = {k: latents(n, seed).numpy() for k, (n, seed) in batches.items()}
    theirs = load_elsewhere(fmt, path, z, tmp_path)
    for k, (n, seed) in batches.items():
        ours = generate(G, spec.model.z_dim, n, seed).numpy()  # (n, 1, 28, 28)
        assert theirs[k].shape == ours.shape == (n, 1, 28, 28)
        np.testing.assert_allclose(theirs[k], ours, rtol=0, atol=2e-5)
    info = json.loads(path.with_name(path.name + ".json").read_text())
    assert info["export"] == fmt and info["weights"] == "G_ema" and info["step"] == 10
    (z_info,) = info["inputs"]
    assert (z_info["name"], z_info["shape"], z_info["dtype"]) == ("z", ["N", 16], "float32")
    assert info["output"]["shape"] == ["N", 1, 28, 28] and info["output"]["range"] == [-1.0, 1.0]
    assert info["output"]["layout"] == "NCHW"


def test_safetensors_hold_g_ema_and_the_json_says_how_to_rebuild_it(run_dir, tmp_path):
    out = tmp_path / "g.safetensors"
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(out)]) == 0
    tensors = load_elsewhere("safetensors", out, {}, tmp_path)
    G, _, _, ckpt = load_generator(run_dir)
    expected = {k: v.numpy() for k, v in ckpt["G_ema"].items()}
    assert tensors.keys() == expected.keys()  # weights and BatchNorm buffers
    for name, value in expected.items():
        np.testing.assert_array_equal(tensors[name], value)

    info = json.loads((tmp_path / "g.safetensors.json").read_text())
    assert info["model"]["arch"] == "dcgan" and info["model"]["z_dim"] == 16
    assert info["model"]["width"] == 8 and info["num_classes"] == 0
    # What the JSON names is enough to rebuild the network that draws distgan's samples.
    shape = tuple(info["output"]["shape"][1:])
    model = from_dict({"model": info["model"]}).model
    rebuilt, _ = models_for_job(model, shape, info["num_classes"])
    rebuilt.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    z = latents(3, 0)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(z), G(z))
    assert from_dict(info["job"]).model.arch == "dcgan"
    # What it costs: its parameters (complexity.json's g_params; the file's other numbers are
    # BatchNorm's buffers) and the milliseconds per image on this CPU at batch 1 and 64.
    params = sum(p.numel() for p in G.parameters())
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["parameters"] == str(params) == str(info["parameters"])
    ms = info["inference"]["ms_per_image"]
    assert set(ms) == {"batch_1", "batch_64"} and all(v > 0 for v in ms.values())


@pytest.mark.parametrize("fmt", ["pt2", "safetensors"])
def test_export_follows_no_symlink_planted_at_the_temporary_or_the_sidecar_name(
    fmt, run_dir, tmp_path
):
    out = tmp_path / f"g.{fmt}"
    victims = {name: tmp_path / f"victim-{name}" for name in ("tmp", "json")}
    for victim in victims.values():
        victim.write_text("precious\n")
    (tmp_path / f".g.tmp.{fmt}").symlink_to(victims["tmp"])  # the name export used to write
    (tmp_path / f"g.{fmt}.json").symlink_to(victims["json"])
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0
    for victim in victims.values():
        assert victim.read_bytes() == b"precious\n"
    assert out.is_file() and not out.is_symlink() and out.stat().st_size > 1000
    sidecar = tmp_path / f"g.{fmt}.json"
    assert not sidecar.is_symlink() and json.loads(sidecar.read_text())["export"] == fmt
    # Nothing is left behind under a temporary name.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [out.name, sidecar.name, f".g.tmp.{fmt}", "victim-tmp", "victim-json"]
    )


def test_every_export_and_its_json_get_the_mode_the_umask_allows(run_dir, tmp_path):
    old = os.umask(0o027)
    try:
        for fmt in ("pt2", "onnx", "safetensors"):
            out = tmp_path / f"g.{fmt}"
            assert main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0
            for path in (out, tmp_path / f"g.{fmt}.json"):
                assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
        assert os.umask(0o027) == 0o027  # export read the umask and left it as it was
    finally:
        os.umask(old)
