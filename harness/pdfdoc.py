"""report.pdf as a document: A4 pages throughout, a summary first, tables drawn as tables, captioned plots.

Pages are matplotlib figures of one size (A4 portrait) written through ``PdfPages``. Text blocks and
tables flow down the page and continue on the next one (a table repeats its header). Table text is
8 pt with booktabs-like rules; column widths are measured from the text itself (``TextToPath``), wrapped
columns break at word boundaries. Each plot is drawn again on its own page, at its thesis width, with
its caption below.
"""
from __future__ import annotations

import functools

from .tables import NUMERIC, Col, Table

PAGE = (8.27, 11.69)                     # A4 portrait, inches
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 0.75, 0.7, 0.7
BODY = 8.0                               # table text, pt
CAPTION = 8.5
LINE = 1.3                               # line height / font size
PAD = 0.09                               # inches between columns
USABLE = PAGE[0] - 2 * MARGIN_X


@functools.lru_cache(maxsize=20000)
def text_width(text: str, size: float = BODY, bold: bool = False) -> float:
    """Width of ``text`` in inches, set in the report's sans-serif font at ``size`` points."""
    from matplotlib.font_manager import FontProperties

    if not text:
        return 0.0
    w, _, _ = _T2P().get_text_width_height_descent(text, FontProperties(size=size, weight="bold" if bold else
                                                                          "normal"), ismath=False)
    return w / 72.0


@functools.lru_cache(maxsize=1)
def _T2P():
    from matplotlib.textpath import TextToPath

    return TextToPath()


def wrap(text: str, width_in: float, size: float = BODY) -> list[str]:
    """``text`` broken into lines no wider than ``width_in`` (a single long word may overhang)."""
    lines: list[str] = []
    for para in str(text).split("\n"):
        cur = ""
        for word in para.split(" "):
            trial = f"{cur} {word}" if cur else word
            if cur and text_width(trial, size) > width_in:
                lines.append(cur)
                cur = word
            else:
                cur = trial
        lines.append(cur)
    return lines


class Doc:
    """A flowing A4 document on matplotlib figures."""

    def __init__(self, pdf, title: str):
        self.pdf, self.title = pdf, title
        self.fig = None
        self.y = 0.0               # inches from the top of the page
        self.page_no = 0

    # ------------------------------------------------------------------ pages
    def new_page(self) -> None:
        from matplotlib.figure import Figure

        self.close_page()
        self.fig = Figure(figsize=PAGE)
        self.page_no += 1
        self.y = MARGIN_TOP
        self._text(PAGE[0] - MARGIN_X, PAGE[1] - 0.4, f"{self.title} \u2014 page {self.page_no}", 7.5,
                   ha="right", colour="0.4")

    def close_page(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            self.fig = None

    def _room(self, height: float) -> None:
        if self.fig is None or self.y + height > PAGE[1] - MARGIN_BOTTOM:
            self.new_page()

    def _text(self, x: float, y_from_top: float, s: str, size: float, ha: str = "left", bold: bool = False,
              colour: str = "black") -> None:
        self.fig.text(x / PAGE[0], 1 - y_from_top / PAGE[1], s, fontsize=size, ha=ha, va="baseline",
                      weight="bold" if bold else "normal", color=colour, parse_math=False)

    def _rule(self, x0: float, x1: float, y: float, lw: float) -> None:
        from matplotlib.lines import Line2D

        self.fig.add_artist(Line2D([x0 / PAGE[0], x1 / PAGE[0]], [1 - y / PAGE[1]] * 2, lw=lw, color="black",
                                   transform=self.fig.transFigure))

    # ------------------------------------------------------------------ blocks
    def heading(self, text: str, size: float = 13) -> None:
        self._room(size * LINE / 72 * 3)
        self.y += size * LINE / 72
        self._text(MARGIN_X, self.y, text, size, bold=True)
        self.y += 0.12

    def paragraph(self, text: str, size: float = CAPTION, width: float = USABLE) -> None:
        step = size * LINE / 72
        for line in wrap(text, width, size):
            self._room(step)
            self.y += step
            self._text(MARGIN_X, self.y, line, size)
        self.y += 0.08

    def table(self, t: Table, number: int) -> None:
        """A table with its caption above, split over pages by rows and, when too wide, by columns."""
        for part, cols in enumerate(_column_parts(t)):
            self._table_part(t, cols, number, part)

    def _table_part(self, t: Table, cols: list[Col], number: int, part: int) -> None:
        widths = _widths(t, cols)
        cells = [[_cell_lines(t, r, c, w) for c, w in zip(cols, widths)] for r in t.rows]
        step = BODY * LINE / 72
        heights = [max(len(x) for x in row) * step + 0.02 for row in cells]
        grouped = any(c.group for c in cols)
        header_h = step * (2 if grouped else 1) + 0.1
        caption = f"Table {number}{'' if part == 0 else ' (more columns)'}. {t.full_caption}"
        cap_lines = wrap(caption, USABLE, CAPTION)
        self._room(len(cap_lines) * CAPTION * LINE / 72 + header_h + (heights[0] if heights else 0) + 0.2)
        self.paragraph(caption)
        xs = [MARGIN_X]
        for w in widths[:-1]:
            xs.append(xs[-1] + w + PAD)
        x_end = xs[-1] + widths[-1]
        i = 0
        first = True
        while i < len(cells) or first:
            if not first:
                self.new_page()
                self.paragraph(f"Table {number} (continued).")
            self._header(cols, xs, widths, x_end, grouped, step)
            while i < len(cells) and self.y + heights[i] <= PAGE[1] - MARGIN_BOTTOM - 0.05:
                for c, x, w, lines in zip(cols, xs, widths, cells[i]):
                    for k, line in enumerate(lines):
                        right = c.kind in NUMERIC
                        self._text(x + (w if right else 0), self.y + step * (k + 1) - 0.02, line, BODY,
                                   ha="right" if right else "left")
                self.y += heights[i]
                i += 1
            self._rule(MARGIN_X, x_end, self.y + 0.04, 0.9)
            self.y += 0.2
            first = False
            if i >= len(cells):
                break

    def _header(self, cols, xs, widths, x_end, grouped, step) -> None:
        self._room(step * 4)
        self._rule(MARGIN_X, x_end, self.y, 0.9)
        if grouped:
            self.y += step
            for j, k in group_spans(cols):
                x0, x1 = xs[j], xs[k] + widths[k]
                self._text((x0 + x1) / 2, self.y, cols[j].group, BODY, ha="center", bold=True)
                self._rule(x0 + 0.03, x1 - 0.03, self.y + 0.04, 0.5)
            self.y += 0.04
        self.y += step
        for c, x, w in zip(cols, xs, widths):
            right = c.kind in NUMERIC
            self._text(x + (w if right else 0), self.y, c.header, BODY, ha="right" if right else "left", bold=True)
        self._rule(MARGIN_X, x_end, self.y + 0.05, 0.5)
        self.y += 0.08

    def plot_page(self, plot, number: int) -> None:
        """One page: the plot at its thesis width (height capped to the page), its caption below."""
        from matplotlib.figure import Figure

        self.close_page()
        self.fig = Figure(figsize=PAGE, layout="constrained")
        self.page_no += 1
        cap_lines = wrap(f"Figure {number}. {plot.caption}", USABLE, CAPTION)
        cap_h = len(cap_lines) * CAPTION * LINE / 72
        w = min(plot.size[0], USABLE)
        h = min(plot.size[1], PAGE[1] - MARGIN_TOP - MARGIN_BOTTOM - cap_h - 0.3)
        left = (PAGE[0] - w) / 2
        gs = self.fig.add_gridspec(3, 3, width_ratios=[left, w, PAGE[0] - left - w],
                                   height_ratios=[MARGIN_TOP, h, PAGE[1] - MARGIN_TOP - h],
                                   left=0, right=1, top=1, bottom=0, wspace=0, hspace=0)
        plot.draw(self.fig.add_subfigure(gs[1, 1]))
        self._text(PAGE[0] - MARGIN_X, PAGE[1] - 0.4, f"{self.title} \u2014 page {self.page_no}", 7.5,
                   ha="right", colour="0.4")
        self.y = MARGIN_TOP + h + 0.2
        for line in cap_lines:
            self.y += CAPTION * LINE / 72
            self._text(MARGIN_X, self.y, line, CAPTION)
        self.close_page()


def group_spans(cols: list[Col]) -> list[tuple[int, int]]:
    """(first, last) column index of each run of adjacent columns sharing a non-empty group header."""
    spans, j = [], 0
    while j < len(cols):
        k = j
        while k + 1 < len(cols) and cols[k + 1].group == cols[j].group:
            k += 1
        if cols[j].group:
            spans.append((j, k))
        j = k + 1
    return spans


def _natural(t: Table, c: Col) -> float:
    cells = [t.cell(r, c) for r in t.rows]
    return max([text_width(c.header, BODY, True)] + [text_width(s, BODY) for s in cells])


def _widths(t: Table, cols: list[Col]) -> list[float]:
    """Column widths in inches: natural widths; wrapped columns take what is left (at least 1.2 in)."""
    nat = [_natural(t, c) for c in cols]
    fixed = sum(w for w, c in zip(nat, cols) if c.kind != "para") + PAD * (len(cols) - 1)
    paras = [i for i, c in enumerate(cols) if c.kind == "para"]
    if paras:
        room = max(1.2 * len(paras), USABLE - fixed)
        for i in paras:
            nat[i] = min(nat[i], room / len(paras))
    # group headers need room too
    for j, k in group_spans(cols):
        need = text_width(cols[j].group, BODY, True) - (sum(nat[j:k + 1]) + PAD * (k - j))
        if need > 0:
            for i in range(j, k + 1):
                nat[i] += need / (k - j + 1)
    return nat


def _column_parts(t: Table) -> list[list[Col]]:
    """The columns in one piece, or split into pieces that fit the page, each repeating the key columns."""
    if sum(_widths(t, t.cols)) + PAD * (len(t.cols) - 1) <= USABLE:
        return [t.cols]
    n_key = 0
    while n_key < len(t.cols) and t.cols[n_key].kind in ("text", "int") and n_key < 2:
        n_key += 1
    key, rest = t.cols[:n_key], t.cols[n_key:]
    parts, cur = [], []
    for c in rest:
        trial = key + cur + [c]
        if cur and sum(_widths(t, trial)) + PAD * (len(trial) - 1) > USABLE:
            parts.append(key + cur)
            cur = []
        cur.append(c)
    parts.append(key + cur)
    return parts


def _cell_lines(t: Table, r: dict, c: Col, width: float) -> list[str]:
    s = t.cell(r, c) or ("-" if c.kind in NUMERIC else "")
    return wrap(s, width) if c.kind == "para" else [s]
