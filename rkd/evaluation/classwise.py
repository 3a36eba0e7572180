"""What the evaluation says per class: the dataset described, per-class accuracy, confusion matrices.

Overall accuracy hides which classes noise breaks first. The eval stage therefore records the
class names and the dataset's shape, the clean student's and RKD-SC's per-class accuracy at a few
SNRs (the full code, k = the largest rate, on the first trained channel, AWGN when it was
trained), and confusion matrices for the clean student and for RKD-SC at a low SNR. RKD-SC's
predictions come from the system's public ``transmit``/``receive`` with a generator seeded by
``eval.seed``, so its numbers are a fresh, reproducible draw, not read off the sweep's table.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rkd.evaluation.records import cell_generator

LOW_SNR_DB = 0.0  # the confusion matrix's SNR when the grid reaches it; else the grid's lowest


def dataset_description(bundle, student_size: int) -> dict:
    """Source, class names, split sizes and image size, for results.json and the report."""
    h, w, c = bundle.image_shape
    return {
        "source": bundle.source,
        "num_classes": bundle.num_classes,
        "class_names": list(bundle.class_names),
        "splits": {name: len(split) for name, split in bundle.splits.items()},
        "image_shape": [h, w, c],
        "student_input_size": int(student_size),
        "notes": list(bundle.notes),
    }


def chosen_snrs(grid: list) -> tuple[list, float]:
    """A few SNRs for per-class accuracy (lowest, the low one, highest) and the low one for the matrix."""
    low = LOW_SNR_DB if grid[0] <= LOW_SNR_DB <= grid[-1] else grid[0]
    low = min(grid, key=lambda s: abs(s - low))
    return sorted({grid[0], low, grid[-1]}), low


def _channel_index(system) -> int:
    names = [getattr(ch, "name", "") for ch in system.channels]
    return names.index("awgn") if "awgn" in names else 0


def _channel_name(channel) -> str:
    csi = getattr(channel, "csi", None)
    return channel.name if channel.name == "awgn" or csi is None else f"{channel.name} (csi={csi})"


@torch.no_grad()
def rkd_predictions(system, tokens: torch.Tensor, snr: float, k: int, batch_size: int, seed: int) -> torch.Tensor:
    """RKD-SC's predicted classes for every test image at one SNR and k, on the system's device (seeded noise
    from a CPU generator, so the draws do not depend on the device); returned on the CPU."""
    generator = cell_generator(seed)
    index = _channel_index(system)
    device = next(system.parameters()).device
    preds = []
    for start in range(0, tokens.shape[0], batch_size):
        t = tokens[start : start + batch_size].to(device)
        n = t.shape[0]
        snr_b = torch.full((n,), float(snr), device=device)
        z = system.transmit(t, snr_b)
        k_b, ids = torch.full((n,), int(k), device=device), torch.full((n,), index, device=device)
        out = system.receive(z, snr_b, k_b, ids, generator=generator)
        preds.append(out["logits"].argmax(-1).cpu())
    return torch.cat(preds)


def shared_predictions(system, tokens: torch.Tensor, snrs: list, k: int, batch_size: int, seed: int, share) -> dict:
    """``{snr: predictions}`` for the SNRs ``share(snrs)`` deals to this process (each rank sweeps its own)."""
    return {float(snr): rkd_predictions(system, tokens, snr, k, batch_size, seed) for snr in share(snrs)}


def per_class_accuracy(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list:
    """Accuracy of each class (None for a class with no test image)."""
    out = []
    for c in range(num_classes):
        rows = labels == c
        out.append(int((preds[rows] == c).sum()) / int(rows.sum()) if bool(rows.any()) else None)
    return out


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list:
    """Counts, rows = true class, columns = predicted class."""
    flat = torch.bincount(labels.long() * num_classes + preds.long(), minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes).tolist()


def classwise_summary(
    system,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    student_preds: torch.Tensor,
    class_names: list,
    grid: list,
    rates: list,
    batch_size: int,
    seed: int,
    rkd_preds: dict | None = None,
) -> dict:
    """Per-class accuracy (student clean; RKD-SC at a few SNRs) and the two confusion matrices.

    ``rkd_preds``: RKD-SC's predictions per SNR of ``chosen_snrs(grid)`` (``shared_predictions`` of every
    rank, merged); computed here when not given."""
    n = len(class_names)
    snrs, low = chosen_snrs(grid)
    k = max(rates)
    system = system.eval()
    channel = system.channels[_channel_index(system)]
    if rkd_preds is None:
        rkd_preds = shared_predictions(system, tokens, snrs, k, batch_size, seed, share=lambda s: s)

    def entry(method: str, snr: float | None, preds: torch.Tensor) -> dict:
        label = "student (clean)" if snr is None else f"RKD-SC {snr:g} dB"
        return {
            "label": label,
            "method": method,
            "snr_db": snr,
            "accuracy": int((preds == labels).sum()) / labels.numel(),
            "per_class": per_class_accuracy(preds, labels, n),
            "matrix": confusion_matrix(preds, labels, n),
        }

    entries = [entry("student", None, student_preds)]
    entries += [entry("rkd-sc", float(snr), rkd_preds[float(snr)]) for snr in snrs]
    for e in entries:  # matrices for the clean student and the low SNR only
        if e["snr_db"] not in (None, float(low)):
            del e["matrix"]
    return {
        "class_names": list(class_names),
        "test_counts": torch.bincount(labels.long(), minlength=n).tolist(),
        "channel": channel.name,
        "csi": getattr(channel, "csi", "n/a") if channel.name != "awgn" else "n/a",
        "channel_uses": int(k),
        "low_snr_db": float(low),
        "seed": int(seed),
        "entries": entries,
    }


def csv_rows(classwise: dict | None) -> list:
    """Per-class rows for results.csv, named in its ``class`` column (the overall rows leave it empty)."""
    rows: list[dict] = []
    if classwise is None:
        return rows
    for e in classwise.get("entries", []):
        clean = e["snr_db"] is None
        for name, count, acc in zip(classwise["class_names"], classwise["test_counts"], e["per_class"]):
            rows.append(
                {
                    "method": e["method"],
                    "channel": "clean" if clean else classwise["channel"],
                    "csi": "n/a" if clean else classwise["csi"],
                    "channel_label": "clean" if clean else classwise["channel"],
                    "snr_db": e["snr_db"],
                    "channel_uses": None if clean else classwise["channel_uses"],
                    "accuracy": acc,
                    "n_test": count,
                    "class": name,
                }
            )
    return rows


def describe_dataset(d: dict) -> str:
    """One report line: source, classes by name, split sizes, image size."""
    names = d["class_names"]
    shown = ", ".join(f"`{n}`" for n in names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "")
    splits = " / ".join(f"{k} {v:,}" for k, v in d["splits"].items())
    h, w, c = d["image_shape"]
    return (
        f"Dataset: `{d['source']}`; {d['num_classes']} classes: {shown}; images {splits}; "
        f"{h}x{w}x{c} pixels (student input {d['student_input_size']} px)."
    )


def render_lines(cw: dict, most: int = 20) -> list:
    """The report's per-class section (the lowest ``most`` classes at the low SNR when there are more)."""
    entries, names = cw["entries"], cw["class_names"]
    order = list(range(len(names)))
    low = next(e for e in entries if e["snr_db"] == cw["low_snr_db"])
    if len(names) > most:
        order = sorted(order, key=lambda i: (low["per_class"][i] is None, low["per_class"][i] or 0.0))[:most]
    channel = cw["channel"] + (f", csi {cw['csi']}" if cw["csi"] != "n/a" else "")
    lines = [
        "## Per-class accuracy (%)",
        "",
        f"RKD-SC over {channel}, k = {cw['channel_uses']}, noise seeded with {cw['seed']}"
        + (f"; the {most} classes lowest at {cw['low_snr_db']:g} dB of {len(names)}" if len(names) > most else "")
        + ". Confusion matrices (clean student; RKD-SC at "
        f"{cw['low_snr_db']:g} dB): `confusion_matrix.png`.",
        "",
        "| class | test images | " + " | ".join(e["label"] for e in entries) + " |",
        "|---|---:|" + "---:|" * len(entries),
    ]
    for i in order:
        cells = " | ".join("" if e["per_class"][i] is None else f"{100 * e['per_class'][i]:.1f}" for e in entries)
        lines.append(f"| {names[i]} | {cw['test_counts'][i]} | {cells} |")
    lines.append(
        "| **all** | "
        + f"{sum(cw['test_counts'])} | "
        + " | ".join(f"{100 * e['accuracy']:.1f}" for e in entries)
        + " |"
    )
    return lines + [""]


def plot_confusion(out_dir: Path, cw: dict | None) -> list:
    """``confusion_matrix.png``: row-normalised matrices side by side, classes named on both axes."""
    if not cw:
        return []
    import matplotlib  # the plotting backend loads only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [e for e in cw["entries"] if "matrix" in e]
    n = len(cw["class_names"])
    size = min(24.0, max(4.0, 0.35 * n + 2))
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size), squeeze=False)
    for ax, e in zip(axes[0], panels):
        m = torch.tensor(e["matrix"], dtype=torch.float64)
        m = m / m.sum(dim=1, keepdim=True).clamp_min(1)
        image = ax.imshow(m.numpy(), vmin=0, vmax=1, cmap="Blues")
        ticks = range(n) if n <= 40 else range(0, n, max(1, n // 20))
        ax.set_xticks(list(ticks), [cw["class_names"][i] for i in ticks], rotation=90, fontsize=7)
        ax.set_yticks(list(ticks), [cw["class_names"][i] for i in ticks], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{e['label']}: {100 * e['accuracy']:.1f}%")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(out_dir) / "confusion_matrix.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
