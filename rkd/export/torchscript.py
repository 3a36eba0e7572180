"""Export the trained link as two standalone TorchScript files: the transmitter and the receiver.

A device that only sends needs the student and the CAT encoder; one that only receives needs the
CAT decoder and the classifier head. Each end is traced to TorchScript (``torch.jit.load`` reads
it with plain torch: no ``rkd``, no einops, no config). The channel stays outside both, as in a
real radio: the transmitter emits power-normalised symbols, the receiver takes what arrived.

* ``transmitter.pt``: ``(images uint8 [B, H, W, C], snr_db float [B], k long [B]) -> symbols [B, L, 2]``
  (re, im), unit average power over the first ``k`` symbols of each image, zeros after them; the
  student's input normalisation is inside.
* ``receiver.pt``: ``(received [B, L, 2], k long [B], state float [B, 2]) -> logits [B, classes]``;
  ``state`` = (nominal SNR dB, effective SNR dB), i.e. ``rkd.channels.ChannelOutput.state``;
  symbols after the first ``k`` are ignored.

``export.json`` records shapes, rates, the class names and how close the exported pair came to the
Python modules on test images. With the ``onnx`` extra installed, ``transmitter.onnx`` and
``receiver.onnx`` hold the same two graphs (``rkd.export.onnx_export``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from rkd.channels import _EPS as POWER_EPS
from rkd.channels import get_channel
from rkd.data import student_transform
from rkd.draws import symbol_mask
from rkd.export.onnx_export import export_onnx_pair, onnx_available
from rkd.models.factory import load_stage2
from rkd.run.artifacts import atomic_write_json


def normalize_pairs(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``rkd.channels.normalize_power`` on real pairs ``[B, L, 2]``: ONNX has no complex tensors, so
    the exported graphs (TorchScript and ONNX alike) do the same per-sample power scaling in reals."""
    x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    n_sent = mask.sum(dim=-1).clamp_min(1).to(x.dtype)
    power = x.square().sum(dim=(-2, -1)) / n_sent
    return x * torch.rsqrt(power + POWER_EPS)[:, None, None]


class Transmitter(nn.Module):
    """uint8 images + nominal SNR + k -> the power-normalised first k symbols (as real pairs)."""

    def __init__(self, system, transform) -> None:
        super().__init__()
        self.system = system
        self.transform = transform  # an rkd.data.ImageTransform: pure tensor ops, traced into the graph
        self.max_symbols = system.max_symbols

    def forward(self, images: torch.Tensor, snr_db: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        tokens = self.system.student(self.transform(images))["tokens"]
        z = torch.view_as_real(self.system.transmit(tokens, snr_db))
        return normalize_pairs(z, symbol_mask(k, self.max_symbols))


class Receiver(nn.Module):
    """Received real pairs + k + channel state -> class logits."""

    def __init__(self, system) -> None:
        super().__init__()
        self.system = system
        self.max_symbols = system.max_symbols

    def forward(self, received: torch.Tensor, k: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        y = torch.view_as_complex(received.float().contiguous())
        features = self.system.decoder(y, symbol_mask(k, self.max_symbols), state)
        return self.system.classify(features)


def example_inputs(images: torch.Tensor, max_symbols: int, seed: int = 0) -> tuple:
    """A batch of SNRs, k's and channel states to trace and to check with."""
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    snr = -10 + 30 * torch.rand(n, generator=gen)
    k = torch.randint(1, max_symbols + 1, (n,), generator=gen)
    return snr, k


@torch.no_grad()
def export_link(
    system, transform, images: torch.Tensor, out_dir: Path, channel=None, seed: int = 0, onnx: bool = False
) -> dict:
    """Trace both ends on ``images`` (uint8, a few), save them, reload and compare with the Python modules.

    The comparison sends the Python transmitter's symbols through ``channel`` (AWGN by default) with
    a seeded generator and feeds the same received symbols to both receivers. ``onnx``: also write
    ``transmitter.onnx`` / ``receiver.onnx`` and check them through onnxruntime the same way.
    """
    system = system.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tx, rx = Transmitter(system, transform).eval(), Receiver(system).eval()
    snr, k = example_inputs(images, system.max_symbols, seed)
    sent = tx(images, snr, k)
    channel = channel if channel is not None else get_channel("awgn")
    out = channel.transmit(
        torch.view_as_complex(sent.contiguous()),
        snr,
        symbol_mask(k, system.max_symbols),
        generator=torch.Generator().manual_seed(seed),
    )
    received = torch.view_as_real(out.y).contiguous()
    state = out.state.float()
    paths = {"transmitter": out_dir / "transmitter.pt", "receiver": out_dir / "receiver.pt"}
    with warnings.catch_warnings():  # shape checks are constant for a fixed L; only the batch size varies
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.jit.save(torch.jit.trace(tx, (images, snr, k), check_trace=False), str(paths["transmitter"]))
        torch.jit.save(torch.jit.trace(rx, (received, k, state), check_trace=False), str(paths["receiver"]))
    tx_loaded, rx_loaded = torch.jit.load(str(paths["transmitter"])), torch.jit.load(str(paths["receiver"]))
    logits = rx(received, k, state)
    diffs = {
        "transmitter_max_abs_diff": float((tx_loaded(images, snr, k) - sent).abs().max()),
        "receiver_max_abs_diff": float((rx_loaded(received, k, state) - logits).abs().max()),
        "n_checked": int(images.shape[0]),
    }
    result = {"paths": {key: str(p) for key, p in paths.items()}, "check": diffs}
    if onnx:
        onnx_result = export_onnx_pair(tx, rx, (images, snr, k), (received, k, state), out_dir)
        result["onnx"] = {
            "paths": onnx_result["paths"],
            "check": {**onnx_result["check"], "n_checked": diffs["n_checked"]},
        }
    return result


def export_trained(cfg, inputs, out_dir: Path, onnx: bool = True) -> dict:
    """The run's trained stage-2 link (``inputs``: its ``RunInputs``) into ``out_dir``, with ``export.json``;
    ``onnx=False`` leaves out the ONNX pair."""
    bundle, cache = inputs.bundle, inputs.cache
    system = load_stage2(
        cfg, bundle, int(cache.features["test"].shape[1]), inputs.path("stage1"), inputs.path("stage2")
    )
    images = bundle.splits["test"].images[:16]
    result = export_link(
        system, student_transform(cfg.data, bundle), images, out_dir, seed=cfg.eval.seed, onnx=onnx and onnx_available()
    )
    if "onnx" not in result:  # and none of an earlier export's ONNX files left beside this one's
        for name in ("transmitter.onnx", "receiver.onnx"):
            (out_dir / name).unlink(missing_ok=True)
        why = "--no-onnx" if not onnx else "pip install -e '.[onnx]' -c constraints.txt to get them"
        print(f"export: ONNX files skipped ({why})")
    h, w, c = bundle.image_shape
    atomic_write_json(
        out_dir / "export.json",
        {
            "format": "TorchScript (torch.jit.trace); load with torch.jit.load, no rkd needed",
            "transmitter": {
                "file": "transmitter.pt",
                "inputs": {
                    "images": f"uint8 [B, {h}, {w}, {c}]",
                    "snr_db": "float [B]",
                    "k": f"long [B], 1..{cfg.codec.max_symbols}",
                },
                "output": f"float [B, {cfg.codec.max_symbols}, 2]: (re, im), unit mean power over the first k",
            },
            "receiver": {
                "file": "receiver.pt",
                "inputs": {
                    "received": f"float [B, {cfg.codec.max_symbols}, 2]",
                    "k": "long [B]",
                    "state": "float [B, 2]: nominal, effective SNR (dB)",
                },
                "output": f"float [B, {bundle.num_classes}] logits",
            },
            "rates": cfg.codec.rates,
            "max_symbols": cfg.codec.max_symbols,
            "class_names": bundle.class_names,
            "check": result["check"],
            "onnx": (
                {
                    "files": ["transmitter.onnx", "receiver.onnx"],
                    "runtime": "onnxruntime; same inputs and outputs, dynamic batch",
                    "check": result["onnx"]["check"],
                }
                if "onnx" in result
                else None
            ),
        },
    )
    return {"dir": out_dir, **result}
