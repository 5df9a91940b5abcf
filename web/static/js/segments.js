// The segment builder page: the condition-tree editor (conditions.js) kept in sync with its
// JSON, with a live count and sample (debounced), errors shown at the condition their path
// names, "why is this contact in or out", and saving.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("segment-data").textContent);
  const root = document.getElementById("builder");
  const readonly = root.dataset.readonly === "true";
  const jsonBox = document.getElementById("tree-json");
  const countEl = document.getElementById("live-count");
  const sampleBody = document.querySelector("#sample tbody");
  const treeError = document.getElementById("tree-error");
  const kindSelect = document.getElementById("seg-kind");

  const editor = NurtureConditions.mount(root, {
    catalog: data.catalog,
    readonly,
    conditions: Array.isArray(data.conditions) && data.conditions.length
      ? data.conditions
      : [{ field: "status", operator: "equals", value: "subscribed" }],
    onChange: () => changed(false),
  });

  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  const isStatic = () => kindSelect?.value === "static";

  function render() {
    if (isStatic()) {
      root.replaceChildren(el("p", { class: "note", text: "A static list has no conditions: add members by CSV after creating it." }));
      countEl.textContent = "—";
      return;
    }
    editor.render();
  }

  function changed(structural) {
    if (structural) render();
    if (document.activeElement !== jsonBox) {
      jsonBox.value = JSON.stringify({ conditions: editor.getTree() }, null, 2);
    }
    schedule();
  }

  jsonBox?.addEventListener("input", () => {
    try {
      const parsed = JSON.parse(jsonBox.value);
      if (!Array.isArray(parsed.conditions)) throw new Error('expected {"conditions": [...]}');
      treeError.textContent = "";
      editor.setTree(parsed.conditions);
      schedule();
    } catch (exc) {
      treeError.textContent = "JSON: " + exc.message;
    }
  });
  kindSelect?.addEventListener("change", () => changed(true));

  function showErrors(body) {
    const details = body?.error?.details || [];
    const found = editor.locate(details);
    editor.setErrors(found);
    treeError.textContent = found[""] ? found[""].join("; ") : "";
    if (!details.length && body?.error) treeError.textContent = body.error.message;
  }

  let timer = null;
  let generation = 0;
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  }

  async function refresh() {
    if (isStatic()) return;
    const mine = ++generation;
    const json = { conditions: editor.getTree() };
    countEl.textContent = "…";
    const [count, sample] = await Promise.all([
      Nurture.request(data.api + "/count", { method: "POST", json }),
      Nurture.request(data.api + "/sample", { method: "POST", json: { ...json, size: 10 } }),
    ]);
    if (mine !== generation) return; // a newer edit answered first
    if (!count.ok) {
      countEl.textContent = "—";
      sampleBody.replaceChildren();
      showErrors(count.body);
      return;
    }
    if (editor.hasErrors()) { treeError.textContent = ""; editor.setErrors({}); }
    countEl.textContent = count.body.count.toLocaleString();
    sampleBody.replaceChildren(...(sample.ok ? sample.body : []).map((c) => el("tr", {}, [
      el("td", {}, [el("a", { href: `/contacts/${c.id}`, text: c.email })]),
      el("td", { text: [c.first_name, c.last_name].filter(Boolean).join(" ") }),
      el("td", {}, [el("span", { class: `status ${c.status}`, text: c.status })]),
    ])));
    if (sample.ok && !sample.body.length) {
      sampleBody.append(el("tr", {}, [el("td", { colspan: 3, class: "muted", text: "No contact matches." })]));
    }
  }

  // --- why in / out ------------------------------------------------------------------------
  function explainList(nodes) {
    return el("ul", { class: "explain" }, nodes.map((n) => el("li", { class: n.result ? "yes" : "no" }, [
      el("strong", { text: n.result ? "✓ " : "✗ " }),
      el("code", { text: n.kind }),
      el("span", { class: "help", text: " " + n.path + (Object.keys(n.observed || {}).length ? " — saw " + JSON.stringify(n.observed) : "") }),
      n.children?.length ? explainList(n.children) : null,
    ])));
  }
  document.getElementById("explain-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("explain-result");
    const id = Number(document.getElementById("explain-contact").value);
    const answer = await Nurture.request(data.api + "/explain", {
      method: "POST", json: { conditions: editor.getTree(), contact_id: id },
    });
    if (!answer.ok) {
      out.replaceChildren(el("p", { class: "field-error", text: answer.body?.error?.message || "failed" }));
      return;
    }
    out.replaceChildren(
      el("p", {}, [el("strong", { text: `Contact ${id} is ${answer.body.matches ? "IN" : "OUT"}.` })]),
      explainList(answer.body.conditions),
    );
  });

  // --- save ------------------------------------------------------------------------------
  document.getElementById("save-segment")?.addEventListener("click", async () => {
    const status = document.getElementById("save-status");
    const nameError = document.getElementById("seg-name-error");
    const kind = data.segment?.kind || kindSelect.value;
    const json = {
      name: document.getElementById("seg-name").value.trim(),
      description: document.getElementById("seg-description").value,
    };
    if (kind === "dynamic") json.conditions = editor.getTree();
    if (!data.segment) json.kind = kind;
    status.textContent = "Saving…";
    const answer = data.segment
      ? await Nurture.request(`${data.api}/${data.segment.id}`, { method: "PATCH", json })
      : await Nurture.request(data.api, { method: "POST", json });
    if (!answer.ok) {
      const details = answer.body?.error?.details || [];
      nameError.textContent = details.filter((d) => d.path === "name").map((d) => d.message).join("; ");
      showErrors({ error: { ...answer.body?.error, details: details.filter((d) => d.path !== "name") } });
      status.textContent = answer.body?.error?.message || "Not saved.";
      return;
    }
    nameError.textContent = "";
    status.textContent = "Saved.";
    window.location.assign(`${data.detail}/${answer.body.id}`);
  });

  render();
  changed(false);
})();
