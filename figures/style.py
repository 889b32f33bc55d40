"""One style for every figure: labelled axes, legends, greyscale-readable line styles and markers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on these machines; figures only go to files
import matplotlib.pyplot as plt  # noqa: E402

# Distinguishable without colour: vary line style and marker as well as colour.
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "v", "D", "x", "+", "*")
COLORS = ("#000000", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#777777")

_RC = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.prop_cycle": matplotlib.cycler(color=COLORS[:6], linestyle=LINESTYLES),
    "image.cmap": "cividis",  # perceptually uniform and greyscale-monotone
}


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.2):
    """A figure and its axes in the toolkit's style (size per panel in inches)."""
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    return fig, (axes[0, 0] if axes.size == 1 else axes)


def save(fig, fig_dir: Path, name: str) -> list[str]:
    """Write ``name.pdf`` and ``name.png`` into ``fig_dir``, close the figure, return both paths."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with plt.rc_context(_RC):
        fig.tight_layout()
        for ext in ("pdf", "png"):
            path = fig_dir / f"{name}.{ext}"
            # A fixed creation date keeps the PDF bytes the same run to run.
            meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
            fig.savefig(path, metadata=meta)
            paths.append(str(path))
    plt.close(fig)
    return paths
