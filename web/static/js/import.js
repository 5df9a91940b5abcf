// The import job page: polls the job's progress and moves the bar; once the job has
// finished, reloads so the server renders the summary and the per-row error report.
"use strict";

(() => {
  const POLL_MS = 1000;

  function show(card, progress) {
    const bar = card.querySelector("#import-progress");
    const text = card.querySelector("#progress-text");
    bar.value = progress.percent;
    bar.textContent = `${progress.percent}%`;
    if (progress.status === "queued") {
      text.textContent = "Queued: waiting for a worker…";
    } else if (!progress.finished) {
      const done = progress.rows_done.toLocaleString();
      const total = progress.rows_estimated.toLocaleString();
      text.textContent = `${done} of about ${total} rows…`;
    }
  }

  async function poll(card) {
    try {
      const { ok, body } = await window.Nurture.request(card.dataset.progressUrl);
      if (ok && body) {
        show(card, body);
        if (body.finished) {
          window.location.reload();
          return;
        }
      }
    } catch {
      // The server may be restarting; keep trying.
    }
    window.setTimeout(() => poll(card), POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const card = document.getElementById("progress-card");
    if (card && card.dataset.poll === "true") poll(card);
  });
})();
