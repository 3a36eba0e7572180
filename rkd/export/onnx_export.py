"""ONNX files of the transmitter and receiver, for runtimes other than torch (onnxruntime, TensorRT, edge SDKs).

The graphs are the same ``rkd.export.torchscript.Transmitter`` / ``Receiver`` modules the TorchScript files hold,
exported with torch's dynamo exporter (which turns the codec's complex symbols into real pairs), with
a dynamic batch dimension and the same inputs and outputs:

* ``transmitter.onnx``: ``images`` uint8 [B, H, W, C], ``snr_db`` float [B], ``k`` int64 [B]
  -> ``symbols`` float [B, L, 2]
* ``receiver.onnx``: ``received`` float [B, L, 2], ``k`` int64 [B], ``state`` float [B, 2]
  -> ``logits`` float [B, classes]

Needs the ``onnx`` extra (``pip install -e .[onnx]``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

INPUTS = {"transmitter": ("images", "snr_db", "k"), "receiver": ("received", "k", "state")}
OUTPUTS = {"transmitter": ("symbols",), "receiver": ("logits",)}


class OnnxUnavailable(RuntimeError):
    """The optional ONNX packages are not installed."""


def _missing() -> list:
    import importlib.util

    return [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]


def onnx_available() -> bool:
    return not _missing()


def _require() -> None:
    missing = _missing()
    if missing:
        raise OnnxUnavailable(
            f"ONNX export needs {', '.join(missing)}: pip install -e '.[onnx]' "
            f"(with -c constraints.txt so torch stays pinned)"
        )


def export_module(module: torch.nn.Module, args: tuple, path: Path, end: str) -> Path:
    """One end to ``path`` with a dynamic batch dimension on every input."""
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notes
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            input_names=list(INPUTS[end]),
            output_names=list(OUTPUTS[end]),
            dynamic_shapes=tuple({0: batch} for _ in args),
            external_data=False,
            verbose=False,
        )
    return path


def run_onnx(path: Path, *args: torch.Tensor) -> np.ndarray:
    """Run an exported end with onnxruntime on CPU (the round-trip check, and what a user would do)."""
    import onnxruntime as ort  # optional dependency, loaded only here

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {name: a.detach().cpu().numpy() for name, a in zip(names, args)})[0]


@torch.no_grad()
def export_onnx_pair(tx: torch.nn.Module, rx: torch.nn.Module, tx_args: tuple, rx_args: tuple, out_dir: Path) -> dict:
    """Export both ends, then run the files with onnxruntime on the same inputs as the PyTorch modules."""
    _require()
    out_dir = Path(out_dir)
    paths = {
        "transmitter": export_module(tx, tx_args, out_dir / "transmitter.onnx", "transmitter"),
        "receiver": export_module(rx, rx_args, out_dir / "receiver.onnx", "receiver"),
    }
    diffs = {}
    for end, module, args in (("transmitter", tx, tx_args), ("receiver", rx, rx_args)):
        diffs[f"{end}_max_abs_diff"] = float(np.abs(run_onnx(paths[end], *args) - module(*args).numpy()).max())
    return {"paths": {end: str(p) for end, p in paths.items()}, "check": diffs}
