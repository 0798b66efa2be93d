"""The progress plot, in the style of Karpathy's autoresearch: attempt on x, speedup vs the
run's original baseline on y; discarded attempts grey, keeps coloured and joined by a step line
of the best so far, each keep labelled with its hypothesis; failures marked by kind."""

from __future__ import annotations

import io
from types import ModuleType

from orchestrator.report import Point

WIDTH_PX, HEIGHT_PX, DPI = 1400, 700, 100
_FAILURE_STYLE = {"incorrect": ("X", "#d62728"), "crash": ("v", "#8c564b"), "timeout": ("s", "#ff7f0e"),
                  "policy": ("P", "#9467bd"), "bad edit": ("d", "#7f7f7f"), "other": ("o", "#bcbd22"),
                  "interrupted": ("|", "#17becf")}


def _measured(points: list[Point]) -> tuple[list[int], list[float]]:
    """Attempts and speedups of the points that have one (every keep and measured discard)."""
    xy = [(p.attempt, p.speedup) for p in points if p.speedup is not None]
    return [x for x, _ in xy], [y for _, y in xy]


def _pyplot() -> ModuleType:
    # Imported on first use: matplotlib costs ~0.3 s, and most commands (the daemon, trial) never plot.
    import matplotlib

    matplotlib.use("Agg")                # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt
    return plt


def render(points: list[Point], title: str, lance: float | None = None) -> bytes:
    """The plot as PNG bytes (WIDTH_PX x HEIGHT_PX); ``lance``: Lance itself on the baseline's
    scale, drawn as a reference line (above it, a kernel beats upstream)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    try:
        measured = [p.speedup for p in points if p.speedup is not None] + ([lance] if lance else [])
        low, high = min([1.0, *measured]), max([1.0, *measured])
        span = high - low
        fail_y = low - 0.12 * span - 0.02              # failures sit on their own row under the data
        ax.axhspan(fail_y - 0.05 * span - 0.01, fail_y + 0.05 * span + 0.01, color="#f4f4f4", zorder=0)
        ax.text(0.0, fail_y, " not measured", va="center", ha="left", fontsize=8, color="#777",
                transform=ax.get_yaxis_transform())
        xs = [0] + [p.attempt for p in points]
        ax.step(xs, [1.0] + [p.best for p in points], where="post", color="#2ca02c", lw=2, label="best so far",
                zorder=2)
        ax.axhline(1.0, color="#999", lw=0.8, ls="--", zorder=1)
        if lance:
            ax.axhline(lance, color="#1f77b4", lw=1.2, ls="-.", zorder=1, label=f"Lance itself ({lance:.2f}x)")
        discards = [p for p in points if p.kind == "discard"]
        ax.scatter(*_measured(discards), color="#b0b0b0", s=28,
                   label="discarded (measured)", zorder=3)
        keeps = [p for p in points if p.kind == "keep"]
        ax.scatter(*_measured(keeps), color="#2ca02c", edgecolor="black",
                   s=70, label="kept", zorder=4)
        for i, p in enumerate(keeps):
            ax.annotate(p.label[:48], (p.attempt, p.speedup), xytext=(6, 8 + 11 * (i % 3)),
                        textcoords="offset points", fontsize=8, rotation=8, color="#1a5e1a")
        for kind, (marker, colour) in _FAILURE_STYLE.items():
            these = [p for p in points if p.kind == kind]
            if these:
                ax.scatter([p.attempt for p in these], [fail_y] * len(these), marker=marker, color=colour, s=45,
                           label=f"{kind} (not measured)", zorder=3)
        ax.set_xlim(-0.5, max(xs) + 1.5)
        ax.set_ylim(fail_y - 0.08 * span - 0.02, high + 0.25 * span + 0.05)   # room for the keep labels
        ax.set_xlabel("attempt")
        ax.set_ylabel("speedup vs the original baseline (x)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        return buf.getvalue()
    finally:
        plt.close(fig)
