/* Jobs list: polls GET /api/v1/jobs (same filters as the page) while any visible job is active. */
(function () {
  "use strict";
  const GQ = window.GQ;
  const INTERVAL = 2000;

  /** The "Compare selected" button: enabled for 2–6 ticked jobs of one kind, with a hint saying why not. */
  function setupCompare(tbody) {
    const button = document.getElementById("compare-button");
    const hint = document.getElementById("compare-hint");
    if (!button) return;
    const initial = hint.textContent;
    function update() {
      const picked = Array.from(tbody.querySelectorAll('input[name="jobs"]:checked'));
      const kinds = new Set(picked.map((box) => box.dataset.kind));
      let why = "";
      if (picked.length < 2) why = picked.length ? "Tick at least one more job." : initial;
      else if (picked.length > 6) why = "At most 6 jobs at a time (" + picked.length + " ticked).";
      else if (kinds.size > 1) why = "Pick jobs of one kind (these are " + Array.from(kinds).map(GQ.kindLabel).join(", ") + ").";
      button.disabled = why !== "";
      hint.textContent = why || "Compare " + picked.length + " × " + GQ.kindLabel(picked[0].dataset.kind) + ".";
    }
    tbody.addEventListener("change", update);
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    const root = document.getElementById("jobs");
    if (!root) return;
    const tbody = document.getElementById("jobs-body");
    const table = document.getElementById("jobs-table");
    const pollState = document.getElementById("poll-state");
    const live = document.getElementById("jobs-live");

    function apiUrl() {
      const page = new URLSearchParams(window.location.search);
      const query = new URLSearchParams();
      for (const key of ["status", "kind", "q", "cursor"]) {
        if (page.get(key)) query.set(key, page.get(key));
      }
      for (const pair of (page.get("meta") || "").split(",")) {  // key=value → metadata.key=value
        const at = pair.indexOf("=");
        if (at > 0 && pair.slice(0, at).trim()) query.set("metadata." + pair.slice(0, at).trim(), pair.slice(at + 1).trim());
      }
      query.set("limit", root.dataset.limit || "25");
      return root.dataset.api + "?" + query.toString();
    }

    function visibleActive() {
      return Array.from(tbody.rows).some((row) => GQ.isActive(row.dataset.status));
    }

    function cell(label, cls, ...children) {
      return GQ.el("td", { "data-label": label, class: cls }, ...children);
    }

    function buildRow(job) {
      const link = GQ.el("a", { class: "mono", href: "/jobs/" + encodeURIComponent(job.id), title: job.id,
        "aria-label": "Job " + job.id }, GQ.shortId(job.id));
      const model = GQ.modelLabel(job);
      const pick = GQ.el("input", { type: "checkbox", form: "compare-form", name: "jobs", value: job.id,
        dataset: { kind: job.kind }, "aria-label": "Select job " + job.id + " to compare" });
      return GQ.el("tr", { dataset: { jobId: job.id, status: job.status } },
        cell("Compare", "cell-select", pick),
        cell("Job", "cell-id", link),
        cell("Kind", "cell-kind", GQ.kindLabel(job.kind)),
        cell("Status", "cell-status", GQ.statusBadge(job.status)),
        cell("Progress", "cell-progress", GQ.progressBar(job, false)),
        cell("Model", "cell-model", GQ.el("span", { class: "truncate", title: model }, model)),
        cell("Created", "cell-created", GQ.timeTag(job.created_at)),
        cell("Duration", "cell-duration", GQ.duration(job)));
    }

    function updateRow(row, job) {
      if (row.dataset.status !== job.status) {
        row.dataset.status = job.status;
        row.querySelector(".cell-status").replaceChildren(GQ.statusBadge(job.status));
      }
      const progressCell = row.querySelector(".cell-progress");
      const text = progressCell.querySelector(".progress-text");
      if (!text || text.textContent !== GQ.progressText(job, false) || !GQ.isActive(job.status)) {
        progressCell.replaceChildren(GQ.progressBar(job, false));
      }
      row.querySelector(".cell-duration").textContent = GQ.duration(job);
    }

    function render(items) {
      const existing = new Map(Array.from(tbody.rows).map((row) => [row.dataset.jobId, row]));
      const changed = [];
      items.forEach((job, i) => {
        let row = existing.get(job.id);
        if (row) {
          if (row.dataset.status !== job.status) changed.push(job);
          updateRow(row, job);
          existing.delete(job.id);
        } else {
          row = buildRow(job);
        }
        if (tbody.rows[i] !== row) tbody.insertBefore(row, tbody.rows[i] || null);
      });
      for (const row of existing.values()) row.remove();
      table.classList.toggle("hidden", items.length === 0);
      if (changed.length) {
        live.textContent = changed.map((j) => "Job " + GQ.shortId(j.id) + " " + j.status).join(". ");
      }
    }

    function setPolling(on) {
      pollState.textContent = on ? "● Live: updating every " + INTERVAL / 1000 + " s" : "";
      root.dataset.polling = on ? "1" : "0";
    }

    setupCompare(tbody);
    if (!visibleActive()) { setPolling(false); return; }
    setPolling(true);
    GQ.poll(async function () {
      const data = await GQ.api(apiUrl());
      render(data.items);
      const more = data.items.some((job) => GQ.isActive(job.status));
      setPolling(more);
      return more;
    }, INTERVAL, function () { pollState.textContent = "Connection problem: retrying…"; });
  });
})();
