// The condition-tree editor (docs/segments.md): nested all / any / not groups and field,
// tag, event, email and segment conditions, each error shown at the condition its path
// names. The segment builder and the workflow canvas (branches, goals) mount it; a page
// may add kinds of its own (the canvas adds "an email of this workflow").
"use strict";

const NurtureConditions = (() => {
  const RELATIVE = ["within_last_days", "more_than_days_ago", "in_next_days"];
  const COUNTED = ["at_least", "at_most", "exactly"];
  const BASE_KINDS = ["all", "any", "not", "field", "tags", "event", "last_performed", "email", "segment"];

  // mount(root, {catalog, conditions, readonly, onChange, extraKinds})
  //   onChange(structural): after every edit (structural edits re-render first).
  //   extraKinds: {kind: {label, fresh(), row(node, path, changed, ui)}}; a node is of an
  //   extra kind when it has a key of that name.
  function mount(root, options) {
    const catalog = options.catalog;
    const readonly = Boolean(options.readonly);
    const extra = options.extraKinds || {};
    const fields = Object.fromEntries(catalog.fields.map((f) => [f.name, f]));
    let tree = Array.isArray(options.conditions) ? options.conditions : [];
    let errors = {}; // node path → messages

    // --- small DOM helpers -------------------------------------------------------------
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
    function select(label, choices, value, onchange, key) {
      const s = el("select", { "aria-label": label, "data-key": key, onchange: (e) => onchange(e.target.value) });
      for (const option of choices) {
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
    const ui = { el, select, input };

    // --- the kinds of node ---------------------------------------------------------------
    const kindOf = (node) =>
      [...Object.keys(extra), ...BASE_KINDS].find((k) => k in node) || "field";

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
    for (const [kind, spec] of Object.entries(extra)) FRESH[kind] = spec.fresh;
    const KIND_LABELS = [
      ...Object.entries(extra).map(([kind, spec]) => [kind, spec.label]),
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
    function valueEditor(node, path, changed, type, choices) {
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
          { "data-key": path + ".value", placeholder: choices.length ? choices.join(", ") : "a, b, c" });
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
      if (type === "choice" && choices.length) {
        if (!choices.includes(node.value)) node.value = choices[0];
        return select("Value", choices, node.value, (v) => { node.value = v; changed(false); }, path + ".value");
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
      const kind = kindOf(node);
      if (extra[kind]) return extra[kind].row(node, path, changed, ui);
      switch (kind) {
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
      const picker = select("Kind of condition to add", KIND_LABELS, KIND_LABELS[0][0], () => {}, path + ".add-kind");
      picker.disabled = false;
      return el("div", { class: "cond-add" }, [
        picker,
        el("button", {
          type: "button", class: "small", text: "+ Add condition", "data-key": path + ".add",
          onclick: () => { list.push(FRESH[picker.value]()); changed(true); },
        }),
      ]);
    }

    function render() {
      const active = document.activeElement?.dataset?.key;
      root.replaceChildren();
      tree.forEach((node, i) => root.append(renderNode(node, `conditions[${i}]`, tree, i, changed)));
      root.append(addControl(tree, "conditions", changed) || "");
      if (active) root.querySelector(`[data-key="${CSS.escape(active)}"]`)?.focus();
    }

    function changed(structural) {
      if (structural) render();
      options.onChange?.(structural);
    }

    // Error paths such as "conditions[2].any[0].value[1]" land on the deepest condition they
    // name; what names none lands on "".
    function locate(details) {
      const found = {};
      const known = new Set([...root.querySelectorAll("[data-path]")].map((n) => n.dataset.path));
      for (const detail of details || []) {
        let path = detail.path || "";
        while (path && !known.has(path)) path = path.replace(/(\.[^.[\]]+|\[\d+\])$/, "");
        (found[path || ""] ||= []).push(detail.message);
      }
      return found;
    }

    return {
      render,
      getTree: () => tree,
      setTree(value) { tree = value; render(); },
      // errors: {path: [messages]}, e.g. from locate(); re-renders.
      setErrors(value) { errors = value || {}; render(); },
      hasErrors: () => Object.keys(errors).length > 0,
      locate,
    };
  }

  return { mount };
})();
window.NurtureConditions = NurtureConditions;
