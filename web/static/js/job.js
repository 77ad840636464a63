/* Job page: polls the job and its events (?after=) while it is active; charts, samples, results, artifacts, actions. */
(function () {
  "use strict";
  const GQ = window.GQ;
  const INTERVAL = 1500;
  const EVENTS_PAGE = 1000;
  const LOG_KEEP = 1000;
  const CHARTS = Object.fromEntries(Object.entries(GQ.KINDS).map(([name, k]) => [name, k.charts]));

  document.addEventListener("DOMContentLoaded", function () {
    const root = document.getElementById("job");
    if (!root) return;
    const $ = (id) => document.getElementById(id);
    const kind = root.dataset.kind;
    const state = {
      status: root.dataset.status, after: 0, statusEvents: [], metrics: {}, charts: [], logCount: 0,
      lastDone: null, resultsOffset: 0, pageSize: Number(root.dataset.resultsPage || 25), polls: 0,
      samples: [], liveBucket: null,
    };
    const artifactUrl = (id, inline) =>
      root.dataset.artifactBase.replace("ARTIFACT", encodeURIComponent(id)) + (inline ? "?inline=1" : "");

    /* A stored object that is gone answers 410 (JSON): the page says so where the file would be. */
    const MISSING = "missing from the store (deleted, or never stored)";
    function markMissing(node) {
      if (node.nextSibling && node.nextSibling.dataset && node.nextSibling.dataset.missing !== undefined) return;
      node.after(GQ.el("span", { class: "muted", dataset: { missing: "" }, role: "status", text: " " + MISSING }));
    }
    root.addEventListener("error", (ev) => {
      if (ev.target.tagName === "IMG") { ev.target.alt = MISSING; markMissing(ev.target); }
    }, true);
    root.addEventListener("click", (ev) => {
      const a = ev.target.closest("a[download]");
      if (!a || !root.contains(a)) return;
      ev.preventDefault();
      fetch(a.href, { method: "HEAD", credentials: "same-origin" }).then((resp) => {
        if (resp.status === 410 || resp.status === 404) markMissing(a);
        else window.location.assign(a.href);
      }).catch(() => window.location.assign(a.href));
    });

    /* ---------------- job ---------------- */
    function setText(id, text) { const n = $(id); if (n) n.textContent = text; }

    function applyJob(job) {
      const statusChanged = job.status !== state.status;
      state.status = job.status;
      root.dataset.status = job.status;
      if (statusChanged) $("job-status").replaceChildren(GQ.statusBadge(job.status));
      $("job-progress").replaceChildren(GQ.progressBar(job, true));
      announceProgress(job, statusChanged);
      const note = job.status === "queued" ? "Waiting for a worker" + (job.attempt > 1 ? " (attempt " + job.attempt +
        " of " + job.max_attempts + ")" : "") + "."
        : job.status === "cancelling" ? "Cancel requested: the worker stops at its next step." : "";
      setText("progress-note", note);
      const err = $("job-error");
      err.classList.toggle("hidden", !job.error);
      setText("job-error-code", job.error ? job.error.code : "");
      setText("job-error-message", job.error ? job.error.message : "");
      setText("d-attempt", job.attempt + " of " + job.max_attempts);
      setText("d-worker", (job.worker || "—") + (job.device ? " · " + job.device : ""));
      $("d-started").replaceChildren(GQ.timeTag(job.started_at));
      $("d-finished").replaceChildren(GQ.timeTag(job.finished_at));
      setText("d-duration", GQ.duration(job) || "—");
      if (job.model_id) {
        $("d-model-dt").classList.remove("hidden");
        $("d-model").classList.remove("hidden");
        const a = $("d-model").querySelector("a");
        a.textContent = job.model_id;
        a.href = "/models#" + encodeURIComponent(job.model_id);
      }
      renderSummary(job.summary);
      renderEntityReport(job.summary);
      root.querySelector('[data-action="cancel"]').hidden = !(job.status === "queued" || job.status === "running");
      root.querySelector('[data-action="retry"]').hidden = GQ.isActive(job.status);
      document.title = GQ.kindLabel(kind) + " " + GQ.shortId(job.id) + " (" + job.status + ") · genqueue";
    }

    function announceProgress(job, statusChanged) {
      // aria-live, but not on every poll: on status changes and every 10 %.
      const bucket = Math.floor(GQ.percent(job) / 10);
      const live = $("progress-live");
      if (statusChanged || bucket !== state.liveBucket) {
        state.liveBucket = bucket;
        live.textContent = "Job " + job.status + ", " + GQ.progressText(job, true);
      }
    }

    function renderSummary(summary) {
      const section = $("summary-section");
      if (!summary || !Object.keys(summary).length) return;
      section.hidden = false;
      const items = [];
      const add = (k, v) => {
        if (v && typeof v === "object" && !Array.isArray(v)) {
          for (const [sub, w] of Object.entries(v)) add(k + " · " + sub, w); // e.g. "metrics · val_loss"
          return;
        }
        const text = v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : GQ.metric(v);
        items.push(GQ.el("dt", { text: k }), GQ.el("dd", { text }));
      };
      for (const [k, v] of Object.entries(summary)) add(k, v);
      $("summary").replaceChildren(...items);
    }

    /* ---------------- events: log, timeline, metrics ---------------- */
    function logLine(e) {
      const cls = e.type === "status" ? "log-status" : /error|fail|warn/i.test(e.message || "") ? "log-warn" : "";
      const t = new Date(Date.parse(e.at));
      return GQ.el("li", { class: cls },
        GQ.el("time", { class: "log-time", datetime: e.at, title: e.at }, t.toLocaleTimeString()),
        (e.attempt > 1 ? "[attempt " + e.attempt + "] " : "") + (e.message || ""));
    }

    function addEvents(items) {
      const log = $("log");
      const follow = $("log-follow").checked;
      let metricsChanged = false;
      let timelineChanged = false;
      const lines = [];
      for (const e of items) {
        if (e.type === "metric" && e.data && e.step !== null) {
          for (const [key, value] of Object.entries(e.data)) {
            if (typeof value !== "number" || !Number.isFinite(value)) continue;
            (state.metrics[key] = state.metrics[key] || new Map()).set(e.step, value);
          }
          metricsChanged = true;
        } else {
          lines.push(logLine(e));
          if (e.type === "status") { state.statusEvents.push(e); timelineChanged = true; }
        }
      }
      if (lines.length) {
        const empty = log.querySelector("[data-empty]");
        if (empty) empty.remove();
        log.append(...lines);
        while (log.children.length > LOG_KEEP) log.firstElementChild.remove();
        if (follow) log.scrollTop = log.scrollHeight;
      }
      if (timelineChanged) renderTimeline();
      if (metricsChanged) renderCharts();
    }

    function renderTimeline() {
      $("timeline").replaceChildren(...state.statusEvents.map((e) => {
        const status = (e.data && e.data.status) || "";
        return GQ.el("li", { class: "tl-" + status },
          GQ.el("span", { class: "tl-icon", "aria-hidden": "true", text: GQ.STATUS_ICONS[status] || "•" }),
          GQ.el("span", { class: "tl-text", text: e.message || status }), " ", GQ.timeTag(e.at));
      }));
    }

    function renderCharts() {
      const container = $("charts");
      if (!container) return;
      const configs = CHARTS[kind] || [];
      configs.forEach((cfg, i) => {
        const data = {};
        let any = false;
        for (const s of cfg.series) {
          const m = state.metrics[s.key];
          if (m && m.size) {
            data[s.key] = Array.from(m.entries()).sort((a, b) => a[0] - b[0]);
            any = true;
          }
        }
        if (!any) return;
        if (!state.charts[i]) {
          const empty = container.querySelector("[data-empty]");
          if (empty) empty.remove();
          state.charts[i] = new GQ.LineChart(container, cfg.title, cfg.series);
          // keep the configured order even when charts appear out of order
          const placed = state.charts.filter(Boolean);
          placed.forEach((c) => container.append(c.root));
        }
        state.charts[i].setData(data);
      });
    }

    async function pollEvents() {
      const base = root.dataset.apiEvents;
      for (let page = 0; page < 20; page++) {
        const data = await GQ.api(base + "?after=" + state.after + "&limit=" + EVENTS_PAGE);
        if (data.items.length) addEvents(data.items);
        state.after = data.next_after || state.after;
        if (data.items.length < EVENTS_PAGE) break;
      }
    }

    /* ---------------- results: generations (text.generate), tagged texts (text.tag) ---------------- */
    const RESULTS = (GQ.KINDS[kind] || {}).results || null;

    /** The text with each entity in a <mark> (text nodes only: the text and labels are untrusted). */
    function taggedText(text, entities) {
      const parts = [];
      let pos = 0;
      for (const e of [...entities].sort((a, b) => a.start - b.start)) {
        if (e.start < pos) continue;
        parts.push(text.slice(pos, e.start));
        parts.push(GQ.el("mark", { class: "entity", dataset: { label: e.label }, title: e.label + " · " + Number(e.score).toFixed(2) },
          text.slice(e.start, e.end), GQ.el("span", { class: "entity-label", text: e.label })));
        pos = e.end;
      }
      parts.push(text.slice(pos));
      return GQ.el("span", { class: "tagged" }, ...parts);
    }

    function renderTagRows(rows) {
      $("tagged-texts").replaceChildren(...rows.map((r) => GQ.el("li", { dataset: { index: String(r.index) } },
        r.id ? GQ.el("span", { class: "muted mono", text: r.id + " " }) : null, taggedText(r.text, r.entities))));
      $("tagged-texts").setAttribute("start", String(state.resultsOffset));
    }

    function renderEntityReport(summary) {
      const body = $("entity-report-body");
      const report = summary && summary.report;
      if (!body || !report) return;
      const cells = (row) => ["precision", "recall", "f1"].map((k) => GQ.el("td", { class: "num", text: GQ.metric(row[k]) }));
      body.replaceChildren(...Object.keys(report).sort().map((label) => GQ.el("tr", {},
        GQ.el("th", { scope: "row", text: label }), ...cells(report[label]),
        GQ.el("td", { class: "num", text: String(report[label].support) }))));
      $("entity-report-empty").hidden = true;
    }

    async function loadResults() {
      if (!RESULTS) return;
      const url = root.dataset.apiResults + "?format=json&offset=" + state.resultsOffset + "&limit=" + (state.pageSize + 1);
      const data = await GQ.api(url);
      const rows = data.items.slice(0, state.pageSize);
      const more = data.items.length > state.pageSize;
      if (RESULTS === "tags") renderTagRows(rows);
      else $("results-body").replaceChildren(...rows.map((r) => GQ.el("tr", {},
        GQ.el("td", { "data-label": "#", class: "num" }, String(r.index) + (r.sequence ? "." + r.sequence : "")),
        GQ.el("td", { "data-label": "Prompt", class: "cell-prompt" }, r.prompt),
        GQ.el("td", { "data-label": "Generated text", class: "cell-text" }, r.text),
        GQ.el("td", { "data-label": "Tokens", class: "num" }, String(r.tokens)),
        GQ.el("td", { "data-label": "Finish" }, r.finish_reason))));
      $("results-empty").hidden = rows.length > 0 || state.resultsOffset > 0;
      $("results-prev").disabled = state.resultsOffset === 0;
      $("results-next").disabled = !more;
      setText("results-range", rows.length ? "Rows " + (state.resultsOffset + 1) + "–" + (state.resultsOffset + rows.length) : "");
      state.resultsFull = rows.length === state.pageSize;
      state.resultsMore = more;
    }

    function wireResults() {
      if (!RESULTS) return;
      $("results-prev").addEventListener("click", () => {
        state.resultsOffset = Math.max(0, state.resultsOffset - state.pageSize);
        loadResults().catch(showError);
      });
      $("results-next").addEventListener("click", () => {
        state.resultsOffset += state.pageSize;
        loadResults().catch(showError);
      });
      state.resultsFull = (RESULTS === "tags" ? $("tagged-texts").children : $("results-body").rows).length === state.pageSize;
      state.resultsMore = !$("results-next").disabled;
    }

    /* ---------------- artifacts, samples, images ---------------- */
    async function loadArtifacts() {
      const data = await GQ.api(root.dataset.apiArtifacts);
      const items = data.items;
      const samples = items.filter((a) => a.role === "sample").sort((a, b) => (a.step || 0) - (b.step || 0));
      const images = items.filter((a) => a.role === "image");
      const others = items.filter((a) => a.role !== "sample" && a.role !== "image").slice(0, 100);
      const list = others.map((a) => GQ.el("li", {},
        GQ.el("a", { href: artifactUrl(a.id, false), download: "" }, a.name),
        GQ.el("span", { class: "muted", text: a.role + (a.step !== null ? " · step " + a.step : "") + " · " + GQ.humanBytes(a.size) })));
      if (samples.length) list.push(GQ.el("li", { class: "muted", text: samples.length + " sample grids (see the slider)" }));
      if (images.length) list.push(GQ.el("li", { class: "muted", text: images.length + " images (see the gallery)" }));
      if (!list.length) list.push(GQ.el("li", { class: "muted", dataset: { empty: "" }, text: GQ.isActive(state.status) ? "No artifacts yet." : "No artifacts." }));
      $("artifacts").replaceChildren(...list);
      if (kind === "image.train_gan") renderSamples(samples);
      if (kind === "image.generate") renderImages(items);
    }

    function renderSamples(samples) {
      const box = $("samples");
      if (!samples.length) return;
      const slider = $("sample-step");
      const wasAtEnd = state.samples.length === 0 || Number(slider.value) === state.samples.length - 1;
      state.samples = samples;
      box.querySelector("[data-empty]") && box.querySelector("[data-empty]").remove();
      box.querySelector(".sample-figure").hidden = false;
      box.querySelector(".slider-row").hidden = false;
      slider.max = String(samples.length - 1);
      if (wasAtEnd) slider.value = String(samples.length - 1);
      showSample();
    }

    function showSample() {
      const slider = $("sample-step");
      const i = Number(slider.value);
      const a = state.samples[i];
      if (!a) return;
      const img = $("sample-img");
      if (img.dataset.artifact !== a.id) {
        img.src = artifactUrl(a.id, true);
        img.dataset.artifact = a.id;
      }
      const label = "step " + (a.step === null ? "?" : a.step);
      img.alt = "Generated sample grid at " + label;
      setText("sample-caption", "Sample grid at " + label + " (" + (i + 1) + " of " + state.samples.length + ")");
      setText("sample-step-out", label);
      slider.setAttribute("aria-valuetext", label);
    }

    function renderImages(items) {
      const box = $("images");
      const grid = items.find((a) => a.role === "grid");
      const images = items.filter((a) => a.role === "image");
      const archive = items.find((a) => a.role === "archive");
      if (!grid && !images.length) return;
      const nodes = [];
      if (grid) nodes.push(GQ.el("img", { class: "grid-img", src: artifactUrl(grid.id, true), alt: "Grid of the generated images" }));
      if (images.length) {
        nodes.push(GQ.el("div", { class: "gallery" }, ...images.slice(0, 64).map((a, i) =>
          GQ.el("a", { href: artifactUrl(a.id, false), download: "" },
            GQ.el("img", { src: artifactUrl(a.id, true), alt: "Image " + (i + 1) + " (" + a.name + ")" })))));
        if (images.length > 64) nodes.push(GQ.el("p", { class: "muted small", text: "Showing 64 of " + images.length + " images." }));
      }
      if (archive) nodes.push(GQ.el("p", {}, GQ.el("a", { class: "btn btn-small", href: artifactUrl(archive.id, false), download: "" },
        "Download all (" + archive.name + ", " + GQ.humanBytes(archive.size) + ")")));
      box.replaceChildren(...nodes);
    }

    /* ---------------- actions ---------------- */
    function showError(err) {
      const msg = $("action-message");
      msg.classList.add("error");
      msg.textContent = err.message || String(err);
    }

    function showMessage(text) {
      const msg = $("action-message");
      msg.classList.remove("error");
      msg.textContent = text;
    }

    async function act(button, url, done) {
      button.disabled = true;
      try {
        const job = await GQ.api(url, { method: "POST" });
        done(job);
      } catch (err) {
        showError(err);
      } finally {
        button.disabled = false;
      }
    }

    root.querySelector('[data-action="cancel"]').addEventListener("click", function () {
      act(this, root.dataset.apiCancel, (job) => {
        applyJob(job);
        showMessage(job.status === "cancelled" ? "Cancelled." : "Cancel requested: the worker stops at its next step.");
        startPolling();
      });
    });
    root.querySelector('[data-action="retry"]').addEventListener("click", function () {
      act(this, root.dataset.apiRetry, (job) => {
        showMessage("Retry queued as " + job.id + ".");
        window.location.assign(root.dataset.jobPage.replace("JOB", encodeURIComponent(job.id)));
      });
    });
    const slider = $("sample-step");
    if (slider) slider.addEventListener("input", showSample);

    /* ---------------- polling ---------------- */
    let poller = null;

    async function tick() {
      const job = await GQ.api(root.dataset.apiJob);
      applyJob(job);
      await pollEvents();
      state.polls += 1;
      const progressed = job.progress.done !== state.lastDone;
      state.lastDone = job.progress.done;
      const active = GQ.isActive(job.status);
      if (RESULTS && (progressed || !active) && (!state.resultsFull || !state.resultsMore)) {
        await loadResults();
      }
      if ((kind === "image.train_gan" || kind === "image.generate") && (progressed || !active) && state.polls % 2 === 0
          || !active) {
        await loadArtifacts();
      }
      return active;
    }

    function startPolling() {
      if (poller && !poller.stopped) return;
      poller = GQ.poll(tick, INTERVAL, (err) => showError(err));
    }

    wireResults();
    const liveRegion = GQ.el("p", { id: "progress-live", class: "sr-only", "aria-live": "polite" });
    root.append(liveRegion);
    pollEvents().then(() => {
      if (kind === "image.train_gan" || kind === "image.generate") return loadArtifacts();
      return null;
    }).catch(showError);
    if (GQ.isActive(state.status)) startPolling();
  });
})();
