"""The Δ-vs-strength plot carries strength's interval (issue 26)."""

import pytest

from lsap.experiments.plots import strength_xerr, write_delta_plot

pytest.importorskip("matplotlib")


def _row(setting, strength, ci, delta):
    d = {"mean": delta, "min": delta - 0.01, "max": delta + 0.01}
    return {
        "setting": setting,
        "surrogate": setting,
        "strength": strength,
        "strength_ci": ci,
        "pairs_average": d,
    }


def test_strength_bars_are_the_bootstrap_interval_around_the_point():
    rows = [_row("lsap-a", 0.7, [0.65, 0.78], 0.01), _row("lsap-b", 0.9, [0.88, 0.95], 0.02)]
    below, above = strength_xerr(rows)
    assert below == pytest.approx([0.05, 0.02]) and above == pytest.approx([0.08, 0.05])


def test_no_bars_when_any_row_lacks_an_interval():
    rows = [_row("lsap-a", 0.7, [0.65, 0.78], 0.01), _row("lsap-b", 0.9, None, 0.02)]
    assert strength_xerr(rows) is None and strength_xerr([]) is None


def test_plot_is_drawn_with_and_without_intervals(tmp_path, monkeypatch):
    import matplotlib.axes

    seen = []
    real = matplotlib.axes.Axes.errorbar

    def spy(self, *a, **k):
        seen.append(k.get("xerr"))
        return real(self, *a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    rows = [_row("lsap-sura", 0.7, [0.65, 0.78], 0.01), _row("lsap-surb", 0.9, [0.8, 1.0], 0.02)]
    assert write_delta_plot(rows, tmp_path) == "delta_vs_strength.png"
    assert (tmp_path / "delta_vs_strength.png").stat().st_size > 0
    bars = [x for x in seen if x is not None]
    assert bars and bars[0][0] == pytest.approx([0.05, 0.1])
