"""Pictures of attention and of what heads do: matplotlib plots, each returning a Figure.

Taught in notebook 07 (and ``readable_labels`` in notebook 02). Read top to bottom:

1. **Fonts.** ``plot_fonts`` (matplotlib's sans-serif, then every installed font with Chinese, Japanese or
   Korean glyphs; ``course.start()`` sets it) and ``readable_labels`` (a box, and a note saying which font to
   install, for a character no font can draw).
2. **Attention as heatmaps**: ``plot_attention_grid`` (a layer x head grid), ``plot_head`` (one head, tokens on
   both axes), ``plot_cls_attention`` (where [CLS] looks).
3. **What heads do**: ``plot_head_stats``, ``plot_head_classes``, ``plot_class_comparison``,
   ``plot_attention_change``.

The numbers come from :mod:`bertbook.attention_maps`, and every plot takes the weights in any of its forms:
an ``AttentionData``, a tensor ``(L, H, T, T)``, or the per-layer tuple a model returns. bertviz's interactive
views are in :mod:`bertbook.views`.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
import torch

from .attention_maps import (HEAD_CLASSES, AttentionData, HeadClasses, HeadStats, as_attentions, check_index,
                             class_fractions, cls_rows)

__all__ = [
    "plot_fonts",
    "readable_labels",
    "plot_attention_grid",
    "plot_head",
    "plot_cls_attention",
    "plot_head_stats",
    "plot_head_classes",
    "plot_class_comparison",
    "plot_attention_change",
]


# ----------------------------------------------------------------------------------------------------------
# 1. Fonts
# ----------------------------------------------------------------------------------------------------------

# Fonts with Chinese, Japanese and Korean glyphs, in order of preference (Linux, macOS, Windows). Matplotlib's
# own DejaVu Sans has none: without one of these, a CJK token shows as a box.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans SC",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "PingFang SC", "Hiragino Sans GB",
             "Microsoft YaHei", "SimHei", "Arial Unicode MS")


@functools.lru_cache(maxsize=1)
def _fonts() -> tuple[tuple[str, frozenset], ...]:
    """(family, the code points it draws) for matplotlib's sans-serif font and each installed CJK font."""
    from matplotlib import font_manager, ft2font

    paths = {"sans-serif": font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]))}
    installed = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    paths.update((name, installed[name]) for name in CJK_FONTS if name in installed)
    fonts = []
    for name, path in paths.items():
        try:
            fonts.append((name, frozenset(ft2font.FT2Font(path).get_charmap())))
        except (OSError, RuntimeError):  # an unreadable font file: leave it out
            continue
    return tuple(fonts)


def plot_fonts() -> list[str]:
    """The font families for plots: matplotlib's sans-serif, then every installed font with CJK glyphs.
    Matplotlib takes each glyph from the first family that has it; ``start()`` sets this list."""
    return [name for name, _ in _fonts()]


def readable_labels(labels: Sequence[str]) -> tuple[list[str], str]:
    """``labels`` with every character that no plot font can draw replaced by a box, and a note saying
    which characters and how to get a font for them ("" when all can be drawn). Matplotlib would draw the
    same boxes, with a warning per character under the plot (notebooks 02 and 07)."""
    drawable = frozenset().union(*(points for _, points in _fonts()))
    missing = sorted({ch for label in labels for ch in label if not ch.isspace() and ord(ch) not in drawable})
    if not missing:
        return list(labels), ""
    box = "\u25a1" if 0x25A1 in drawable else "?"
    gone = set(missing)
    shown = ["".join(box if ch in gone else ch for ch in label) for label in labels]
    listed = "".join(missing[:12]) + ("..." if len(missing) > 12 else "")
    note = (f"No font installed here has the characters {listed}, so the plot shows {box} in their place. For "
            f"Chinese, Japanese or Korean install Noto Sans CJK (Debian/Ubuntu: apt install fonts-noto-cjk), "
            f"delete matplotlib's font cache (~/.cache/matplotlib) and restart the kernel.")
    return shown, note


# ----------------------------------------------------------------------------------------------------------
# 2. Attention as heatmaps
# ----------------------------------------------------------------------------------------------------------

def _tokens_of(x: Any, tokens: Sequence[str] | None) -> list[str] | None:
    if tokens is not None:
        return list(tokens)
    return list(x.tokens) if isinstance(x, AttentionData) else None


def _title(x: Any, default: str) -> str:
    return f"{x.name}: {default}" if isinstance(x, AttentionData) and x.name else default


def plot_attention_grid(attentions: Any, tokens: Sequence[str] | None = None, *,
                        layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                        show_tokens: bool | None = None, cell_size: float = 1.6):
    """A layer x head grid of attention heatmaps (rows: queries, columns: keys). Notebook 07."""
    import matplotlib.pyplot as plt

    a = as_attentions(attentions)  # (L, H, T, T)
    tokens = _tokens_of(attentions, tokens)
    layers = list(range(a.shape[0])) if layers is None else list(layers)
    heads = list(range(a.shape[1])) if heads is None else list(heads)
    for i in layers:
        check_index("layer", i, a.shape[0])
    for h in heads:
        check_index("head", h, a.shape[1])
    if show_tokens is None:
        show_tokens = tokens is not None and len(heads) <= 4 and a.shape[-1] <= 24
    fig, axes = plt.subplots(len(layers), len(heads), squeeze=False,
                             figsize=(cell_size * len(heads) + 1, cell_size * len(layers) + 0.6))
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            ax.imshow(a[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.grid(False)
            ax.set_xticks([])
            ax.set_yticks([])
            if show_tokens:
                ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
                ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
            if r == 0:
                ax.set_title(f"head {head}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=8)
    fig.suptitle(_title(attentions, "attention of every head (rows: queries, columns: keys)"), fontsize=10)
    fig.tight_layout()
    return fig


def plot_head(attentions: Any, layer: int, head: int, tokens: Sequence[str] | None = None, ax=None):
    """One head's attention as a heatmap with the tokens on both axes (notebook 07)."""
    import matplotlib.pyplot as plt

    a = as_attentions(attentions)  # (L, H, T, T)
    check_index("layer", layer, a.shape[0])
    check_index("head", head, a.shape[1])
    tokens = _tokens_of(attentions, tokens)
    fig = None
    if ax is None:
        size = min(1.2 + 0.28 * a.shape[-1], 8.0)
        fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(a[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.grid(False)
    if tokens is not None:
        tokens, _ = readable_labels(tokens)  # a box for a character no font has, instead of a warning
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(_title(attentions, f"layer {layer}, head {head}"), fontsize=10)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if fig is not None:
        fig.tight_layout()
    return ax.figure


def plot_cls_attention(attentions: Any, tokens: Sequence[str] | None = None):
    """Where [CLS] looks: one row per head (layer.head), one column per token (notebook 07)."""
    import matplotlib.pyplot as plt

    c = cls_rows(attentions)  # (L, H, T)
    L, H, T = c.shape
    tokens = _tokens_of(attentions, tokens)
    rows = c.reshape(L * H, T)  # (L*H, T)
    fig, ax = plt.subplots(figsize=(1.5 + 0.35 * T, 1.0 + 0.18 * L * H))
    im = ax.imshow(rows.numpy(), cmap="magma", vmin=0, vmax=1, aspect="auto")
    ax.grid(False)
    ax.set_yticks(range(L * H), [f"L{layer}.H{head}" for layer in range(L) for head in range(H)],
                  fontsize=6 if L * H > 24 else 8)
    if tokens is not None:
        ax.set_xticks(range(T), tokens, rotation=90, fontsize=8)
    for layer in range(1, L):
        ax.axhline(layer * H - 0.5, color="white", linewidth=0.8)
    ax.set_title(_title(attentions, "attention from [CLS] to each token"), fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------
# 3. What heads do
# ----------------------------------------------------------------------------------------------------------

def _annotate(ax, values: np.ndarray, fmt: str, vmin: float | None = None, vmax: float | None = None) -> None:
    """Write each value on its cell (small grids only), white on the darkest cells of the colour scale."""
    if values.size > 48:
        return
    lo = float(values.min()) if vmin is None else vmin
    hi = float(values.max()) if vmax is None else vmax
    for (i, j), v in np.ndenumerate(values):
        dark = hi > lo and (v - lo) / (hi - lo) > 0.6
        ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7, color="white" if dark else "black")


def plot_head_stats(stats: HeadStats, title: str = ""):
    """Two layer x head maps: attention entropy (normalized) and mean attention distance (notebook 07)."""
    import matplotlib.pyplot as plt

    L, H = stats.entropy.shape
    fig, axes = plt.subplots(1, 2, figsize=(2.5 + 2 * (0.45 * H + 1), 1.5 + 0.45 * L))
    panels = ((stats.normalized_entropy, "entropy / log T (1 = uniform)", ".2f", "Blues"),
              (stats.mean_distance, "mean distance (tokens)", ".1f", "Oranges"))
    for ax, (values, label, fmt, cmap) in zip(axes, panels):
        v = values.numpy()
        im = ax.imshow(v, cmap=cmap, aspect="auto")
        ax.grid(False)
        ax.set_xticks(range(H))
        ax.set_yticks(range(L))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(label, fontsize=9)
        _annotate(ax, v, fmt)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


_CLASS_COLORS = {"[CLS]": "#d62728", "[SEP]": "#9467bd", "previous": "#1f77b4", "next": "#17becf",
                 "self": "#2ca02c", "broad": "#ff7f0e", "mixed": "#c7c7c7"}


def plot_head_classes(classes: HeadClasses, title: str = ""):
    """A layer x head map coloured by what each head mostly does (notebook 07)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    L, H = len(classes.labels), len(classes.labels[0])
    index = np.array([[HEAD_CLASSES.index(c) for c in row] for row in classes.labels])  # (L, H)
    cmap = ListedColormap([_CLASS_COLORS[c] for c in HEAD_CLASSES])
    fig, ax = plt.subplots(figsize=(2.8 + 0.5 * H, 1.2 + 0.45 * L))
    ax.imshow(index, cmap=cmap, vmin=-0.5, vmax=len(HEAD_CLASSES) - 0.5, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    if L * H <= 24:
        for (i, j), c in np.ndenumerate(np.array(classes.labels, dtype=object)):
            ax.text(j, i, c, ha="center", va="center", fontsize=7)
    used = [c for c in HEAD_CLASSES if any(c in row for row in classes.labels)]
    ax.legend(handles=[Patch(color=_CLASS_COLORS[c], label=c) for c in used], bbox_to_anchor=(1.02, 1),
              loc="upper left", fontsize=7, frameon=False)
    ax.set_title(title or f"{classes.name}: what each head mostly attends to".lstrip(": "), fontsize=10)
    fig.tight_layout()
    return fig


def plot_class_comparison(classes: dict[str, HeadClasses], title: str = "share of heads in each class"):
    """Grouped bars: for each model, the fraction of its heads in each class (notebook 07)."""
    import matplotlib.pyplot as plt

    fractions = class_fractions(classes)
    n = len(fractions)
    width = 0.8 / max(n, 1)
    x = np.arange(len(HEAD_CLASSES))
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    for i, (name, f) in enumerate(fractions.items()):
        heads = sum(classes[name].count().values())
        ax.bar(x + (i - (n - 1) / 2) * width, [f[c] for c in HEAD_CLASSES], width,
               label=f"{name} ({heads} heads)")
    ax.set_xticks(x, HEAD_CLASSES)
    ax.set_ylabel("fraction of heads")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_attention_change(change: torch.Tensor, title: str = "attention change per head"):
    """A layer x head map of ``attention_change`` (0: unchanged, 1: completely different). Notebook 07."""
    import matplotlib.pyplot as plt

    v = torch.as_tensor(change).numpy()
    L, H = v.shape
    vmax = max(0.05, float(v.max()))
    fig, ax = plt.subplots(figsize=(2.5 + 0.5 * H, 1.3 + 0.45 * L))
    im = ax.imshow(v, cmap="Reds", vmin=0, vmax=vmax, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    _annotate(ax, v, ".3f", 0.0, vmax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="total variation distance")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
