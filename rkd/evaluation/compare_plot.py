"""The comparison's figure: accuracy vs SNR per channel at one k, bands over seeds, reference curves.

Reference curves beside the methods: the yardstick (``rkd.evaluation.yardstick``: the student's decision
sent with the best known code) and, where label-digital ran, the accuracy its code would have under
Shannon's sphere-packing converse and under the normal approximation (``rkd.baselines.label_code``).

The lead figure (``lead_png``) is the one a reader sees first: fewer curves, each with its band, on the
two channels and two code lengths where the methods differ most.
"""

from __future__ import annotations

import io

from rkd.evaluation.compare_render import RKD, band, curve, is_bound, method_k
from rkd.evaluation.yardstick import METHOD as YARDSTICK

LABEL_DIGITAL = "label-digital"
# The lead figure: RKD-SC, what it is without its teacher at the same budget, the classic learned design
# given the teacher's compute too, that design with the same KD, and the explicit digital code. A tuple
# is one curve with alternatives, the first that ran shown: the no-teacher control tuned on its own
# learning-rate grid is the fairer control, the no-KD ablation (RKD-SC's rates) stands in without it.
LEAD_METHODS = (RKD, ("no-teacher", "ablation:no-kd"), "deep-jscc-budget", "deep-jscc-kd", LABEL_DIGITAL)
LEAD_PANELS = (("awgn", 8), ("awgn", 32), ("rayleigh-csi", 8), ("rayleigh-csi", 32))
REFERENCES = (
    ("converse_accuracy", "converse (sphere packing)", "-."),
    ("normal_approximation_accuracy", "normal approx.", ":"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(plt, fig) -> bytes:
    """The laid-out figure as PNG bytes; the figure is closed."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def _style(method: str, bound: bool) -> dict:
    if method == RKD:
        return {"lw": 2.2, "color": "k"}
    if method.startswith("ablation:"):
        return {"ls": "--", "lw": 1}
    return {"ls": ":", "lw": 1.2} if bound else {"lw": 1.3}


def _methods(ax, records: list, methods: list, label: str, k: int, summaries: dict, every_band: bool = False) -> None:
    for method in methods:
        mk = method_k(records, method, k)
        pts = sorted(curve(records, method, label, mk).items()) if mk is not None else []
        if mk is None or not pts:
            continue
        bound = is_bound(summaries.get(method, {}))
        name = f"{method} (bound)" if bound else method
        (line,) = ax.plot(
            [p[0] for p in pts],
            [100 * p[1] for p in pts],
            marker="o",
            ms=2.5,
            label=f"{name} (k={mk})",
            **_style(method, bound),
        )
        ci = sorted(band(records, method, label, mk).items())
        if ci and (every_band or not method.startswith("ablation:")):
            ax.fill_between(
                [c[0] for c in ci],
                [100 * c[1][0] for c in ci],
                [100 * c[1][1] for c in ci],
                color=line.get_color(),
                alpha=0.15,
                lw=0,
            )


def _references(ax, records: list, yardstick: list, label: str, k: int) -> None:
    pts = sorted(curve(yardstick, YARDSTICK, label, k).items())
    if pts:
        ax.plot(
            [p[0] for p in pts],
            [100 * p[1] for p in pts],
            color="0.35",
            ls="--",
            lw=1.4,
            label=f"yardstick: student x decision code (k={k})",
        )
    rows = sorted(
        (
            r
            for r in records
            if r["method"] == LABEL_DIGITAL
            and r["channel_label"] == label
            and r["channel_uses"] == k
            and r["snr_db"] is not None
        ),
        key=lambda r: r["snr_db"],
    )
    for key, name, ls in REFERENCES:
        pts = [(r["snr_db"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax.plot(
                [p[0] for p in pts], [100 * p[1] for p in pts], color="0.6", ls=ls, lw=1, label=f"label-digital {name}"
            )


def comparison_png(records: list, yardstick: list, methods: list, k: int, summary: dict, summaries: dict) -> bytes:
    """The figure as PNG bytes (rendered before anything is written, so a failure leaves no half-written outputs)."""
    plt = _pyplot()
    labels = list(dict.fromkeys(r["channel_label"] for r in records if r["snr_db"] is not None))
    fig, axes = plt.subplots(1, len(labels), figsize=(4.6 * len(labels), 4.2), sharey=True, squeeze=False)
    for ax, label in zip(axes[0], labels):
        _methods(ax, records, methods, label, k, summaries)
        _references(ax, records, yardstick, label, k)
        ax.axhline(100 * summary["teacher_accuracy"], color="gray", ls=":", lw=1, label="teacher (clean)")
        ax.set_title(label)
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=6.5, loc="lower right")
    fig.suptitle(
        f"accuracy vs SNR at k = {k} channel uses (conference design: its own k or equal energy); "
        "bands: 95% CI over seeds",
        fontsize=10,
    )
    return _png(plt, fig)


def lead_panels(records: list) -> tuple:
    """``(panels, methods)`` of the lead figure: the (channel, k) panels RKD-SC was swept on, the methods present."""
    panels = [(label, k) for label, k in LEAD_PANELS if curve(records, RKD, label, k)]
    ran = {r["method"] for r in records if r["snr_db"] is not None}
    methods = []
    for slot in LEAD_METHODS:
        methods += [m for m in (slot if isinstance(slot, tuple) else (slot,)) if m in ran][:1]
    return panels, methods


def lead_png(records: list, summary: dict, summaries: dict) -> bytes | None:
    """The lead figure as PNG bytes (2x2: AWGN and Rayleigh with CSI at k = 8 and 32), None without its panels."""
    panels, methods = lead_panels(records)
    if not panels:
        return None
    plt = _pyplot()
    cols = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), sharey=True, squeeze=False)
    for ax, (label, k) in zip(axes.flat, panels):
        _methods(ax, records, methods, label, k, summaries, every_band=True)
        ax.axhline(100 * summary["teacher_accuracy"], color="gray", ls=":", lw=1, label="teacher (clean)")
        ax.axhline(100 * summary["student_accuracy"], color="gray", ls="--", lw=1, label="student (clean)")
        ax.set_title(f"{label}, k = {k} channel uses", fontsize=10)
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (%)")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    seeds = max((r.get("seeds", 1) for r in records if r["snr_db"] is not None), default=1)
    fig.suptitle(f"accuracy vs SNR, mean over {seeds} training seeds; bands: 95% CI over seeds", fontsize=10)
    return _png(plt, fig)
