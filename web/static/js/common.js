/* genqueue dashboard: shared helpers. Untrusted strings only ever reach the page as text nodes (never innerHTML). */
(function () {
  "use strict";

  const GQ = (window.GQ = {});
  GQ.ACTIVE = ["queued", "running", "cancelling"];
  GQ.TERMINAL = ["succeeded", "failed", "cancelled"];
  GQ.STATUS_ICONS = {
    queued: "◷", running: "▶", cancelling: "◼", succeeded: "✓", failed: "✕", cancelled: "⊘",
  };
  /* The job kinds as the registry (shared/kinds.py) presents them: label, charts, model param. */
  const kindsNode = document.querySelector('meta[name="gq-kinds"]');
  GQ.KINDS = kindsNode ? JSON.parse(kindsNode.content) : {};
  GQ.KIND_LABELS = Object.fromEntries(Object.entries(GQ.KINDS).map(([name, k]) => [name, k.label]));

  /** createElement with attributes; string children become text nodes. */
  GQ.el = function (tag, attrs, ...children) {
    const node = tag.startsWith("svg:")
      ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
      : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.setAttribute("class", value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };

  GQ.csrfToken = function () {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  };

  /** fetch() the JSON API with the session cookie; state-changing calls carry X-CSRF-Token. */
  GQ.api = async function (url, options) {
    const opts = Object.assign({ method: "GET" }, options || {});
    const headers = { Accept: "application/json" };
    if (opts.method !== "GET" && opts.method !== "HEAD") headers["X-CSRF-Token"] = GQ.csrfToken();
    let body;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    const resp = await fetch(url, { method: opts.method, headers, body, credentials: "same-origin", cache: "no-store" });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (resp.status === 401) {
      window.location.assign("/login?expired=1&next=" + encodeURIComponent(location.pathname + location.search));
    }
    if (!resp.ok) {
      const info = (data && data.error) || {};
      const err = new Error(info.message || resp.statusText || "request failed");
      err.status = resp.status;
      err.code = info.code;
      throw err;
    }
    return data;
  };

  GQ.isActive = (status) => GQ.ACTIVE.includes(status);
  GQ.kindLabel = (kind) => GQ.KIND_LABELS[kind] || kind;
  GQ.shortId = function (id) {
    if (!id) return "";
    const i = id.indexOf("_");
    const rest = id.slice(i + 1);
    return i >= 0 && rest.length > 10 ? id.slice(0, i) + "_…" + rest.slice(-8) : id;
  };

  GQ.humanSeconds = function (seconds) {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  };

  GQ.humanBytes = function (n) {
    if (n === null || n === undefined) return "";
    let size = n;
    for (const unit of ["B", "KB", "MB", "GB"]) {
      if (size < 1024 || unit === "GB") return unit === "B" ? size + " B" : size.toFixed(1) + " " + unit;
      size /= 1024;
    }
    return n + " B";
  };

  GQ.metric = function (v) {
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toPrecision(3);
    return String(Number(v.toPrecision(4)));
  };

  GQ.percent = function (job) {
    if (job.status === "succeeded") return 100;
    const p = job.progress || {};
    return p.total ? Math.min(100, Math.floor((p.done * 100) / p.total)) : 0;
  };

  GQ.duration = function (job) {
    if (!job.started_at) return "";
    const start = Date.parse(job.started_at);
    let end = job.finished_at ? Date.parse(job.finished_at) : null;
    if (end === null) {
      if (!GQ.isActive(job.status)) return "";
      end = Date.now();
    }
    return GQ.humanSeconds((end - start) / 1000);
  };

  GQ.modelLabel = function (job) {
    const p = job.params || {};
    if (job.kind === "text.train") {
      const base = p.base_model || "scratch";
      return base === "scratch" ? "scratch (" + (p.size || "custom") + ")" : base;
    }
    if (job.kind === "image.train_gan") return (p.architecture || "dcgan") + " on " + (p.dataset || "digits");
    const param = (GQ.KINDS[job.kind] || {}).model_param || "model";
    return String(p[param] || (param === "base_model" ? "scratch" : ""));
  };

  GQ.statusBadge = function (status) {
    return GQ.el("span", { class: "badge badge-" + status, dataset: { role: "status" } },
      GQ.el("span", { class: "badge-icon", "aria-hidden": "true", text: GQ.STATUS_ICONS[status] || "•" }),
      GQ.el("span", { class: "badge-text", text: status }));
  };

  GQ.progressText = function (job, detailed) {
    const p = job.progress || {};
    let text = "";
    if (detailed && p.total) text += p.done + " / " + p.total + " · ";
    text += GQ.percent(job) + " %";
    if (p.eta_seconds !== null && p.eta_seconds !== undefined) text += " · ETA " + GQ.humanSeconds(p.eta_seconds);
    return text;
  };

  GQ.progressBar = function (job, detailed) {
    const p = job.progress || {};
    const pct = GQ.percent(job);
    const indeterminate = (job.status === "running" || job.status === "cancelling") && !p.total;
    const bar = GQ.el("progress", { class: "progress", "aria-label": "Progress", max: indeterminate ? null : 100,
      value: indeterminate ? null : pct }, indeterminate ? "working" : pct + " %");
    return GQ.el("div", { class: "progress-wrap", dataset: { role: "progress" } }, bar,
      GQ.el("span", { class: "progress-text", text: GQ.progressText(job, detailed) }));
  };

  GQ.relTime = function (iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return iso;
    const s = Math.round((Date.now() - t) / 1000);
    if (s < 5) return "just now";
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    if (s < 7 * 86400) return Math.floor(s / 86400) + " d ago";
    return new Date(t).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
  };

  GQ.localTime = (iso) => new Date(Date.parse(iso)).toLocaleString();

  GQ.timeTag = function (iso, empty) {
    if (!iso) return GQ.el("span", { class: "muted", text: empty === undefined ? "—" : empty });
    return GQ.el("time", { datetime: iso, title: iso + " (" + GQ.localTime(iso) + ")", dataset: { rel: "" } },
      GQ.relTime(iso));
  };

  GQ.refreshTimes = function (root) {
    for (const t of (root || document).querySelectorAll("time[data-rel]")) {
      const iso = t.getAttribute("datetime");
      t.textContent = GQ.relTime(iso);
      if (!t.dataset.titled) {
        t.title = iso + " (" + GQ.localTime(iso) + ")";
        t.dataset.titled = "1";
      }
    }
  };

  /**
   * Call fn every `interval` ms while it resolves to true; pauses while the tab is hidden and backs off on errors.
   * Returns {stop(), kick()}.
   */
  GQ.poll = function (fn, interval, onError) {
    let timer = null;
    let stopped = false;
    let delay = interval;
    let running = false;
    async function tick() {
      timer = null;
      if (stopped) return;
      if (document.hidden) { schedule(interval); return; }
      running = true;
      try {
        const more = await fn();
        delay = interval;
        if (more === false) { stopped = true; return; }
      } catch (err) {
        delay = Math.min(delay * 2, 30000);
        if (onError) onError(err);
      } finally {
        running = false;
      }
      schedule(delay);
    }
    function schedule(ms) { if (!stopped && timer === null) timer = setTimeout(tick, ms); }
    schedule(interval);
    return {
      stop() { stopped = true; if (timer) clearTimeout(timer); timer = null; },
      kick() { if (stopped) { stopped = false; } if (!running) { if (timer) clearTimeout(timer); timer = null; tick(); } },
      get stopped() { return stopped; },
    };
  };

  document.addEventListener("DOMContentLoaded", function () {
    GQ.refreshTimes(document);
    setInterval(() => GQ.refreshTimes(document), 15000);
  });
})();
