// The segment builder: a form for the whole condition tree (nested all / any / not groups,
// field, tag, event, email and segment conditions), kept in sync with its JSON, with a live
// count and sample (debounced) and errors shown at the condition their path names.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("segment-data").textContent);
  const catalog = data.catalog;
  const root = document.getElementById("builder");
  const readonly = root.dataset.readonly === "true";
  const jsonBox = document.getElementById("tree-json");
  const countEl = document.getElementById("live-count");
  const sampleBody = document.querySelector("#sample tbody");
  const treeError = document.getElementById("tree-error");
  const kindSelect = document.getElementById("seg-kind");
  const fields = Object.fromEntries(catalog.fields.map((f) => [f.name, f]));
  const RELATIVE = ["within_last_days", "more_than_days_ago", "in_next_days"];
  const COUNTED = ["at_least", "at_most", "exactly"];

  let tree = Array.isArray(data.conditions) && data.conditions.length
    ? data.conditions
    : [{ field: "status", operator: "equals", value: "subscribed" }];
  let errors = {}; // node path → messages

  // --- small DOM helpers ---------------------------------------------------------------
  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child) node.append(child);
    if (readonly && ["INPUT", "SELECT", "BUTTON", "TEXTAREA"].includes(node.tagName)) {
      node.disabled = true;
    }
    return node;
  }
  function select(label, options, value, onchange, key) {
    const s = el("select", { "aria-label": label, "data-key": key, onchange: (e) => onchange(e.target.value) });
    for (const option of options) {
      const [v, text] = Array.isArray(option) ? option : [option, option.replaceAll("_", " ")];
      s.append(el("option", { value: v, text, selected: String(v) === String(value) }));
    }
    return s;
  }
  function input(label, value, oninput, attrs = {}) {
    return el("input", {
      "aria-label": label,
      value: value ?? "",
      oninput: (e) => oninput(e.target.value),
      ...attrs,
    });
  }

  // --- the kinds of node ---------------------------------------------------------------
  const kindOf = (node) =>
    ["all", "any", "not", "field", "tags", "event", "last_performed", "email", "segment"].find(
      (k) => k in node,
    ) || "field";

  const FRESH = {
    field: () => ({ field: "email", operator: "contains", value: "" }),
    tags: () => ({ tags: [""], operator: "has_any" }),
    event: () => ({ event: "", operator: "performed", within_days: 30 }),
    email: () => ({ email: "opened", operator: "performed", within_days: 30 }),
    last_performed: () => ({ last_performed: "", operator: "more_than_days_ago", value: 30 }),
    segment: () => ({ segment: catalog.segments[0]?.id ?? 1 }),
    any: () => ({ any: [FRESH.field()] }),
    all: () => ({ all: [FRESH.field()] }),
    not: () => ({ not: FRESH.field() }),
  };
  const KIND_LABELS = [
    ["field", "Contact field"],
    ["tags", "Tags"],
    ["event", "Behaviour (event)"],
    ["last_performed", "Last time an event happened"],
    ["email", "Email engagement"],
    ["segment", "In segment / list"],
    ["any", "Any of (group)"],
    ["all", "All of (group)"],
    ["not", "Not (group)"],
  ];

  function parseScalar(type, text) {
    if (type === "number") return text === "" || isNaN(Number(text)) ? text : Number(text);
    if (type === "boolean") return text === "true";
    return text;
  }
  function listOf(type, text) {
    return text.split(",").map((t) => t.trim()).filter((t) => t !== "").map((t) => parseScalar(type, t));
  }
  function inputType(type) {
    return { number: "number", date: "date", datetime: "datetime-local" }[type] || "text";
  }

  // The value editor for a field condition, by the field's type and the operator.
  function valueEditor(node, path, changed, type, options) {
    const op = node.operator;
    if (catalog.no_value.includes(op)) {
      delete node.value;
      return null;
    }
    if (RELATIVE.includes(op)) {
      return el("span", { class: "inline" }, [
        input("Days", node.value, (v) => { node.value = v === "" ? v : Number(v); changed(false); },
          { type: "number", min: 0, "data-key": path + ".value" }),
        el("span", { class: "help", text: " days" }),
      ]);
    }
    if (op === "in" || op === "not_in") {
      const text = Array.isArray(node.value) ? node.value.join(", ") : "";
      return input("Values, comma separated", text, (v) => { node.value = listOf(type, v); changed(false); },
        { "data-key": path + ".value", placeholder: options.length ? options.join(", ") : "a, b, c" });
    }
    if (op === "between") {
      const pair = Array.isArray(node.value) ? node.value : ["", ""];
      const set = (i) => (v) => { pair[i] = parseScalar(type, v); node.value = pair; changed(false); };
      return el("span", { class: "inline" }, [
        input("From", pair[0], set(0), { type: inputType(type), "data-key": path + ".value0" }),
        el("span", { text: " and " }),
        input("To", pair[1], set(1), { type: inputType(type), "data-key": path + ".value1" }),
      ]);
    }
    if (type === "boolean") {
      if (typeof node.value !== "boolean") node.value = true;
      return select("Value", [["true", "yes"], ["false", "no"]], String(node.value),
        (v) => { node.value = v === "true"; changed(false); }, path + ".value");
    }
    if (type === "choice" && options.length) {
      if (!options.includes(node.value)) node.value = options[0];
      return select("Value", options, node.value, (v) => { node.value = v; changed(false); }, path + ".value");
    }
    return input("Value", node.value, (v) => { node.value = parseScalar(type, v); changed(false); },
      { type: inputType(type), "data-key": path + ".value" });
  }

  function fieldRow(node, path, changed) {
    const spec = fields[node.field] || { type: "text", options: [] };
    const ops = catalog.operators[spec.type] || [];
    if (!ops.includes(node.operator)) node.operator = ops[0];
    const names = catalog.fields.map((f) => [f.name, f.name.replace("attributes.", "★ ").replaceAll("_", " ")]);
    if (!fields[node.field]) names.unshift([node.field, node.field + " (unknown)"]);
    return [
      select("Field", names, node.field, (v) => { node.field = v; delete node.value; changed(true); }, path + ".field"),
      select("Operator", ops, node.operator, (v) => { node.operator = v; if (!["in", "not_in", "between"].includes(v) && Array.isArray(node.value)) delete node.value; changed(true); }, path + ".operator"),
      valueEditor(node, path, changed, spec.type, spec.options),
    ];
  }

  function countRow(node, path, changed) {
    const parts = [
      select("How often", catalog.count_operators, node.operator || "performed",
        (v) => { node.operator = v; if (COUNTED.includes(v)) node.times = node.times ?? 1; else delete node.times; changed(true); },
        path + ".operator"),
    ];
    if (COUNTED.includes(node.operator)) {
      parts.push(input("Times", node.times, (v) => { node.times = v === "" ? v : Number(v); changed(false); },
        { type: "number", min: 0, "data-key": path + ".times" }));
      parts.push(el("span", { class: "help", text: " times" }));
    }
    parts.push(el("span", { class: "help", text: " in the last " }));
    parts.push(input("Within days (empty: ever)", node.within_days, (v) => {
      if (v === "") delete node.within_days; else node.within_days = Number(v);
      changed(false);
    }, { type: "number", min: 0, "data-key": path + ".within_days", placeholder: "any" }));
    parts.push(el("span", { class: "help", text: " days" }));
    return parts;
  }

  // Property filters of an event condition: property, operator, value and the value's type
  // (the value decides how the property compares: "30" is text, 30 a number).
  function typeOfValue(value) {
    const sample = Array.isArray(value) ? value[0] : value;
    if (typeof sample === "number") return "number";
    if (typeof sample === "boolean") return "boolean";
    return "text";
  }
  function propertyFilters(node, path, changed) {
    const where = node.where || [];
    const rows = where.map((cond, i) => {
      const at = `${path}.where[${i}]`;
      const type = typeOfValue(cond.value);
      const retype = (t) => {
        if (Array.isArray(cond.value)) cond.value = cond.value.map((v) => parseScalar(t, String(v)));
        else if (cond.value !== undefined) cond.value = t === "boolean" ? true : parseScalar(t, String(cond.value));
        changed(true);
      };
      const editor = catalog.no_value.includes(cond.operator)
        ? null
        : valueEditor(cond, at, changed, type, []);
      const box = el("div", { class: "cond-row property-filter", "data-path": at }, [
        el("span", { class: "help", text: "where " }),
        input("Property", cond.property, (v) => { cond.property = v.trim(); changed(false); },
          { "data-key": at + ".property", placeholder: "property, e.g. total or items.sku" }),
        select("Property operator", catalog.property_operators, cond.operator,
          (v) => {
            cond.operator = v;
            if (!["in", "not_in", "between"].includes(v) && Array.isArray(cond.value)) delete cond.value;
            changed(true);
          }, at + ".operator"),
        editor,
        editor && select("Value type", [["text", "text"], ["number", "number"], ["boolean", "yes / no"]],
          type, retype, at + ".type"),
        el("button", {
          type: "button", class: "small link", "aria-label": "Remove property filter", text: "✕",
          "data-key": at + ".remove",
          onclick: () => { where.splice(i, 1); if (!where.length) delete node.where; changed(true); },
        }),
      ].filter(Boolean));
      const messages = errors[at];
      if (messages) {
        box.classList.add("invalid");
        box.append(el("p", { class: "field-error", role: "alert", text: messages.join("; ") }));
      }
      return box;
    });
    const add = readonly ? null : el("button", {
      type: "button", class: "small", text: "+ Property filter", "data-key": path + ".add-property",
      onclick: () => {
        node.where = where;
        where.push({ property: "", operator: "equals", value: "" });
        changed(true);
      },
    });
    return el("div", { class: "property-filters" }, [...rows, add].filter(Boolean));
  }

  function leafRow(node, path, changed) {
    switch (kindOf(node)) {
      case "field":
        return fieldRow(node, path, changed);
      case "tags":
        return [
          select("Tag operator", catalog.tag_operators, node.operator || "has_any",
            (v) => { node.operator = v; changed(true); }, path + ".operator"),
          input("Tags, comma separated", (node.tags || []).join(", "),
            (v) => { node.tags = listOf("text", v); changed(false); }, { "data-key": path + ".tags", placeholder: "vip, trial" }),
        ];
      case "event":
        return [
          input("Event name", node.event, (v) => { node.event = v.trim(); changed(false); },
            { "data-key": path + ".event", placeholder: "event name, e.g. purchase" }),
          ...countRow(node, path, changed),
          propertyFilters(node, path, changed),
        ];
      case "last_performed": {
        const ops = catalog.operators.datetime || [];
        if (!ops.includes(node.operator)) node.operator = ops[0];
        return [
          input("Event name", node.last_performed, (v) => { node.last_performed = v.trim(); changed(false); },
            { "data-key": path + ".last_performed", placeholder: "event name, e.g. purchase" }),
          el("span", { class: "help", text: " last happened " }),
          select("Operator", ops, node.operator, (v) => { node.operator = v; delete node.value; changed(true); },
            path + ".operator"),
          valueEditor(node, path, changed, "datetime", []),
          propertyFilters(node, path, changed),
        ];
      }
      case "email":
        return [
          select("Email activity", catalog.email_activities, node.email,
            (v) => { node.email = v; changed(true); }, path + ".email"),
          ...countRow(node, path, changed),
        ];
      case "segment":
        return [
          select("Segment", catalog.segments.map((s) => [s.id, s.name]), node.segment,
            (v) => { node.segment = Number(v); changed(false); }, path + ".segment"),
        ];
      default:
        return [el("code", { text: JSON.stringify(node) }), el("span", { class: "help", text: " (edit in JSON)" })];
    }
  }

  // One node: a group (its children, an add control) or a leaf row; with a remove button.
  function renderNode(node, path, list, index, changed) {
    const kind = kindOf(node);
    const box = el("div", { class: `cond cond-${kind}`, "data-path": path, role: "group", "aria-label": kind });
    const head = el("div", { class: "cond-row" });
    const remove = list
      ? el("button", {
          type: "button", class: "small link", "aria-label": "Remove condition", text: "✕",
          "data-key": path + ".remove",
          onclick: () => { list.splice(index, 1); changed(true); },
        })
      : null;
    if (kind === "all" || kind === "any") {
      head.append(select("Group type", [["all", "All of"], ["any", "Any of"]], kind, (v) => {
        const children = node[kind];
        delete node[kind];
        node[v] = children;
        changed(true);
      }, path + ".group"));
      if (remove) head.append(remove);
      box.append(head);
      const children = el("div", { class: "cond-children" });
      node[kind].forEach((child, i) => children.append(renderNode(child, `${path}.${kind}[${i}]`, node[kind], i, changed)));
      box.append(children, addControl(node[kind], `${path}.${kind}`, changed));
    } else if (kind === "not") {
      head.append(el("strong", { text: "Not:" }));
      if (remove) head.append(remove);
      box.append(head, el("div", { class: "cond-children" }, [renderNode(node.not, `${path}.not`, null, 0, changed)]));
    } else {
      head.append(...leafRow(node, path, changed).filter(Boolean));
      if (remove) head.append(remove);
      box.append(head);
    }
    const messages = errors[path];
    if (messages) {
      box.classList.add("invalid");
      box.append(el("p", { class: "field-error", role: "alert", text: messages.join("; ") }));
    }
    return box;
  }

  function addControl(list, path, changed) {
    if (readonly) return null;
    const picker = select("Kind of condition to add", KIND_LABELS, "field", () => {}, path + ".add-kind");
    picker.disabled = false;
    return el("div", { class: "cond-add" }, [
      picker,
      el("button", {
        type: "button", class: "small", text: "+ Add condition", "data-key": path + ".add",
        onclick: () => { list.push(FRESH[picker.value]()); changed(true); },
      }),
    ]);
  }

  // --- rendering, sync and live preview ----------------------------------------------------
  function render() {
    const active = document.activeElement?.dataset?.key;
    root.replaceChildren();
    if (kindSelect?.value === "static") {
      root.append(el("p", { class: "note", text: "A static list has no conditions: add members by CSV after creating it." }));
      document.getElementById("live-count").textContent = "—";
      return;
    }
    tree.forEach((node, i) => root.append(renderNode(node, `conditions[${i}]`, tree, i, changed)));
    root.append(addControl(tree, "conditions", changed) || "");
    if (active) root.querySelector(`[data-key="${CSS.escape(active)}"]`)?.focus();
  }

  function changed(structural) {
    if (structural) render();
    if (document.activeElement !== jsonBox) jsonBox.value = JSON.stringify({ conditions: tree }, null, 2);
    schedule();
  }

  jsonBox?.addEventListener("input", () => {
    try {
      const parsed = JSON.parse(jsonBox.value);
      if (!Array.isArray(parsed.conditions)) throw new Error('expected {"conditions": [...]}');
      tree = parsed.conditions;
      treeError.textContent = "";
      render();
      schedule();
    } catch (exc) {
      treeError.textContent = "JSON: " + exc.message;
    }
  });
  kindSelect?.addEventListener("change", () => changed(true));

  // Error paths such as "conditions[2].any[0].value[1]" land on the deepest node they name.
  function errorsByNode(details) {
    const found = {};
    const known = new Set([...root.querySelectorAll("[data-path]")].map((n) => n.dataset.path));
    for (const detail of details || []) {
      let path = detail.path || "";
      while (path && !known.has(path)) path = path.replace(/(\.[^.[\]]+|\[\d+\])$/, "");
      const key = path || "";
      (found[key] ||= []).push(detail.message);
    }
    return found;
  }

  function showErrors(body) {
    const details = body?.error?.details || [];
    errors = errorsByNode(details);
    treeError.textContent = errors[""] ? errors[""].join("; ") : "";
    render();
    if (!details.length && body?.error) treeError.textContent = body.error.message;
  }

  let timer = null;
  let generation = 0;
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  }

  async function refresh() {
    if (kindSelect?.value === "static") return;
    const mine = ++generation;
    const json = { conditions: tree };
    countEl.textContent = "…";
    const [count, sample] = await Promise.all([
      Nurture.request(data.api + "/count", { method: "POST", json }),
      Nurture.request(data.api + "/sample", { method: "POST", json: { ...json, size: 10 } }),
    ]);
    if (mine !== generation) return; // a newer edit answered first
    const hadErrors = Object.keys(errors).length > 0;
    if (!count.ok) {
      countEl.textContent = "—";
      sampleBody.replaceChildren();
      showErrors(count.body);
      return;
    }
    if (hadErrors) { errors = {}; treeError.textContent = ""; render(); }
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
      method: "POST", json: { conditions: tree, contact_id: id },
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
    if (kind === "dynamic") json.conditions = tree;
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
