"""Figures read cleanly: no text drawn over other text or over another panel's images."""

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from hetcv.figures import figure5
from hetcv.slices_figure import SLICE_IMAGES, figure_slices
from hetcv.validation_dose_response import figure_dose_response
from hetcv.validation_figure import figure_validation

STYLE = {"width": 6.4, "height": 4.2, "dpi": 60, "palette": "colorblind"}


def texts(figure):
    """Every visible, non-empty text of the figure, with the axes it belongs to (or None)."""
    found = []
    for artist in figure.findobj(Text):
        if artist.get_visible() and artist.get_text().strip() and artist.get_figure() is not None:
            found.append((artist, artist.axes))
    return found


def overlaps(figure) -> list[str]:
    """Pairs of texts whose boxes intersect, and texts over another axes' images."""
    FigureCanvasAgg(figure).draw()
    renderer = figure.canvas.get_renderer()
    boxes = [(t, owner, t.get_window_extent(renderer)) for t, owner in texts(figure)]
    found = []
    for i, (first, _, box) in enumerate(boxes):
        for second, _, other in boxes[i + 1 :]:
            if box.overlaps(other) and box.width > 0 and other.width > 0:
                found.append(f"{first.get_text()!r} over {second.get_text()!r}")
    for axis in figure.get_axes():
        if not axis.images:
            continue
        area = axis.get_window_extent(renderer)
        for text, owner, box in boxes:
            if owner is not axis and box.overlaps(area):
                found.append(f"{text.get_text()!r} over an image")
    return found


def slice_rows():
    return pd.DataFrame(
        {
            "method": ["domino"] * 3 + ["loss"],
            "n": 500,
            "slice": [0, 1, 2, 0],
            "size": [40.0, 60.0, 80.0, 40.0],
            "metric": [0.7, 0.8, 0.85, 0.7],
            "gap": [0.2, 0.1, 0.05, 0.2],
            "gap_low": [0.12, 0.02, -0.03, 0.12],
            "gap_high": [0.28, 0.18, 0.13, 0.28],
            "p_value": [0.001, 0.2, 0.01, 0.5],
            "outcome_defined": [False, False, False, True],
        }
    )


def test_the_slices_figure_keeps_its_axis_label_off_the_images():
    rng = np.random.default_rng(0)
    images = {
        rank: [rng.integers(0, 255, (28, 28), dtype=np.uint8)] * SLICE_IMAGES for rank in (0, 1, 2)
    }
    figure = figure_slices(slice_rows(), images, "domino", STYLE, "toy")
    assert overlaps(figure) == []


def benchmark_table():
    rows = []
    rng = np.random.default_rng(1)
    for setting, mechanism, null, strength in (
        ("marker ρ=0.97", "marker", False, 0.47),
        ("marker null", "marker", True, 0.0),
        ("shift 5%", "shift", False, 0.05),
        ("nothing planted", "none", True, 0.0),
    ):
        for draw in (1, 2, 3):
            for method in ("neighbours", "loss"):
                rows.append(
                    {
                        "setting": setting,
                        "dataset": f"{setting}{draw}",
                        "draw": draw,
                        "method": method,
                        "null": null,
                        "mechanism": mechanism,
                        "strength": strength,
                        "precision_at_10": np.nan if null else rng.random(),
                        "significant": rng.random() < 0.3,
                        "index_debiased_cv": rng.random() * 5,
                        "index_p_calibrated": rng.random(),
                    }
                )
    return pd.DataFrame(rows)


def test_the_benchmark_figures_draw_no_text_over_text():
    table = benchmark_table()
    assert overlaps(figure_validation(table, STYLE)) == []
    assert overlaps(figure_dose_response(table, STYLE)) == []


def test_the_overlap_check_sees_a_label_over_an_image():
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3, 3))
    top, bottom = figure.subplots(2, 1)
    bottom.imshow(np.zeros((4, 4)))
    top.text(0.5, -1.0, "on the image", transform=top.transAxes)
    found = overlaps(figure)
    assert "'on the image' over an image" in found
    # and cramped tick labels, text over text
    assert any(" over '" in entry for entry in found)


def points_under_texts(figure) -> list[str]:
    """Texts and legends inside an axes (not a point's own label) that cover a plotted point."""
    FigureCanvasAgg(figure).draw()
    renderer = figure.canvas.get_renderer()
    found = []
    for axis in figure.get_axes():
        offsets = [c.get_offset_transform().transform(c.get_offsets()) for c in axis.collections]
        points = np.vstack([o for o in offsets if len(o)] or [np.zeros((0, 2))])
        covers = [t for t in axis.texts if t.get_text().strip() and not hasattr(t, "xyann")]
        covers += [axis.get_legend()] if axis.get_legend() else []
        for cover in covers:
            box = cover.get_window_extent(renderer)
            inside = (
                (points[:, 0] >= box.x0)
                & (points[:, 0] <= box.x1)
                & (points[:, 1] >= box.y0)
                & (points[:, 1] <= box.y1)
            )
            if inside.any():
                found.append(f"{type(cover).__name__} over {inside.sum()} points")
    return found


def test_figure5_keeps_its_correlations_off_the_points_and_the_labels():
    # Points in every corner of the plot, where a text box inside the axes would sit.
    selected = {"algorithm": "fcm", "k": 4}
    sizes = [100, 300, 900, 1800]
    cv = pd.DataFrame(
        {"algorithm": "fcm", "k": 4, "n": sizes, "cv": [1.0, 9.0, 1.2, 8.8]}
        | {"test_metric": [0.80, 0.82, 0.97, 0.99]}
    )
    fold_cv = pd.DataFrame(
        [
            {"algorithm": "fcm", "k": 4, "n": n, "fold": f, "cv": c + f / 4, "test_metric": m}
            for n, c, m in zip(sizes, cv["cv"], cv["test_metric"], strict=True)
            for f in range(4)
        ]
    )
    correlation = pd.DataFrame(
        {
            "level": ["sample_size", "sample_size_debiased", "fold"],
            "n_points": [4, 4, 16],
            "pearson": [-0.5, -0.4, -0.3],
            "pearson_perm_p": [0.3, 0.4, 0.2],
        }
    )
    figure = figure5(cv, fold_cv, correlation, selected, "accuracy", STYLE, "toy")
    assert points_under_texts(figure) == []
    assert overlaps(figure) == []
    captions = [t.get_text() for axis in figure.get_axes() for t in axis.texts]
    assert any("Pearson r = -0.50" in text for text in captions)
