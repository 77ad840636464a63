"""The monitoring docs: a scrape config that parses, a Grafana dashboard that queries exported metrics."""

from __future__ import annotations


def test_the_grafana_dashboard_and_scrape_config_name_real_metrics():
    """docs/grafana-dashboard.json queries only metrics that /metrics exports; docs/prometheus.yml parses."""
    import json
    import re
    from pathlib import Path

    import yaml

    docs = Path(__file__).resolve().parents[2] / "docs"
    scrape = yaml.safe_load((docs / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics" and scrape["authorization"]["type"] == "Bearer"
    source = (Path(__file__).resolve().parents[2] / "web" / "metrics.py").read_text()
    exported = set(re.findall(r'"(genqueue_[a-z_]+)"', source))
    exprs = [
        t["expr"] for p in json.loads((docs / "grafana-dashboard.json").read_text())["panels"] for t in p["targets"]
    ]
    used = {re.sub(r"_(bucket|total|count|sum)$", "", m) for e in exprs for m in re.findall(r"genqueue_[a-z_]+", e)}
    assert used and used <= exported, used - exported
