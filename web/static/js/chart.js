/* A small SVG line chart (no library): several series by step, nice axes, hover readout, legend with latest values.
   Series are told apart by colour AND dash pattern / markers, never colour alone. */
(function () {
  "use strict";
  const GQ = window.GQ;
  const H = 200;
  const M = { top: 10, right: 14, bottom: 26, left: 52 };
  const DASHES = [null, "7 4", "2 3", "10 3 2 3"];
  const MAX_DRAWN = 1000;

  function niceStep(range, count) {
    const raw = range / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    return (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag;
  }

  /** Nice ticks; `extend` widens the range to whole ticks (the y axis), otherwise it stays the data's (steps). */
  function ticks(min, max, count, extend) {
    if (min === max) { min -= 1; max += 1; }
    const step = niceStep(max - min, count);
    const lo = extend ? Math.floor(min / step + 1e-9) * step : min;
    const hi = extend ? Math.ceil(max / step - 1e-9) * step : max;
    const out = [];
    for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return { ticks: out, min: lo, max: hi };
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
    return String(Number(v.toPrecision(3)));
  }

  function decimate(points) {
    if (points.length <= MAX_DRAWN) return points;
    const every = Math.ceil(points.length / MAX_DRAWN);
    const out = points.filter((_, i) => i % every === 0);
    if (out[out.length - 1] !== points[points.length - 1]) out.push(points[points.length - 1]);
    return out;
  }

  class LineChart {
    /** series: [{key, label}] */
    constructor(container, title, series) {
      this.title = title;
      this.series = series;
      this.data = {};
      this.width = 480;
      this.svg = GQ.el("svg:svg", { role: "img", "aria-label": title + " by training step", preserveAspectRatio: "xMidYMid meet" });
      this.legend = GQ.el("ul", { class: "legend" });
      this.readout = GQ.el("p", { class: "chart-readout", "aria-live": "off" });
      this.root = GQ.el("figure", { class: "chart", dataset: { chart: title } },
        GQ.el("h3", { text: title }), this.svg, this.legend, this.readout);
      container.append(this.root);
      this.svg.addEventListener("pointermove", (e) => this.hover(e));
      this.svg.addEventListener("pointerleave", () => this.hover(null));
      // Draw at the figure's own width so axis text stays at its CSS size on any screen.
      if (window.ResizeObserver) {
        new ResizeObserver(() => {
          const w = Math.round(this.root.clientWidth);
          if (w > 0 && Math.abs(w - this.width) > 8) this.draw();
        }).observe(this.root);
      }
    }

    /** data: {key: [[step, value], ...] sorted by step} */
    setData(data) {
      this.data = data;
      this.draw();
    }

    pointCount() {
      return this.series.reduce((n, s) => n + (this.data[s.key] || []).length, 0);
    }

    draw() {
      const svg = this.svg;
      const W = (this.width = Math.max(260, Math.round(this.root.clientWidth) || 480));
      svg.setAttribute("viewBox", "0 0 " + W + " " + H);
      svg.replaceChildren();
      const all = this.series.flatMap((s) => this.data[s.key] || []);
      if (!all.length) return;
      const xs = ticks(Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0])), 5, false);
      const ys = ticks(Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1])), 4, true);
      this.scale = {
        x: (v) => M.left + ((v - xs.min) / (xs.max - xs.min || 1)) * (W - M.left - M.right),
        y: (v) => H - M.bottom - ((v - ys.min) / (ys.max - ys.min || 1)) * (H - M.top - M.bottom),
        invX: (px) => xs.min + ((px - M.left) / (W - M.left - M.right)) * (xs.max - xs.min),
      };
      const { x, y } = this.scale;
      const grid = GQ.el("svg:g", { class: "grid" });
      const axis = GQ.el("svg:g", { class: "axis" });
      for (const t of ys.ticks) {
        grid.append(GQ.el("svg:line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t) }));
        axis.append(GQ.el("svg:text", { x: M.left - 6, y: y(t) + 4, "text-anchor": "end" }, fmt(t)));
      }
      for (const t of xs.ticks) {
        axis.append(GQ.el("svg:text", { x: x(t), y: H - M.bottom + 16, "text-anchor": "middle" }, fmt(t)));
      }
      axis.append(GQ.el("svg:line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }));
      svg.append(grid, axis);
      const densest = Math.max(...this.series.map((s) => (this.data[s.key] || []).length));
      this.series.forEach((s, i) => {
        const points = decimate(this.data[s.key] || []);
        if (!points.length) return;
        const d = points.map((p, j) => (j ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ");
        svg.append(GQ.el("svg:path", { d, class: "series s" + i, "stroke-dasharray": DASHES[i % DASHES.length] }));
        // Markers on short or sparse series (validation points every eval_every steps), not on dense ones.
        if (points.length <= 40 || (points.length * 3 <= densest && points.length <= 200)) {
          for (const p of points) {
            svg.append(GQ.el("svg:circle", { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.5, class: "dot s" + i }));
          }
        }
      });
      this.hoverLine = GQ.el("svg:line", { class: "hover-line", y1: M.top, y2: H - M.bottom, visibility: "hidden" });
      svg.append(this.hoverLine);
      this.drawLegend();
      this.hover(null);
    }

    drawLegend() {
      this.legend.replaceChildren(...this.series.filter((s) => (this.data[s.key] || []).length).map((s) => {
        const i = this.series.indexOf(s);
        const pts = this.data[s.key];
        const sample = GQ.el("svg:svg", { viewBox: "0 0 24 10", "aria-hidden": "true" },
          GQ.el("svg:line", { x1: 1, x2: 23, y1: 5, y2: 5, class: "series s" + i,
            "stroke-dasharray": DASHES[i % DASHES.length] }));
        return GQ.el("li", {}, sample, s.label + " ",
          GQ.el("span", { class: "value", text: GQ.metric(pts[pts.length - 1][1]) }));
      }));
    }

    valueAt(key, step) {
      const pts = this.data[key] || [];
      let best = null;
      for (const p of pts) {
        if (best === null || Math.abs(p[0] - step) < Math.abs(best[0] - step)) best = p;
      }
      return best;
    }

    hover(event) {
      if (!this.scale) return;
      if (!event) {
        this.hoverLine && this.hoverLine.setAttribute("visibility", "hidden");
        const last = this.series.map((s) => (this.data[s.key] || []).slice(-1)[0]).filter(Boolean);
        const step = last.length ? Math.max(...last.map((p) => p[0])) : null;
        this.readout.textContent = step === null ? "" : "latest at step " + step;
        return;
      }
      const rect = this.svg.getBoundingClientRect();
      const px = ((event.clientX - rect.left) / rect.width) * this.width;
      const step = this.scale.invX(px);
      const parts = [];
      let snapped = null;
      for (const s of this.series) {
        const p = this.valueAt(s.key, step);
        if (p) {
          if (snapped === null) snapped = p[0];
          parts.push(s.label + " " + GQ.metric(p[1]));
        }
      }
      if (snapped === null) return;
      this.hoverLine.setAttribute("x1", this.scale.x(snapped));
      this.hoverLine.setAttribute("x2", this.scale.x(snapped));
      this.hoverLine.setAttribute("visibility", "visible");
      this.readout.textContent = "step " + snapped + " · " + parts.join(" · ");
    }
  }

  GQ.LineChart = LineChart;
})();
