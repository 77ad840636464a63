/* Demo page: polls the demo's jobs through the JSON API; when a training job succeeds, asks for its follow-up
   generation job (POST /api/v1/demo/followup, idempotent: a reload gets the same job back). */
(function () {
  "use strict";
  const GQ = window.GQ;
  const INTERVAL = 1500;

  document.addEventListener("DOMContentLoaded", function () {
    const root = document.getElementById("demo");
    if (!root) return;
    const body = document.getElementById("demo-jobs");
    const message = document.getElementById("demo-message");
    const jobUrl = (id) => root.dataset.apiJob.replace("JOB", encodeURIComponent(id));
    const pageUrl = (id) => root.dataset.jobPage.replace("JOB", encodeURIComponent(id));
    const followedUp = new Set();

    function row(id) { return body.querySelector('tr[data-job-id="' + CSS.escape(id) + '"]'); }

    function addRow(job) {
      if (row(job.id)) return;
      body.append(GQ.el("tr", { dataset: { jobId: job.id, kind: job.kind } },
        GQ.el("td", {}, GQ.el("a", { href: pageUrl(job.id), text: GQ.kindLabel(job.kind) }), " ",
          GQ.el("span", { class: "muted mono", text: GQ.shortId(job.id) })),
        GQ.el("td", { dataset: { role: "status" } }, GQ.statusBadge(job.status)),
        GQ.el("td", { dataset: { role: "progress-cell" } }, GQ.progressBar(job, false))));
    }

    function update(job) {
      const tr = row(job.id);
      if (!tr) return;
      tr.querySelector('[data-role="status"]').replaceChildren(GQ.statusBadge(job.status));
      tr.querySelector('[data-role="progress-cell"]').replaceChildren(GQ.progressBar(job, false));
    }

    async function followup(job) {
      if (followedUp.has(job.id)) return;
      const next = await GQ.api(root.dataset.apiFollowup, { method: "POST", json: { after: job.id } });
      followedUp.add(job.id);
      addRow(next);
    }

    async function tick() {
      const ids = Array.from(body.querySelectorAll("tr[data-job-id]"), (tr) => tr.dataset.jobId);
      let active = false;
      for (const id of ids) {
        const job = await GQ.api(jobUrl(id));
        update(job);
        const training = (GQ.KINDS[job.kind] || {}).trains_model === true;
        if (training && job.status === "succeeded") await followup(job);
        if (training && !followedUp.has(job.id) && GQ.TERMINAL.includes(job.status) && job.status !== "succeeded") {
          message.textContent = GQ.kindLabel(job.kind) + " ended " + job.status + ": see its page for why.";
          followedUp.add(job.id);
        }
        if (GQ.isActive(job.status)) active = true;
      }
      const pending = ids.filter((id) => {
        const tr = row(id);
        return (GQ.KINDS[tr.dataset.kind] || {}).trains_model === true && !followedUp.has(id);
      });
      if (!active && pending.length === 0) {
        message.textContent = message.textContent || "The demo finished: open each job for its curves, samples, texts and images.";
        return false;
      }
      return true;
    }

    if (body.querySelector("tr[data-job-id]")) {
      tick().catch(() => null);
      GQ.poll(tick, INTERVAL, (err) => { message.textContent = "Could not refresh: " + err.message; });
    }
  });
})();
