/* A small SVG line chart (no library): several series by step, nice axes, hover readout, legend with latest values,
   drag to zoom into a step range (double-click or "Reset zoom" to undo), and a log scale for positive values.
   Series are told apart by colour AND dash pattern / markers, never colour alone. Long series are drawn through a
   min/max-per-pixel reduction, so a spike stays visible however many points there are (100k are fine). */
(function () {
  "use strict";
  const GQ = window.GQ;
  const H = 200;
  const M = { top: 10, right: 14, bottom: 26, left: 52 };
  const DASHES = [null, "7 4", "2 3", "10 3 2 3", "4 2 1 2", "12 3"];
  const PALETTE = 6; // .s0 … .s5 in app.css
  const MIN_DRAG_PX = 6;

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

  /** Ticks of a log10 axis: whole decades (with 2 and 5 between them when there are few). */
  function logTicks(min, max) {
    let lo = Math.floor(Math.log10(min));
    let hi = Math.ceil(Math.log10(max));
    if (lo === hi) { lo -= 1; hi += 1; }
    const out = [];
    for (let e = lo; e <= hi; e++) {
      out.push(Math.pow(10, e));
      if (hi - lo <= 2 && e < hi) out.push(2 * Math.pow(10, e), 5 * Math.pow(10, e));
    }
    return { ticks: out.map((v) => Number(v.toPrecision(6))), min: Math.pow(10, lo), max: Math.pow(10, hi) };
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
    return String(Number(v.toPrecision(3)));
  }

  /** [min, max] of index `k` over arrays of points, without spreading them into arguments (100k would overflow). */
  function extent(points, k) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of points) {
      if (p[k] < lo) lo = p[k];
      if (p[k] > hi) hi = p[k];
    }
    return [lo, hi];
  }

  /** At most ~2 points per pixel column: each column's lowest and highest (in step order), plus the ends. */
  function reduce(points, x, width) {
    if (points.length <= width * 2) return points;
    const out = [points[0]];
    let col = null;
    let lo = null;
    let hi = null;
    const flush = () => {
      if (lo === null) return;
      if (lo === hi) out.push(lo);
      else if (lo[0] <= hi[0]) out.push(lo, hi);
      else out.push(hi, lo);
    };
    for (let i = 1; i < points.length - 1; i++) {
      const p = points[i];
      const c = Math.floor(x(p[0]));
      if (c !== col) { flush(); col = c; lo = hi = p; continue; }
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
    flush();
    out.push(points[points.length - 1]);
    return out;
  }

  /** The points within [x0, x1], plus one on each side so lines run to the plot's edges. */
  function within(points, x0, x1) {
    let a = 0;
    while (a < points.length && points[a][0] < x0) a++;
    let b = points.length;
    while (b > a && points[b - 1][0] > x1) b--;
    return points.slice(Math.max(0, a - 1), Math.min(points.length, b + 1));
  }

  class LineChart {
    /** series: [{key, label}]; options: {zoom: true, logToggle: true, onZoom(domain|null)} */
    constructor(container, title, series, options) {
      this.title = title;
      this.series = series;
      this.options = Object.assign({ zoom: true, logToggle: true, onZoom: null }, options || {});
      this.data = {};
      this.width = 480;
      this.domain = null; // [step0, step1] when zoomed
      this.logY = false;
      this.svg = GQ.el("svg:svg", { role: "img", "aria-label": title + " by step", preserveAspectRatio: "xMidYMid meet" });
      this.legend = GQ.el("ul", { class: "legend" });
      this.readout = GQ.el("p", { class: "chart-readout", "aria-live": "off" });
      this.tools = GQ.el("div", { class: "chart-tools" });
      if (this.options.logToggle) {
        this.logBox = GQ.el("input", { type: "checkbox", class: "chart-log" });
        this.logBox.addEventListener("change", () => { this.logY = this.logBox.checked; this.draw(); });
        this.tools.append(GQ.el("label", {}, this.logBox, " log scale"));
      }
      if (this.options.zoom) {
        this.resetBtn = GQ.el("button", { type: "button", class: "btn btn-quiet btn-small chart-reset", hidden: true }, "Reset zoom");
        this.resetBtn.addEventListener("click", () => this.zoom(null, true));
        this.tools.append(this.resetBtn);
      }
      this.root = GQ.el("figure", { class: "chart", dataset: { chart: title } },
        GQ.el("div", { class: "chart-head" }, GQ.el("h3", { text: title }), this.tools),
        this.svg, this.legend, this.readout);
      container.append(this.root);
      this.svg.addEventListener("pointermove", (e) => this.hover(e));
      this.svg.addEventListener("pointerleave", () => this.hover(null));
      if (this.options.zoom) this.enableZoom();
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

    /** Show steps [a, b] (null: everything); `notify` tells options.onZoom (to zoom sibling charts alike). */
    zoom(domain, notify) {
      this.domain = domain;
      if (this.resetBtn) this.resetBtn.hidden = !domain;
      this.draw();
      if (notify && this.options.onZoom) this.options.onZoom(domain);
    }

    enableZoom() {
      let start = null;
      const px = (e) => {
        const rect = this.svg.getBoundingClientRect();
        return ((e.clientX - rect.left) / rect.width) * this.width;
      };
      this.svg.addEventListener("pointerdown", (e) => {
        if (!this.scale || e.button !== 0) return;
        start = px(e);
        this.svg.setPointerCapture && this.svg.setPointerCapture(e.pointerId);
      });
      this.svg.addEventListener("pointermove", (e) => {
        if (start === null || !this.band) return;
        const a = Math.max(M.left, Math.min(start, px(e)));
        const b = Math.min(this.width - M.right, Math.max(start, px(e)));
        this.band.setAttribute("x", a);
        this.band.setAttribute("width", Math.max(0, b - a));
        this.band.setAttribute("visibility", "visible");
      });
      this.svg.addEventListener("pointerup", (e) => {
        if (start === null) return;
        const end = px(e);
        const a = Math.min(start, end);
        const b = Math.max(start, end);
        start = null;
        if (this.band) this.band.setAttribute("visibility", "hidden");
        if (b - a < MIN_DRAG_PX) return;
        const s0 = this.scale.invX(Math.max(a, M.left));
        const s1 = this.scale.invX(Math.min(b, this.width - M.right));
        if (s1 > s0) this.zoom([s0, s1], true);
      });
      this.svg.addEventListener("dblclick", () => this.zoom(null, true));
    }

    visible(key) {
      const pts = this.data[key] || [];
      return this.domain ? within(pts, this.domain[0], this.domain[1]) : pts;
    }

    draw() {
      const svg = this.svg;
      const W = (this.width = Math.max(260, Math.round(this.root.clientWidth) || 480));
      svg.setAttribute("viewBox", "0 0 " + W + " " + H);
      svg.replaceChildren();
      const shown = this.series.map((s) => this.visible(s.key));
      const all = shown.flat();
      if (!all.length) { this.scale = null; this.drawLegend(); return; }
      const [y0, y1] = extent(all, 1);
      const canLog = y0 > 0;
      if (this.logBox) this.logBox.disabled = !canLog;
      const log = this.logY && canLog;
      const [x0, x1] = this.domain || extent(all, 0);
      const xs = ticks(x0, x1, 5, false);
      const ys = log ? logTicks(y0, y1) : ticks(y0, y1, 4, true);
      const ty = log ? Math.log10 : (v) => v;
      const yLo = ty(ys.min);
      const yHi = ty(ys.max);
      this.scale = {
        x: (v) => M.left + ((v - xs.min) / (xs.max - xs.min || 1)) * (W - M.left - M.right),
        y: (v) => H - M.bottom - ((ty(v) - yLo) / (yHi - yLo || 1)) * (H - M.top - M.bottom),
        invX: (p) => xs.min + ((p - M.left) / (W - M.left - M.right)) * (xs.max - xs.min),
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
      const clipId = "clip-" + Math.random().toString(36).slice(2);
      const clip = GQ.el("svg:clipPath", { id: clipId },
        GQ.el("svg:rect", { x: M.left, y: 0, width: W - M.left - M.right, height: H - M.bottom }));
      const plot = GQ.el("svg:g", { "clip-path": "url(#" + clipId + ")" });
      svg.append(GQ.el("svg:defs", {}, clip), grid, axis, plot);
      const densest = Math.max(0, ...shown.map((p) => p.length));
      this.series.forEach((s, i) => {
        const points = reduce(shown[i], x, W);
        if (!points.length) return;
        const d = points.map((p, j) => (j ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ");
        const cls = "s" + (i % PALETTE);
        plot.append(GQ.el("svg:path", { d, class: "series " + cls, "stroke-dasharray": DASHES[i % DASHES.length] }));
        // Markers on short or sparse series (validation points every eval_every steps), not on dense ones.
        if (points.length <= 40 || (points.length * 3 <= densest && points.length <= 200)) {
          for (const p of points) {
            plot.append(GQ.el("svg:circle", { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.5, class: "dot " + cls }));
          }
        }
      });
      this.band = GQ.el("svg:rect", { class: "zoom-band", y: M.top, height: H - M.top - M.bottom, x: 0, width: 0, visibility: "hidden" });
      this.hoverLine = GQ.el("svg:line", { class: "hover-line", y1: M.top, y2: H - M.bottom, visibility: "hidden" });
      svg.append(this.band, this.hoverLine);
      this.drawLegend();
      this.hover(null);
    }

    drawLegend() {
      this.legend.replaceChildren(...this.series.filter((s) => (this.data[s.key] || []).length).map((s) => {
        const i = this.series.indexOf(s);
        const pts = this.data[s.key];
        const sample = GQ.el("svg:svg", { viewBox: "0 0 24 10", "aria-hidden": "true" },
          GQ.el("svg:line", { x1: 1, x2: 23, y1: 5, y2: 5, class: "series s" + (i % PALETTE),
            "stroke-dasharray": DASHES[i % DASHES.length] }));
        return GQ.el("li", {}, sample, s.label + " ",
          GQ.el("span", { class: "value", text: GQ.metric(pts[pts.length - 1][1]) }));
      }));
    }

    /** The point of series `key` nearest to `step` (binary search: the points are sorted by step). */
    valueAt(key, step) {
      const pts = this.visible(key);
      if (!pts.length) return null;
      let lo = 0;
      let hi = pts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (pts[mid][0] < step) lo = mid + 1;
        else hi = mid;
      }
      const prev = pts[Math.max(0, lo - 1)];
      return Math.abs(prev[0] - step) < Math.abs(pts[lo][0] - step) ? prev : pts[lo];
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
  GQ.chartReduce = reduce; // exposed for the browser test of the min/max reduction
})();
