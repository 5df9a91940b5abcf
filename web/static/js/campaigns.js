// Campaign pages. The form: the live audience count (POST /api/v1/campaigns/audience as
// the boxes change), spare variant slots shown on demand, the A/B and schedule fields
// that apply. The campaign page: progress polled while it runs (the send never blocks a
// request) and the result charts drawn with Chart.js from the JSON the page embeds.
"use strict";

(() => {
  function audienceCount(form) {
    const out = document.getElementById("audience-count");
    const note = document.getElementById("audience-note");
    const ids = (name) =>
      [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((box) => Number(box.value));
    let latest = 0;
    async function update() {
      const include = ids("include_segment_ids");
      if (include.length === 0) {
        out.textContent = "0";
        note.textContent = "choose at least one segment or list";
        return;
      }
      const mine = ++latest;
      note.textContent = "counting…";
      const res = await window.Nurture.request("/api/v1/campaigns/audience", {
        method: "POST",
        json: { include_segment_ids: include, exclude_segment_ids: ids("exclude_segment_ids") },
      });
      if (mine !== latest) return; // a newer count is on its way
      if (res.ok) {
        out.textContent = res.body.count.toLocaleString("en-US");
        note.textContent = "contacts, each once";
      } else {
        out.textContent = "—";
        note.textContent = res.body?.error?.message || "could not count";
      }
    }
    form.addEventListener("change", (event) => {
      if (event.target.matches("[data-audience]")) update();
    });
    update();
  }

  function variantSlots(form) {
    const button = document.getElementById("add-variant");
    const abTest = document.getElementById("ab-test");
    const used = () =>
      [...form.querySelectorAll("select[name$='.template_version_id']")].filter((s) => s.value)
        .length;
    const refresh = () => {
      abTest.hidden = used() < 2;
      button.hidden = !form.querySelector("[data-spare][hidden]");
    };
    form.querySelectorAll("[data-spare]").forEach((slot) => {
      slot.hidden = true;
    });
    button.addEventListener("click", () => {
      const next = form.querySelector("[data-spare][hidden]");
      if (next) {
        next.hidden = false;
        next.querySelector("select")?.focus();
      }
      refresh();
    });
    form.addEventListener("change", refresh);
    refresh();
  }

  function scheduleFields(form) {
    const mode = form.querySelector("[name='mode']");
    const show = { at: ["send_at"], local: ["local_date", "local_time"] };
    const refresh = () => {
      for (const name of ["send_at", "local_date", "local_time"]) {
        const field = form.querySelector(`[name='${name}']`).closest(".field");
        field.hidden = !(show[mode.value] || []).includes(name);
      }
    };
    mode.addEventListener("change", refresh);
    refresh();
  }

  function pollProgress(card) {
    if (card.dataset.running !== "true") return;
    const set = (id, text) => {
      const el = document.getElementById(id);
      if (el) el.textContent = text;
    };
    const timer = setInterval(async () => {
      const res = await window.Nurture.request(card.dataset.url);
      if (!res.ok) return;
      const p = res.body;
      document.getElementById("progress-bar").value = p.percent;
      set("progress-status", p.status);
      set("progress-done", p.done.toLocaleString("en-US"));
      set("progress-audience", p.audience.toLocaleString("en-US"));
      card.querySelectorAll("[data-count]").forEach((el) => {
        el.textContent = p.counts[el.dataset.count];
      });
      if (!p.running) {
        clearInterval(timer);
        window.location.reload(); // the results are final: show them
      }
    }, 2000);
  }

  function charts() {
    const source = document.getElementById("chart-data");
    if (!source || !window.Chart) return;
    const data = JSON.parse(source.textContent);
    const options = {
      maintainAspectRatio: false,
      animation: false,
      plugins: { legend: { position: "bottom" } },
    };
    const variants = document.getElementById("variant-chart");
    if (variants) {
      const series = [
        ["open_rate", "Open rate", "#15803d"],
        ["click_rate", "Click rate", "#175cd3"],
        ["click_to_open", "Click-to-open", "#b54708"],
      ];
      variants.chart = new window.Chart(variants, {
        type: "bar",
        data: {
          labels: data.variants.map((v) => v.name),
          datasets: series.map(([key, label, colour]) => ({
            label,
            data: data.variants.map((v) => Math.round(v[key] * 1000) / 10),
            backgroundColor: colour,
          })),
        },
        options: { ...options, scales: { y: { beginAtZero: true, title: { display: true, text: "%" } } } },
      });
      variants.dataset.drawn = "true";
    }
    const time = document.getElementById("time-chart");
    if (time) {
      const hour = (iso) =>
        new Date(iso).toLocaleString(undefined, {
          month: "short",
          day: "numeric",
          hour: "2-digit",
          timeZone: data.time_zone || "UTC", // the account time zone, as the page
        });
      time.chart = new window.Chart(time, {
        type: "line",
        data: {
          labels: data.over_time.map((p) => hour(p.hour)),
          datasets: [
            { label: "Human opens", data: data.over_time.map((p) => p.human_opens), borderColor: "#15803d" },
            { label: "Human clicks", data: data.over_time.map((p) => p.human_clicks), borderColor: "#175cd3" },
          ],
        },
        options: { ...options, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
      });
      time.dataset.drawn = "true";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("campaign-form");
    if (form) {
      audienceCount(form);
      variantSlots(form);
      scheduleFields(form);
    }
    const card = document.getElementById("progress");
    if (card) pollProgress(card);
    charts();
  });
})();
