"""Report figures that do not invite wrong conclusions: loss panels per divergence, seeds told apart,
a grid of what ran with a colour bar inside the metric's range, honest legends, a class legend."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from icon_bench.report import curves, plots
from icon_bench.report.build import build_report

_spec = importlib.util.spec_from_file_location(
    "report_fixture", Path(__file__).parent / "fixtures" / "report_fixture.py"
)
report_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_fixture)


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every figure the plot functions save, kept for inspection (saving still happens)."""
    kept: list = []

    def keep(fig, path):  # noqa: ANN001, ANN202
        kept.append(fig)
        real(fig, path)

    real = plots.save
    monkeypatch.setattr(plots, "save", keep)
    monkeypatch.setattr(curves, "save", keep)
    return kept


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return build_report(report_fixture.make_results(tmp_path_factory.mktemp("plots") / "results"))


def _section(report, dataset: str, version: str = "1"):  # noqa: ANN001, ANN202
    return next(s for s in report.sections if s.dataset == dataset and s.protocol_version == version)


def _rows(report, section):  # noqa: ANN001, ANN202
    return report.rows[(report.rows["protocol_version"] == section.protocol_version)
                       & (report.rows["dataset"] == section.dataset)]


def _drawn(ax) -> bool:  # noqa: ANN001
    return ax.axison and bool(ax.lines)


def test_losses_get_one_panel_per_divergence_and_seeds_differ_in_style(report, figures, tmp_path: Path) -> None:
    section = _section(report, "digits")
    caption = curves.plot_losses(section, _rows(report, section), tmp_path / "loss.png")
    fig = figures[-1]
    panels = [ax for ax in fig.axes if _drawn(ax)]
    titles = sorted(ax.get_title() for ax in panels)
    # digits protocol 1 trained under kl (pmi, <script>), tv (pmi) and js (debiased_infonce_clustering).
    assert titles == ["divergence js", "divergence kl", "divergence tv"]
    assert "one panel per divergence" in caption and "not comparable" in caption
    tv = next(ax for ax in panels if ax.get_title() == "divergence tv")
    styles = {(line.get_linestyle(), line.get_marker()) for line in tv.lines}
    assert len(tv.lines) == 3 and len(styles) == 3  # pmi · tv, seeds 0, 1, 2: each its own style
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"seed 0", "seed 1", "seed 2"} <= set(legend)


def test_identical_seed_curves_stay_visible_through_staggered_markers(report, figures, tmp_path: Path) -> None:
    rows = _rows(report, _section(report, "blobs")).copy()
    rows["history"] = [{"loss": [4.0, 3.0, 2.5, 2.2, 2.0, 1.9, 1.8, 1.75, 1.7, 1.65]} for _ in range(len(rows))]
    curves.plot_losses(_section(report, "blobs"), rows, tmp_path / "loss.png")
    kl = next(ax for ax in figures[-1].axes if ax.get_title() == "divergence kl")
    starts = {line.get_markevery()[0] for line in kl.lines}
    assert len(starts) == len(kl.lines) == 3  # the same curve, markers at different epochs per seed


def test_grid_shows_only_what_the_section_ran_with_a_colour_bar_inside_0_100(report, figures, tmp_path: Path) -> None:
    section = _section(report, "digits")
    known = {"method": ["pmi", "kmeans", "sne", "tsne", "simclr"], "divergence": ["kl", "tv", "js", "chi2"]}
    caption = plots.plot_grid(section, report.rows, {"hungarian"}, set(), tmp_path / "grid.png", known)
    # 4 divergences (kl, tv, js, default) x 4 methods ran on digits under protocol 1; 5 configurations.
    assert "divergence × method grid — 5 of 16 cells run" in caption
    assert "Registered but not in this suite: methods sne, simclr; divergences chi2" in caption  # tsne ran (blobs)
    heat, bar = figures[-1].axes
    assert [t.get_text() for t in heat.get_xticklabels()] == ["pmi", "kmeans", "debiased_infonce_clustering",
                                                              "<script>alert(1)</script>"]
    low, high = bar.get_ylim()
    assert (low, high) == (0, 100)  # a fixed scale: a 5-point spread must not look like the whole range
    assert "fixed scale 0 to 100" in bar.get_ylabel()


def test_one_configuration_has_one_colour_in_every_figure_of_a_page(report, figures, tmp_path: Path) -> None:
    from matplotlib.colors import to_rgba

    plots.make_plots(report, tmp_path / "page", registry=False)
    seen: dict[str, set[tuple]] = {}  # configuration label -> the colours it was drawn in
    for fig in figures:
        for ax in fig.axes:  # metrics plots: each configuration's marker, on the row its tick names
            names = {round(t.get_position()[1]): t.get_text() for t in ax.get_yticklabels() if t.get_text()}
            for line in ax.lines:
                ys = line.get_ydata()
                if len(ys) == 1 and round(float(ys[0])) in names and line.get_marker() in ("o", "D"):
                    seen.setdefault(names[round(float(ys[0]))], set()).add(to_rgba(line.get_color()))
        for legend in fig.legends:  # loss and gradient curves: the legend's line per configuration
            for handle, text in zip(legend.legend_handles, legend.get_texts()):
                if text.get_text() in set(report.aggregated["label"]):
                    seen.setdefault(text.get_text(), set()).add(to_rgba(handle.get_color()))
    assert {"pmi · kl", "pmi · tv"} <= set(seen)
    assert all(len(colours) == 1 for colours in seen.values()), seen
    assert seen["pmi · kl"] != seen["pmi · tv"]


def test_a_single_value_grid_keeps_its_colour_bar_below_100(report, figures, tmp_path: Path) -> None:
    """One explored fraction near the top: matplotlib alone would stretch the bar to 104.5."""
    section = _section(report, "digits")
    table = section.table.copy()
    table["hungarian_mean"] = [0.95 if m == "pmi" and d == "kl" else np.nan for m, d in
                               zip(table["method"], table["divergence"])]
    section = type(section)(**{**section.__dict__, "table": table})
    plots.plot_grid(section, report.rows, {"hungarian"}, set(), tmp_path / "grid.png", {})
    low, high = figures[-1].axes[1].get_ylim()
    assert low < 95 < high <= 100


def test_metrics_legend_shows_incomplete_only_when_something_is(report, figures, tmp_path: Path) -> None:
    fractions = set(report.meta["fraction_metrics"])
    complete = _section(report, "blobs")
    caption = plots.plot_metrics(complete, fractions, set(), tmp_path / "m1.png")
    assert not figures[-1].legends  # nothing to explain: the y axis names the configurations
    assert "hollow" not in caption
    mixed = _section(report, "digits")  # debiased_infonce_clustering has a failed seed
    caption = plots.plot_metrics(mixed, fractions, set(), tmp_path / "m2.png")
    assert "incomplete" in [t.get_text() for t in figures[-1].legends[0].get_texts()]
    assert "hollow = incomplete" in caption
    for ax in figures[-1].axes:  # ×100 axes never run (or tick) past 100
        assert ax.get_xlim()[1] <= 101.5 and max(ax.get_xticks()) <= 100


def test_embeddings_have_a_class_legend(report, figures, tmp_path: Path) -> None:
    section = _section(report, "blobs")
    plots.plot_embeddings(section, _rows(report, section), report.results_dir, tmp_path / "emb.png")
    legend = figures[-1].legends[0]
    assert legend.get_title().get_text() == "class"
    assert [t.get_text() for t in legend.get_texts()] == ["0", "1", "2"]  # the fixture's three classes


def test_every_figure_of_a_real_report_is_written(report, tmp_path: Path) -> None:
    paths = plots.make_plots(report, tmp_path)
    kinds = sorted({p.name.split("-")[0] for p in paths})
    assert kinds == ["embedding", "grid", "loss", "metrics"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captions = [c for s in report.sections for c, _ in s.plots]
    assert json.dumps(captions)  # captions are plain text for the page and the Markdown


def _with_grad_norms(folder: Path, dataset: str = "digits") -> Path:
    """The fixture's results with a per-step gradient norm in the history of every ok `dataset` row."""
    rows = report_fixture.load_rows()
    for k, row in enumerate(rows):
        if row.get("dataset") == dataset and row.get("history"):
            steps = 3 * len(row["history"]["loss"])
            row["history"]["grad_norm"] = [10.0 ** (1 - (k % 3)) / (1 + s) for s in range(steps)]
    folder.mkdir(parents=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return report_fixture.make_results(folder / "results", folder / "rows.jsonl")


def test_grad_norms_share_one_log_panel_with_seeds_told_apart(figures, tmp_path: Path) -> None:
    report = build_report(_with_grad_norms(tmp_path / "in"))
    section = _section(report, "digits")
    caption = curves.plot_grad_norms(section, _rows(report, section), tmp_path / "gradnorm.png")
    fig = figures[-1]
    panels = [ax for ax in fig.axes if _drawn(ax)]
    assert len(panels) == 1
    ax = panels[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "optimizer step"
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert "1e−01" in ticks and not any("$" in t for t in ticks)  # plain labels: mathtext is off in reports
    assert max(len(line.get_xdata()) for line in ax.lines) == 12  # 3 steps per epoch, 4 epochs: x is the step
    tv = [line for line in ax.lines if line.get_color() == ax.lines[0].get_color()]
    assert len({(line.get_linestyle(), line.get_marker()) for line in tv}) == len(tv) > 1  # seeds differ in style
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    labels = list(section.table["label"])
    assert [t for t in legend if not t.startswith("seed ")] == [lab for lab in labels if lab in legend]
    assert "differ in scale, so the norms compare the optimisation, not the losses" in caption
    assert "before clipping" in caption


def test_grad_norm_figure_is_skipped_for_rows_without_it(report, tmp_path: Path) -> None:
    section = _section(report, "digits")  # the fixture's rows predate the gradient norm
    assert curves.plot_grad_norms(section, _rows(report, section), tmp_path / "g.png") is None
    assert not (tmp_path / "g.png").exists()


def test_report_with_grad_norms_has_the_figure_in_page_and_markdown(tmp_path: Path) -> None:
    from icon_bench.report.commands import write_report

    out = write_report(_with_grad_norms(tmp_path / "in"), tmp_path / "report")
    written = sorted(p.name.split("-")[0] for p in out.glob("*.png"))
    gradnorm = sorted(out.glob("gradnorm-*.png"))
    assert gradnorm and all("digits" in p.name for p in gradnorm)  # the blobs rows have none: no figure
    assert {"embedding", "grid", "loss", "metrics"} <= set(written)  # the other figures still come
    markdown = (out / "leaderboard.md").read_text()
    assert all(f"]({p.name})" in markdown for p in gradnorm)
    page = (out / "index.html").read_text()
    assert page.count("norm of the gradients of every trained parameter") == 2 * len(gradnorm)  # alt text and caption
    # The parquet dump keeps the per-step list beside the per-epoch one.
    import pandas as pd

    flat = pd.read_parquet(out / "results.parquet")
    stored = [(list(g), list(loss)) for g, loss in zip(flat["history.grad_norm"], flat["history.loss"])
              if g is not None and len(g)]
    assert stored and all(len(g) == 3 * len(loss) for g, loss in stored)
