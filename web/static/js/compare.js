/* Compare page: fetch each run's downsampled metric series, one overlaid chart per metric (a series per run);
   zooming one chart zooms them all; "only differences" folds the params rows that agree. */
(function () {
  "use strict";
  const GQ = window.GQ;
  // Known metrics first, in this order; any others after them, alphabetically.
  const ORDER = ["train_loss", "val_loss", "perplexity", "f1", "precision", "recall", "fd", "d_loss", "g_loss",
    "d_real", "d_fake", "lr", "tokens_per_s"];
  const TITLES = {
    train_loss: "Training loss", val_loss: "Validation loss", perplexity: "Validation perplexity", f1: "F1",
    fd: "Fréchet distance", d_loss: "Discriminator loss", g_loss: "Generator loss", d_real: "D(real)",
    d_fake: "D(fake)", lr: "Learning rate", tokens_per_s: "Throughput (tokens/s)",
  };
  const DASHES = [null, "7 4", "2 3", "10 3 2 3", "4 2 1 2", "12 3"];

  function metricOrder(a, b) {
    const ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
    if (ia >= 0 || ib >= 0) return (ia < 0 ? 1e9 : ia) - (ib < 0 ? 1e9 : ib);
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function legendSample(i) {
    return GQ.el("svg:svg", { viewBox: "0 0 24 10", "aria-hidden": "true", class: "chart" },
      GQ.el("svg:line", { x1: 1, x2: 23, y1: 5, y2: 5, class: "series s" + (i % 6), "stroke-dasharray": DASHES[i % 6] }));
  }

  document.addEventListener("DOMContentLoaded", async function () {
    const root = document.getElementById("compare");
    if (!root) return;
    const runs = Array.from(document.querySelectorAll("#compare-jobs li")).map((li) => ({
      id: li.dataset.jobId, label: li.dataset.label, index: Number(li.dataset.index), li,
    }));
    for (const run of runs) run.li.querySelector(".legend-slot").replaceChildren(legendSample(run.index));

    const onlyDiff = document.getElementById("only-diff");
    onlyDiff.addEventListener("change", () => {
      document.querySelectorAll(".params-diff").forEach((t) => t.classList.toggle("only-diff", onlyDiff.checked));
    });

    const container = document.getElementById("compare-charts");
    const empty = container.querySelector("[data-empty]");
    let series;
    try {
      series = await Promise.all(runs.map((run) => GQ.api(
        root.dataset.metricsUrl.replace("JOB", encodeURIComponent(run.id)) + "?points=" + root.dataset.points)));
    } catch (err) {
      empty.textContent = "Could not load the metric series: " + err.message;
      return;
    }
    const names = Array.from(new Set(series.flatMap((s) => Object.keys(s.series)))).sort(metricOrder);
    if (!names.length) { empty.textContent = "These runs have no metric points."; return; }
    empty.remove();
    const charts = [];
    const syncZoom = (domain) => charts.forEach((c) => c.zoom(domain, false));
    for (const name of names) {
      const chart = new GQ.LineChart(container, TITLES[name] || name,
        runs.map((run) => ({ key: run.id, label: run.label })), { onZoom: syncZoom });
      const data = {};
      runs.forEach((run, i) => {
        const s = series[i].series[name];
        if (s) data[run.id] = s.steps.map((step, j) => [step, s.values[j]]);
      });
      chart.root.dataset.metric = name;
      chart.root.dataset.points = String(runs.reduce((n, run, i) => n + ((series[i].series[name] || {}).points || 0), 0));
      chart.setData(data);
      charts.push(chart);
    }
    root.dataset.ready = "1";
  });
})();
