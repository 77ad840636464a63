"""Dashboard formatting helpers (pure functions)."""

from web.dashboard.format import metric, summary_rows


def test_metric_is_compact():
    assert metric(5.186146259307861) == "5.186"
    assert metric(1234567) == "1,234,567"
    assert metric(0.000123456) == "0.000123"
    assert metric("x") == "x"


def test_summary_rows_flatten_nested_metrics():
    summary = {
        "steps": 300,
        "metrics": {"val_loss": 5.186146259307861, "perplexity": 178.77825862837793},
        "resumed_from_step": None,
        "stop": ["\n"],
    }
    assert summary_rows(summary) == [
        ("steps", "300"),
        ("metrics · val_loss", "5.186"),
        ("metrics · perplexity", "178.8"),
        ("resumed_from_step", "—"),
        ("stop", '["\\n"]'),
    ]
    assert summary_rows(None) == []
