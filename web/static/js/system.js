/* System page: refreshes health, queue depths and workers from GET /api/v1/system every few seconds. */
(function () {
  "use strict";
  const GQ = window.GQ;
  const INTERVAL = 5000;

  function healthBadge(state) {
    const ok = state === "ok";
    return GQ.el("span", { class: "badge badge-" + (ok ? "succeeded" : "failed"), dataset: { role: "health" } },
      GQ.el("span", { class: "badge-icon", "aria-hidden": "true", text: ok ? "✓" : "✕" }),
      GQ.el("span", { class: "badge-text", text: state }));
  }

  function aliveBadge(alive) {
    return GQ.el("span", { class: "badge badge-" + (alive ? "succeeded" : "cancelled") },
      GQ.el("span", { class: "badge-icon", "aria-hidden": "true", text: alive ? "●" : "○" }),
      GQ.el("span", { class: "badge-text", text: alive ? "alive" : "not seen" }));
  }

  document.addEventListener("DOMContentLoaded", function () {
    const root = document.getElementById("system");
    if (!root) return;
    const jobPage = root.dataset.jobPage;

    function render(data) {
      document.getElementById("h-db").replaceChildren(healthBadge(data.db));
      document.getElementById("h-broker").replaceChildren(healthBadge(data.broker));
      document.getElementById("h-workers").textContent = String(data.workers_alive);
      document.getElementById("checked-at").replaceChildren(GQ.timeTag(data.checked_at));
      for (const q of data.queues) {
        const node = root.querySelector('[data-queue="' + CSS.escape(q.name) + '"]');
        if (node) node.textContent = q.depth === null ? "?" : String(q.depth);
      }
      const rows = data.workers.map((w) => {
        let current = w.busy ? "busy" : "idle";
        if (w.current_job_id) {
          current = GQ.el("a", { class: "mono", href: jobPage.replace("JOB", encodeURIComponent(w.current_job_id)) },
            GQ.shortId(w.current_job_id));
        }
        return GQ.el("tr", {},
          GQ.el("td", { "data-label": "Worker", class: "mono" }, w.id),
          GQ.el("td", { "data-label": "State" }, aliveBadge(w.alive)),
          GQ.el("td", { "data-label": "Queues" }, w.queues.join(", ")),
          GQ.el("td", { "data-label": "Device" }, w.device),
          GQ.el("td", { "data-label": "Current job" }, current),
          GQ.el("td", { "data-label": "Last seen" }, GQ.timeTag(w.last_seen)),
          GQ.el("td", { "data-label": "Started" }, GQ.timeTag(w.started_at)));
      });
      document.getElementById("workers-body").replaceChildren(...rows);
      document.getElementById("workers-table").classList.toggle("hidden", rows.length === 0);
      document.getElementById("workers-empty").hidden = rows.length > 0;
    }

    GQ.poll(async function () {
      render(await GQ.api(root.dataset.api));
      return true;
    }, INTERVAL);
  });
})();
