"""The exported transmitter/receiver pair: standalone TorchScript files that match the Python modules."""

import subprocess
import sys
import textwrap

import pytest
import torch
from clihelp import names_output

from rkd.channels import get_channel
from rkd.data import ImageTransform
from rkd.draws import symbol_mask
from rkd.export.torchscript import Receiver, Transmitter, export_link
from rkd.models.system import DistilledStudent, RKDSystem
from rkd.nas.network import Student


def tiny_system(max_symbols: int = 8) -> RKDSystem:
    torch.manual_seed(0)
    student = Student("default", in_channels=1, num_classes=10, init_channels=4, layers=3)
    return RKDSystem(
        DistilledStudent(student, 16),
        [{"name": "awgn"}],
        d_model=16,
        encoder_depth=1,
        decoder_depth=1,
        heads=2,
        mlp_ratio=2.0,
        max_symbols=max_symbols,
    ).eval()


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 28, 28, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


TRANSFORM = ImageTransform(size=28, channels=1, mean=[0.3], std=[0.3])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export shared by the tests (tracing is the slow part)."""
    system = tiny_system()
    out = tmp_path_factory.mktemp("export")
    return system, out, export_link(system, TRANSFORM, images(4), out, channel=get_channel("rayleigh"))


def test_exported_pair_matches_python_modules(exported):
    system, tmp_path, result = exported
    assert result["check"]["transmitter_max_abs_diff"] < 1e-5
    assert result["check"]["receiver_max_abs_diff"] < 1e-4
    tx = torch.jit.load(str(tmp_path / "transmitter.pt"))
    rx = torch.jit.load(str(tmp_path / "receiver.pt"))
    # another batch size than the one traced, and the same received symbols into both receivers
    x, snr, k = images(3, seed=1), torch.tensor([-5.0, 3.0, 18.0]), torch.tensor([8, 2, 5])
    with torch.no_grad():
        sent = tx(x, snr, k)
        expected = Transmitter(system, TRANSFORM)(x, snr, k)
        assert torch.allclose(sent, expected, atol=1e-5)
        mask = symbol_mask(k, 8)
        power = sent.square().sum(-1).sum(-1) / k
        assert torch.allclose(power, torch.ones(3), atol=1e-4) and bool((sent[~mask] == 0).all())
        out = get_channel("awgn").transmit(
            torch.view_as_complex(sent.contiguous()), snr, mask, generator=torch.Generator().manual_seed(3)
        )
        received = torch.view_as_real(out.y).contiguous()
        assert torch.allclose(rx(received, k, out.state), Receiver(system)(received, k, out.state), atol=1e-4)
        # and the same logits as the rkd modules used by the evaluation sweep
        tokens = system.student(TRANSFORM(x))["tokens"]
        reference = system.classify(system.decoder(out.y, mask, out.state))
        assert torch.allclose(rx(received, k, out.state), reference, atol=1e-4)
        assert tokens.shape[0] == 3


def test_exported_files_load_without_rkd(exported):
    _, tmp_path, _ = exported
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "rkd" or name.startswith("rkd.") or name == "einops":
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import torch
        tx = torch.jit.load({str(tmp_path / "transmitter.pt")!r})
        rx = torch.jit.load({str(tmp_path / "receiver.pt")!r})
        x = torch.zeros(2, 28, 28, 1, dtype=torch.uint8)
        k = torch.tensor([8, 4])
        symbols = tx(x, torch.tensor([0.0, 10.0]), k)
        logits = rx(symbols, k, torch.zeros(2, 2))
        assert symbols.shape == (2, 8, 2) and logits.shape == (2, 10)
        assert not any(m == "rkd" or m.startswith("rkd.") for m in sys.modules)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


@pytest.fixture(scope="module")
def exported_onnx(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    system = tiny_system()
    out = tmp_path_factory.mktemp("export-onnx")
    return system, out, export_link(system, TRANSFORM, images(4), out, channel=get_channel("rayleigh"), onnx=True)


def test_export_help_names_every_file_it_writes(exported_onnx):
    _, out, _ = exported_onnx
    written = sorted(p.name for p in out.iterdir())
    assert {"transmitter.pt", "receiver.pt", "transmitter.onnx", "receiver.onnx"} <= set(written)
    assert not [name for name in written if not names_output("export", name)]


def test_onnx_pair_round_trip_matches_pytorch(exported_onnx):
    from rkd.channels import normalize_power
    from rkd.export.onnx_export import run_onnx

    system, out, result = exported_onnx
    check = result["onnx"]["check"]
    assert check["transmitter_max_abs_diff"] < 1e-5 and check["receiver_max_abs_diff"] < 1e-4
    # another batch size than the exported one (the batch dimension is dynamic), through AWGN
    x, snr, k = images(5, seed=2), torch.tensor([-8.0, 0.0, 4.0, 12.0, 20.0]), torch.tensor([1, 8, 3, 5, 2])
    with torch.no_grad():
        sent = torch.from_numpy(run_onnx(out / "transmitter.onnx", x, snr, k))
        mask = symbol_mask(k, 8)
        tokens = system.student(TRANSFORM(x))["tokens"]
        reference = torch.view_as_real(normalize_power(system.transmit(tokens, snr), mask))
        assert sent.shape == (5, 8, 2) and torch.allclose(sent, reference, atol=1e-5)
        channel_out = get_channel("awgn").transmit(
            torch.view_as_complex(sent.contiguous()), snr, mask, generator=torch.Generator().manual_seed(5)
        )
        received = torch.view_as_real(channel_out.y).contiguous()
        logits = torch.from_numpy(run_onnx(out / "receiver.onnx", received, k, channel_out.state.float()))
        expected = system.classify(system.decoder(channel_out.y, mask, channel_out.state.float()))
        assert logits.shape == (5, 10) and torch.allclose(logits, expected, atol=1e-4)


def test_onnx_files_run_without_torch_or_rkd(exported_onnx):
    """The usage guide's example (docs/usage.md): numpy + onnxruntime only."""
    _, out, _ = exported_onnx
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("rkd", "torch", "einops"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        import onnxruntime as ort
        tx = ort.InferenceSession({str(out / "transmitter.onnx")!r})
        rx = ort.InferenceSession({str(out / "receiver.onnx")!r})
        images = np.zeros((2, 28, 28, 1), dtype=np.uint8)
        snr = np.array([0.0, 10.0], dtype=np.float32)
        k = np.array([8, 4], dtype=np.int64)
        (symbols,) = tx.run(None, {{"images": images, "snr_db": snr, "k": k}})
        noise = np.random.default_rng(0).normal(size=symbols.shape).astype(np.float32)
        received = symbols + noise * np.sqrt(0.5 / 10 ** (snr / 10))[:, None, None]
        state = np.stack([snr, snr], axis=-1)
        (logits,) = rx.run(None, {{"received": received, "k": k, "state": state}})
        assert symbols.shape == (2, 8, 2) and logits.shape == (2, 10), (symbols.shape, logits.shape)
        assert not any(m.split(".")[0] in ("rkd", "torch") for m in sys.modules)
        print("ok", logits.argmax(-1))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=out, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("ok")
