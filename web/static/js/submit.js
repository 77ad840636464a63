/* Submit and upload forms: prompt counter, fields that only apply to new models, no double submits. */
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    const errors = document.getElementById("form-errors");
    if (errors) {
      const firstInvalid = document.querySelector('[aria-invalid="true"]');
      (firstInvalid || errors).focus();
    }

    const prompts = document.getElementById("f-prompts");
    const count = document.getElementById("prompt-count");
    if (prompts && count) {
      const update = function () {
        const n = prompts.value.split("\n").filter((line) => line.trim()).length;
        count.textContent = n ? "· " + n + " prompt" + (n === 1 ? "" : "s") : "";
      };
      prompts.addEventListener("input", update);
      update();
    }

    // Size and shape presets apply to models trained from scratch only.
    const base = document.getElementById("f-base_model");
    if (base) {
      const scratchOnly = ["size", "n_layer", "n_head", "n_embd", "vocab_size"]
        .map((name) => document.getElementById("f-" + name)).filter(Boolean);
      const sync = function () {
        const scratch = base.value === "scratch";
        for (const input of scratchOnly) {
          input.disabled = !scratch;
          input.closest(".field").classList.toggle("is-disabled", !scratch);
        }
      };
      base.addEventListener("change", sync);
      sync();
    }

    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) return;  // back/forward cache: the form may be used again
      for (const form of document.querySelectorAll("form[data-submitting]")) delete form.dataset.submitting;
    });
    for (const form of document.querySelectorAll("form.submit-form, form.upload-form")) {
      form.addEventListener("submit", function (event) {
        if (form.dataset.submitting === "1") { event.preventDefault(); return; }
        form.dataset.submitting = "1";
        const button = form.querySelector('button[type="submit"]');
        if (button) {
          button.setAttribute("aria-disabled", "true");
          button.classList.add("is-busy");
          button.textContent = form.classList.contains("upload-form") ? "Uploading…" : "Submitting…";
        }
      });
    }
  });
})();
