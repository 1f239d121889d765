"""The training report: one HTML page with PNG figures (loss curves, example translations, metrics)."""

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import atomic_path  # noqa: E402


def _save(figure, path: Path):
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)


def loss_figure(history: list, path: Path):
    keys = sorted({k for h in history for k in h if k not in ("step", "phase")})
    figure, ax = plt.subplots(figsize=(8, 4))
    steps = np.array([h["step"] for h in history])
    for key in keys:
        values = np.array([h.get(key, np.nan) for h in history], dtype=float)
        if np.all(np.isnan(values)):
            continue
        window = max(1, len(values) // 50)
        smooth = np.convolve(np.nan_to_num(values), np.ones(window) / window, mode="same")
        ax.plot(steps, smooth, label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (moving average)")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.legend(fontsize=7, ncol=3)
    ax.set_title("Training losses")
    _save(figure, path)


def examples_figure(rows: list, path: Path):
    """rows: [(title, [(caption, 2D array in HU or normalised units, (vmin, vmax))...])]."""
    columns = max(len(r[1]) for r in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(3 * columns, 3 * len(rows)), squeeze=False)
    for r, (title, panels) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(panels):
                caption, image, (vmin, vmax) = panels[c]
                ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
                ax.set_title(f"{title}: {caption}" if c == 0 else caption, fontsize=8)
    _save(figure, path)


def hu_histogram_figure(translated_hu, real_hu, translated_head, real_head, path: Path):
    """HU histograms of translated vs real CT inside the head, one panel per tissue class."""
    from .fidelity import TISSUES
    figure, axes = plt.subplots(1, len(TISSUES) + 1, figsize=(16, 3.2))
    panels = [("whole head", (-1024, 2000))] + [(n, (max(lo, -1024), min(hi, 2000))) for n, (lo, hi) in TISSUES.items()]
    for ax, (name, (low, high)) in zip(axes, panels):
        for label, hu, head, colour in (("translated", translated_hu, translated_head, "tab:orange"),
                                        ("real CT", real_hu, real_head, "tab:blue")):
            values = hu[head]
            values = values[(values >= low) & (values < high)]
            if not values.size:
                continue
            ax.hist(values, bins=80, range=(low, high), density=True, histtype="step", color=colour,
                    label=f"{label} (mean {values.mean():.0f})")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("HU", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    _save(figure, path)


def write_page(path: Path, title: str, body: str) -> Path:
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}
.bad{{color:#b00}}.good{{color:#070}}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"""
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def table(header: list, rows: list) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def write_training_report(folder, header: dict, history: list, bundle_path, examples=None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    figures = []
    if history:
        loss_figure(history, folder / "losses.png")
        figures.append(("Losses", "losses.png"))
    if examples:
        examples_figure(examples, folder / "examples.png")
        figures.append(("Translated examples (source, G(source), F(G(source)))", "examples.png"))
    metrics = header.get("metrics", {})
    rows = "".join(f"<tr><td>{html.escape(split)}</td><td>{html.escape(level)}</td><td>{html.escape(k)}</td>"
                   f"<td>{v:.4g}</td></tr>"
                   for split, levels in metrics.items() for level, values in levels.items()
                   for k, v in values.items() if isinstance(v, (int, float)))
    counts = header.get("data_summary", {}).get("counts", {})
    count_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v['cases']}</td><td>{v['slices']}</td></tr>"
                         for k, v in counts.items())
    figure_html = "".join(f"<h2>{html.escape(t)}</h2><img src='{f}' style='max-width:100%'>" for t, f in figures)
    training = header.get("training", {})
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>DUIIT training report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>
</head><body><h1>DUIIT training report</h1>
<p>Bundle: <code>{html.escape(str(bundle_path))}</code><br>
Method: <b>{html.escape(str(header.get('method')))}</b> (guidance {'on' if header.get('guidance') else 'off'}),
task {html.escape(str(header.get('task')))}, {html.escape(str(header.get('source_modality')))} &rarr;
{html.escape(str(header.get('target_modality')))}; {training.get('steps')} steps in {training.get('seconds')} s.</p>
<h2>Predictor metrics (real {html.escape(str(header.get('target_modality')))} only)</h2>
<table><tr><th>split</th><th>level</th><th>metric</th><th>value</th></tr>{rows or '<tr><td colspan=4>no validation cases</td></tr>'}</table>
<p>Volume-level outputs: {html.escape(str(header.get('aggregation', '')))}</p>
<h2>Data</h2><table><tr><th>set</th><th>cases</th><th>slices</th></tr>{count_rows}</table>
{figure_html}
<h2>Header</h2><pre>{html.escape(json.dumps({k: v for k, v in header.items() if k != 'data_summary'}, indent=1))}</pre>
</body></html>"""
    path = folder / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
