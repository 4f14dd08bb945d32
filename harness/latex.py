"""LaTeX output: tables through pandas' ``Styler.to_latex`` and a ``report_latex.tex`` that compiles as is.

A table file needs, in the preamble that ``\\input``s it::

    \\usepackage{booktabs, longtable, array, siunitx, graphicx}

Every table has booktabs rules, a ``\\caption`` and a ``\\label{tab:<name>}``; numbers sit in siunitx
``S`` columns (aligned on the decimal point; ``table-format`` from the widest number); tables longer
than ``tables.LONG_ROWS`` rows are ``longtable`` s (they break across pages, the header repeated), the
others ``table`` floats. Text is set ``\\small`` with narrower column gaps, so every table fits a text
width of 16 cm (A4 with 2.5 cm margins; a thesis with a narrower text block can ``\\resizebox`` the
floats or drop columns from the Markdown twin). A float that may still be wider (the training tables keep
every column) sits in a ``\\resizebox`` (graphicx) that scales it down to the line width only if it is.
"""
from __future__ import annotations

import re

from .tables import NUMERIC, Col, Table

PACKAGES = "booktabs, longtable, array, siunitx, graphicx"
_ESCAPES = (("\\", "\0"), ("{", r"\{"), ("}", r"\}"), ("\0", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"),
            ("&", r"\&"), ("#", r"\#"), ("$", r"\$"), ("^", r"\^{}"), ("~", r"\textasciitilde{}"),
            ("->", r"$\rightarrow$"), ("<", r"\textless{}"), (">", r"\textgreater{}"),
            ("\u2020", r"\textdagger{}"), ("\u2021", r"\textdaggerdbl{}"),
            ("\u00d7", r"$\times$"), ("\u2013", "--"), ("\u2265", r"$\geq$"),
            ("\u00b5", r"\textmu{}"), ("\u00b1", r"$\pm$"), ("\u0394", r"$\Delta$"))


def escape(text: str) -> str:
    r"""Plain text -> LaTeX text (special characters, arrows, the daggers); other non-ASCII becomes '?'.

    >>> print(escape("conv 3x3 64->64, 10% x_1"))
    conv 3x3 64$\rightarrow$64, 10\% x\_1
    """
    s = str(text)
    for a, b in _ESCAPES:
        s = s.replace(a, b)
    return s.encode("ascii", "replace").decode("ascii")


def _number_format(cells: list[str]) -> str:
    """siunitx table-format (integer digits . decimals, then e sign exponent digits) wide enough for every cell.

    >>> _number_format(["12.3", "0.00801"]), _number_format(["1.00e-06", "2.50e+01"])
    ('2.5', '1.2e-2')
    """
    ints, decs, exp, exp_sign = 1, 0, 0, ""
    for c in cells:
        if not c:
            continue
        mantissa, _, exponent = c.lower().partition("e")
        whole, _, frac = mantissa.lstrip("-").partition(".")
        ints, decs = max(ints, len(whole)), max(decs, len(frac))
        if exponent:
            exp = max(exp, len(exponent.lstrip("+-")))
            exp_sign = exp_sign or ("-" if exponent.startswith("-") else "")
    text = f"{ints}.{decs}" if decs else f"{ints}"
    return text + (f"e{exp_sign}{exp}" if exp else "")


TEXT_WIDTH_PT = 455.0     # 16 cm: A4 with 2.5 cm margins
CHAR_PT = 5.2             # a generous average character width of \small (9 pt) Computer Modern (capitals wider)
GAP_PT = 8.0              # 2 x \tabcolsep (4 pt)


def _natural_pt(t: Table, c: Col) -> float:
    cells = [t.cell(r, c) for r in t.rows] + [c.header]
    return max(len(x) for x in cells) * CHAR_PT


def _para_cm(t: Table) -> float:
    """The width of each paragraph column: what the other columns leave of the text width (at least 3 cm)."""
    paras = [c for c in t.cols if c.kind == "para"]
    if not paras:
        return 0.0
    used = sum(_natural_pt(t, c) for c in t.cols if c.kind != "para") + GAP_PT * len(t.cols)
    room_pt = (0.97 * TEXT_WIDTH_PT - used) / len(paras)
    return max(3.0, round(room_pt / 28.45 - 0.05, 1))      # 28.45 pt per cm


def _too_wide(t: Table) -> bool:
    """Whether the table may be wider than the text (estimated generously; paragraph columns fit by design)."""
    fixed = [c for c in t.cols if c.kind != "para"]
    return len(fixed) == len(t.cols) and sum(_natural_pt(t, c) for c in fixed) + GAP_PT * len(fixed) > TEXT_WIDTH_PT


def shrink_to_fit(text: str) -> str:
    r"""The tabular inside ``\resizebox``: scaled down to the line width when wider, left as is otherwise."""
    start, end = text.index("\\begin{tabular}"), text.index("\\end{tabular}") + len("\\end{tabular}")
    return (text[:start] + "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
            + text[start:end] + "%\n}" + text[end:])


def _column_spec(t: Table, c: Col) -> str:
    if c.kind in NUMERIC:
        return f"S[table-format={_number_format([t.cell(r, c) for r in t.rows])}]"
    if c.kind == "para":
        return rf">{{\raggedright\arraybackslash}}p{{{min(c.width_cm or 99, _para_cm(t)):g}cm}}"
    return "l"


def to_latex(t: Table) -> str:
    """One table as LaTeX through ``Styler.to_latex`` (booktabs, caption, label, S columns, longtable)."""
    import pandas as pd

    grouped = any(c.group for c in t.cols)
    data = {}
    for c in t.cols:
        cells = []
        for r in t.rows:
            v = t.cell(r, c)
            if c.kind in NUMERIC:
                cells.append(v if v else "{--}")          # braced: text inside an S column
            else:
                cells.append(escape(v) if v else "--")
        head = escape(c.header)
        data[(escape(c.group), head) if grouped else head] = cells
    frame = pd.DataFrame(data)
    if grouped:
        frame.columns = pd.MultiIndex.from_tuples(list(data))
    styler = frame.style.hide(axis="index")
    spec = "".join(_column_spec(t, c) for c in t.cols)
    caption = escape(t.full_caption)
    label = f"tab:{t.name}"
    if t.long:
        body = styler.to_latex(environment="longtable", hrules=True, siunitx=True, column_format=spec,
                               caption=caption, label=label, multicol_align="c")
        body = body.replace(r"\caption[]{" + caption + "}", r"\caption[]{" + escape(t.title) + " (continued)}")
        body = body.replace("Continued on next page", r"\emph{continued on the next page}")
        text = "\\begingroup\\small\\setlength{\\tabcolsep}{4pt}\n" + body.rstrip() + "\n\\endgroup\n"
    else:
        body = styler.to_latex(hrules=True, siunitx=True, column_format=spec, caption=caption, label=label,
                               position="htbp", position_float="centering", multicol_align="c")
        text = body.replace("\\centering\n", "\\centering\n\\small\\setlength{\\tabcolsep}{4pt}\n", 1)
        if _too_wide(t):
            text = shrink_to_fit(text)
    if grouped:
        text = _group_rules(text, t)
    return text


def _group_rules(text: str, t: Table) -> str:
    r"""A \cmidrule under each header group (booktabs style), after the group header line."""
    spans, start = [], 1
    i = 0
    while i < len(t.cols):
        j = i
        while j + 1 < len(t.cols) and t.cols[j + 1].group == t.cols[i].group:
            j += 1
        if t.cols[i].group:
            spans.append(f"\\cmidrule(lr){{{start + i}-{start + j}}}")
        i = j + 1
    if not spans:
        return text
    rule = " ".join(spans)
    # the group line is the first header line after each \toprule
    return re.sub(r"(\\toprule\n[^\n]*\\\\\n)", lambda m: m.group(1) + rule + "\n", text)


def file_text(tables: list[Table]) -> str:
    head = (f"% generated by `python -m harness report`; needs \\usepackage{{{PACKAGES}}}\n"
            "% (siunitx for the S columns, longtable for tables that break across pages, graphicx for \\resizebox)\n")
    return head + "\n".join(to_latex(t) for t in tables)


def report_tex(title: str, subtitle: str, files: list[tuple[str, str]], figures: list[tuple[str, str]]) -> str:
    """A complete document: ``files`` [(section title, tex file stem)], ``figures`` [(pdf stem, caption)]."""
    lines = [
        r"\documentclass[a4paper,10pt]{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage[margin=2.5cm]{geometry}",
        r"\usepackage{booktabs, longtable, array, siunitx, graphicx}",
        r"\usepackage[font=small,labelfont=bf]{caption}",
        r"\sisetup{group-digits=false}",
        r"\setlength{\LTcapwidth}{\textwidth}",
        r"\title{" + escape(title) + "}",
        r"\author{" + escape(subtitle) + "}",
        r"\date{}",
        r"\begin{document}",
        r"\maketitle",
    ]
    for section, stem in files:
        lines += [r"\section{" + escape(section) + "}", r"\input{" + stem + "}", r"\clearpage"]
    if figures:
        lines.append(r"\section{Figures}")
    for i, (stem, caption) in enumerate(figures):
        lines += [r"\begin{figure}[p]", r"\centering",
                  r"\includegraphics[width=\linewidth,height=0.78\textheight,keepaspectratio]{" + stem + ".pdf}",
                  r"\caption{" + escape(caption) + "}", r"\label{fig:" + stem.replace("_", "-") + "}",
                  r"\end{figure}"]
        if i % 4 == 3:
            lines.append(r"\clearpage")
    lines += [r"\end{document}", ""]
    return "\n".join(lines)
