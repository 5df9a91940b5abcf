// Draws the dashboard's charts from the JSON the page embeds (#chart-data) with Chart.js.
// Without Chart.js the page still shows the totals and the data tables.
"use strict";

(() => {
  const COLOURS = {
    "email.sent": "#667085",
    "email.opened": "#15803d",
    "email.clicked": "#175cd3",
    "email.unsubscribed": "#b42318",
    "contacts.created": "#15803d",
  };

  // "2026-03-07" → "Mar 7", read as a UTC day so the label never shifts a day.
  const dayLabel = (iso) =>
    new Date(`${iso}T00:00:00Z`).toLocaleDateString(undefined, {
      month: "short",
      day: "numeric",
      timeZone: "UTC",
    });

  function datasets(data, labels, type) {
    return data.series.map(({ name, values }) => ({
      label: labels[name] || name,
      data: values,
      borderColor: COLOURS[name],
      backgroundColor: type === "bar" ? COLOURS[name] : `${COLOURS[name]}22`,
      tension: 0.25,
      pointRadius: data.days.length > 31 ? 0 : 2,
    }));
  }

  function draw(canvas, data, labels, type) {
    if (!canvas) return;
    canvas.chart = new window.Chart(canvas, {
      type,
      data: { labels: data.days.map(dayLabel), datasets: datasets(data, labels, type) },
      options: {
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { legend: { display: type !== "bar", position: "bottom" } },
      },
    });
    canvas.dataset.drawn = "true";
  }

  document.addEventListener("DOMContentLoaded", () => {
    const source = document.getElementById("chart-data");
    if (!source || !window.Chart) return;
    const data = JSON.parse(source.textContent);
    draw(document.getElementById("engagement-chart"), data.engagement, data.labels, "line");
    draw(document.getElementById("growth-chart"), data.growth, data.labels, "bar");
  });
})();
