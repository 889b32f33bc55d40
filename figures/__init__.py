"""Figures of the report. Every figure is written through :func:`figures.style.save` so that all
share one style, readable in greyscale, and come out as both PDF and PNG."""

from figures.style import LINESTYLES, MARKERS, new_figure, save

__all__ = ["LINESTYLES", "MARKERS", "new_figure", "save"]
