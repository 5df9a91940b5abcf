// The workflow list: its enrolment counts follow the engine (polled while the tab is shown).
"use strict";

(() => {
  const table = document.getElementById("workflows");
  if (!table) return;
  const url = table.dataset.counts;

  async function refresh() {
    if (document.hidden) return;
    const answer = await Nurture.request(url);
    if (!answer.ok) return;
    for (const row of table.querySelectorAll("tr[data-workflow]")) {
      const t = answer.body[row.dataset.workflow] || {};
      const figures = {
        enrolled: t.enrolled || 0,
        open: (t.active || 0) + (t.paused || 0),
        converted: t.converted || 0,
        completed: t.completed || 0,
      };
      for (const [key, value] of Object.entries(figures)) {
        const cell = row.querySelector(`[data-count="${key}"]`);
        if (cell) cell.textContent = value.toLocaleString("en-US");
      }
    }
  }
  setInterval(refresh, 5000);
})();
