"""Writing what the report renders: its tables as Markdown and LaTeX files, its plots as PNG and vector
PDF, the PDF date; shared by the benchmark report (report.py) and the training report (train_report.py).
"""
from __future__ import annotations

import datetime
import os

from . import latex, plots, tables
from .io import atomic_write, write_text


class ReportError(ValueError):
    """An input that cannot be read (the message names it and says what is expected)."""


def pdf_date() -> datetime.datetime:
    """The date the PDFs carry: ``SOURCE_DATE_EPOCH`` when set (reproducible renders), else now (UTC)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        return datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
    return datetime.datetime.now(datetime.timezone.utc)


def write_tables(out_dir: str, groups: list) -> dict:
    """Per group ``(file stem, title, [Table])``: ``<stem>.md`` (the title as a heading, then each table in
    Markdown) and ``<stem>.tex`` (the tables in LaTeX, for ``\\input``); returns {file name: path}."""
    try:
        import jinja2  # noqa: F401  (pandas' Styler.to_latex needs it; torch installs it too)
    except ImportError:
        raise ReportError("the LaTeX tables need jinja2 (pandas' Styler): pip install jinja2") from None
    files = {}
    for stem, title, ts in groups:
        md_path, tex_path = os.path.join(out_dir, f"{stem}.md"), os.path.join(out_dir, f"{stem}.tex")
        write_text(md_path, f"# {title}\n\n" + "\n".join(tables.markdown(t) for t in ts))
        write_text(tex_path, latex.file_text(ts))
        files[f"{stem}.md"], files[f"{stem}.tex"] = md_path, tex_path
    return files


def save_plot(plot, out_dir: str) -> dict:
    """``<name>.png`` and vector ``<name>.pdf`` of a ``plots.Plot`` at its size; returns {file name: path}."""
    from matplotlib.figure import Figure

    paths = {}
    with plots.rc():
        fig = Figure(figsize=plot.size, layout="constrained")
        plot.draw(fig)
        for ext, kw in (("png", {"dpi": 200, "metadata": {"Software": None}}),
                        ("pdf", {"metadata": {"CreationDate": None, "Creator": "harness report"}})):
            path = os.path.join(out_dir, f"{plot.name}.{ext}")
            with atomic_write(path, binary=True) as fh:
                fig.savefig(fh, format=ext, **kw)
            paths[f"{plot.name}.{ext}"] = path
    return paths
