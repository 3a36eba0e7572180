"""A picture of derived cells (matplotlib only, no graphviz): states as boxes, edges labelled with their op."""

from __future__ import annotations

from pathlib import Path

from rkd.nas.genotype import Genotype, validate_genotype
from rkd.run.artifacts import atomic_write

_INPUT_NAMES = ("c_{k-2}", "c_{k-1}")


def _draw_cell(ax, edges: list[tuple[str, int]], concat: list[int], title: str) -> None:
    nodes = len(edges) // 2
    # inputs on the left, intermediate nodes zig-zag left to right, the output on the right
    pos = {0: (0.0, 1.5), 1: (0.0, -1.5)}
    for i in range(nodes):
        pos[2 + i] = (2.2 * (i + 1), 1.1 if i % 2 == 0 else -1.1)
    out_xy = (2.2 * (nodes + 1), 0.0)
    box = dict(boxstyle="round,pad=0.3", lw=1)
    for index, (x, y) in pos.items():
        label = f"${_INPUT_NAMES[index]}$" if index < 2 else str(index - 2)
        color = "#cde4f7" if index < 2 else "#fbe3b8"
        ax.text(x, y, label, ha="center", va="center", fontsize=10, bbox={**box, "fc": color}, zorder=3)
    ax.text(*out_xy, "$c_{k}$", ha="center", va="center", fontsize=10, bbox={**box, "fc": "#d5f0d0"}, zorder=3)
    for position, (op, source) in enumerate(edges):
        target = 2 + position // 2
        (x0, y0), (x1, y1) = pos[source], pos[target]
        rad = 0.25 if position % 2 == 0 else -0.25
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            zorder=1,
            arrowprops=dict(
                arrowstyle="-|>", lw=1.1, color="#444", shrinkA=12, shrinkB=12, connectionstyle=f"arc3,rad={rad}"
            ),
        )
        # the label sits on the curve's midpoint: arc3's control point is mid + rad * (dy, -dx), and a
        # quadratic Bezier passes halfway to it
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        dx, dy = x1 - x0, y1 - y0
        ax.text(
            mx + rad * dy * 0.5,
            my - rad * dx * 0.5,
            op,
            ha="center",
            va="center",
            fontsize=7,
            color="#7a1f1f",
            bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8),
            zorder=2,
        )
    for index in concat:
        ax.annotate(
            "",
            xy=out_xy,
            xytext=pos[index],
            zorder=0,
            arrowprops=dict(arrowstyle="-|>", lw=0.8, color="#999", ls="--", shrinkA=12, shrinkB=12),
        )
    ax.set_title(title)
    ax.set_xlim(-1.0, out_xy[0] + 1.0)
    ax.set_ylim(-2.6, 2.6)
    ax.axis("off")


def plot_genotype(genotype: Genotype, path: str | Path, title: str | None = None) -> Path:
    """Draw the normal cell above the reduction cell into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    genotype = validate_genotype(genotype)
    width = max(6.0, 1.7 * (len(genotype.normal) // 2 + 2))
    fig, axes = plt.subplots(2, 1, figsize=(width, 8.0))
    _draw_cell(axes[0], list(genotype.normal), list(genotype.normal_concat), "normal cell")
    _draw_cell(axes[1], list(genotype.reduce), list(genotype.reduce_concat), "reduction cell")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path
