// The workflow canvas: the draft drawn top-down (dagre lays it out; branch and split paths
// side by side), "+" on every edge to add a step there, a side panel to configure the
// selected step, the engine's validation problems on the step they name, save / publish /
// pause / migrate through /api/v1/workflows, a dry run whose path lights up on the canvas,
// and per-step statistics refreshed every few seconds. Everything user-written reaches the
// page through textContent or attribute values, never as HTML.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("workflow-data").textContent);
  const catalog = data.catalog;
  const editable = data.editable;
  const api = `${data.api}/${data.workflow.id}`;
  const $ = (id) => document.getElementById(id);
  const graphEl = $("wf-graph");
  const panelTitle = $("wf-panel-title");
  const panelBody = $("wf-panel-body");
  const TRIGGER = "@trigger";
  const SETTINGS = "@settings";
  const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

  let doc = structuredClone(data.definition);
  let savedJson = JSON.stringify(doc);
  let summary = data.workflow;
  let versions = data.versions;
  let problems = data.problems || [];
  let stats = null;
  let selected = null;
  let pathSteps = null; // dry run: node id → step numbers
  let conditionEditor = null; // the condition editor mounted in the panel, if any

  // --- DOM helpers -------------------------------------------------------------------------
  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children)
      if (child !== null && child !== undefined && child !== false) node.append(child);
    return node;
  }
  function svg(tag, attrs = {}) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    return node;
  }
  const say = (text) => {
    $("wf-message").textContent = text;
  };
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const fmt = (n) => Number(n || 0).toLocaleString("en-US");

  // --- the model ---------------------------------------------------------------------------
  // Node kinds come from the server (automation/workflows/kinds.py): a label, icon and id
  // base per type; per kind (type, or wait:<mode>) its exits, settings and starter.
  const NODE_KINDS = data.node_kinds;
  const KINDS = NODE_KINDS.types;
  const kindOf = (node) => (node.type === "wait" ? `wait:${node.mode}` : node.type);
  // A new node of a kind, as the "+" menu or the wait mode menu starts it.
  function starterOf(tag) {
    const kind = NODE_KINDS.kinds[tag];
    const node = { type: kind.type, ...(kind.mode ? { mode: kind.mode } : {}) };
    return fillFromPage(Object.assign(node, structuredClone(kind.starter)));
  }
  // What only the page knows for a new node: the first template, the first date field, a
  // condition on the email sent upstream (the starters leave those blank).
  function fillFromPage(node) {
    if (node.template_id === null) node.template_id = catalog.templates[0]?.id ?? null;
    if (node.mode === "date_field" && node.field === "")
      node.field = catalog.fields.find((f) => f.type === "date")?.name || "";
    if (node.condition?.conditions?.length === 0) node.condition.conditions.push(freshCondition());
    return node;
  }
  // What the "+" menu offers: [key, label, builder].
  const PALETTE = NODE_KINDS.palette.map(({ key, label, kind }) => [key, label, () => starterOf(kind)]);

  const nodeById = (id) => doc.nodes.find((n) => n.id === id);
  const indexOf = (id) => doc.nodes.findIndex((n) => n.id === id);
  const title = (node) => node.name || KINDS[node.type]?.label || node.type;
  const sendNodes = () => doc.nodes.filter((n) => n.type === "send_email");

  // Exit label → the node it leads to, in the engine's order (schema.py exits()).
  function exitsOf(node) {
    const kind = NODE_KINDS.kinds[kindOf(node)] || { exits: ["next"], exit_items: null };
    const items = kind.exit_items ? (node[kind.exit_items] || []).map((p) => [p.name, p.next ?? null]) : [];
    return [...kind.exits.map((key) => [key, node[key] ?? null]), ...items];
  }
  function setExit(node, label, target) {
    const listed = NODE_KINDS.kinds[kindOf(node)]?.exit_items;
    if (listed) {
      const item = (node[listed] || []).find((p) => p.name === label);
      if (item) {
        if (target) item.next = target;
        else delete item.next;
      }
      return;
    }
    if (target) node[label] = target;
    else delete node[label];
  }
  function successors(id) {
    if (id === TRIGGER) return doc.start ? [doc.start] : [];
    const node = nodeById(id);
    return node
      ? exitsOf(node)
          .map(([, t]) => t)
          .filter(Boolean)
      : [];
  }
  function reachable() {
    const seen = new Set();
    const stack = doc.start ? [doc.start] : [];
    while (stack.length) {
      const id = stack.pop();
      if (seen.has(id) || !nodeById(id)) continue;
      seen.add(id);
      stack.push(...successors(id));
    }
    return seen;
  }
  function newId(type) {
    const base = KINDS[type]?.id_base || type;
    for (let n = 1; ; n++) if (!nodeById(`${base}-${n}`)) return `${base}-${n}`;
  }
  function upstreamSend(id) {
    // ``id`` itself or the nearest send node before it (a branch on "opened" usually means
    // that one).
    if (nodeById(id)?.type === "send_email") return id;
    const parents = new Map();
    for (const node of doc.nodes)
      for (const [, t] of exitsOf(node)) if (t && !parents.has(t)) parents.set(t, node.id);
    let current = parents.get(id);
    const seen = new Set();
    while (current && !seen.has(current)) {
      seen.add(current);
      if (nodeById(current)?.type === "send_email") return current;
      current = parents.get(current);
    }
    return sendNodes()[0]?.id;
  }
  let insertingAfter = null;
  function freshCondition() {
    const send = insertingAfter ? upstreamSend(insertingAfter) : sendNodes()[0]?.id;
    return send
      ? { workflow_email: "opened", node: send }
      : { field: "status", operator: "equals", value: "subscribed" };
  }

  function durationText(d) {
    if (!d) return "?";
    const parts = [
      ["days", "day"],
      ["hours", "hour"],
      ["minutes", "minute"],
    ]
      .filter(([k]) => d[k])
      .map(([k, w]) => plural(d[k], w));
    return parts.join(" ") || "0 minutes";
  }
  function conditionText(tree) {
    const list = tree?.conditions || [];
    if (!list.length) return "every contact";
    const leaf = (c) => {
      if (c.workflow_email) return `${c.workflow_email} '${title(nodeById(c.node) || { name: c.node })}'`;
      if (c.field)
        return `${c.field.replace("attributes.", "")} ${String(c.operator || "").replaceAll("_", " ")} ${c.value ?? ""}`.trim();
      if (c.tags) return `tags ${String(c.operator || "").replaceAll("_", " ")} ${c.tags.join(", ")}`;
      if (c.event) return `did ${c.event}`;
      if (c.email) return `${c.email} an email`;
      if (c.segment)
        return `in segment ${catalog.segments.find((s) => s.id === c.segment)?.name ?? c.segment}`;
      if (c.webhook) return `webhook ${c.webhook} ${c.path || "ok"}`;
      if (c.any) return "any of a group";
      if (c.all) return "all of a group";
      if (c.not) return "not …";
      return "a condition";
    };
    return leaf(list[0]) + (list.length > 1 ? ` + ${list.length - 1} more` : "");
  }
  function detailOf(node) {
    switch (node.type) {
      case "send_email": {
        const t = catalog.templates.find((x) => x.id === node.template_id);
        return t ? `Template: ${t.name}` : "Choose a template";
      }
      case "wait":
        if (node.mode === "duration") return durationText(node.duration);
        if (node.mode === "time_of_day")
          return `Until ${node.time || "?"} on ${(node.weekdays || WEEKDAYS).join(", ")}`;
        if (node.mode === "date_field")
          return `Until ${node.offset_days || 0} d from ${node.field || "?"} at ${node.time || "09:00"}`;
        return `For “${node.event || "?"}”, at most ${durationText(node.timeout)}`;
      case "branch":
        return `If ${conditionText(node.condition)}`;
      case "split":
        return (node.paths || []).map((p) => `${p.name} ${p.weight}`).join(" · ");
      case "update_contact": {
        const parts = [];
        if (node.add_tags?.length) parts.push(`+${node.add_tags.join(", +")}`);
        if (node.remove_tags?.length) parts.push(`−${node.remove_tags.join(", −")}`);
        if (node.score_change) parts.push(`score ${node.score_change > 0 ? "+" : ""}${node.score_change}`);
        if (node.lifecycle_stage) parts.push(`stage ${node.lifecycle_stage}`);
        if (node.set && Object.keys(node.set).length) parts.push(`set ${Object.keys(node.set).join(", ")}`);
        return parts.join(" · ") || "Nothing to change yet";
      }
      case "webhook":
        return `${node.method || "POST"} ${node.url || "(no URL)"}`;
      case "goal":
        return node.condition ? `Met if ${conditionText(node.condition)}` : "Every contact converts here";
      default:
        return "";
    }
  }
  function triggerText(t) {
    switch (t.type) {
      case "event":
        return `Event “${t.event || "?"}”${t.where?.length ? ` (${plural(t.where.length, "filter")})` : ""}`;
      case "form_submitted": {
        const form = catalog.forms.find((f) => f.id === t.form_id);
        return `Form “${form?.name ?? t.form ?? "?"}” submitted`;
      }
      case "email_opened":
      case "email_clicked": {
        const tpl = catalog.templates.find((x) => x.id === t.template_id);
        return `${t.type === "email_opened" ? "Opened" : "Clicked"} ${tpl ? `“${tpl.name}”` : "any email"}`;
      }
      case "segment_entered":
      case "segment_left": {
        const s = catalog.segments.find((x) => x.id === t.segment_id);
        return `${t.type === "segment_entered" ? "Entered" : "Left"} ${s ? s.name : "a segment"}`;
      }
      case "field_changed":
        return `${t.field || "?"} changed${"to" in t ? ` to ${t.to}` : ""}`;
      case "date":
        return `${t.offset_days || 0} days from ${t.field || "?"} at ${t.time || "09:00"}`;
      case "anniversary":
        return `Every year on ${t.field || "?"} at ${t.time || "09:00"}`;
      default:
        return "Manual, API or segment enrolment";
    }
  }

  // --- problems ----------------------------------------------------------------------------
  // "nodes[3].next" → the node at index 3; "trigger…" and "start" → the trigger; the rest
  // (name, settings…) → the workflow settings.
  function ownerOf(path) {
    const m = /^nodes\[(\d+)\]/.exec(path || "");
    if (m) return doc.nodes[Number(m[1])]?.id ?? SETTINGS;
    if (/^(trigger|start)\b/.test(path || "")) return TRIGGER;
    return SETTINGS;
  }
  function problemsOf(owner) {
    return problems.filter((p) => ownerOf(p.path) === owner);
  }
  function showProblemList() {
    const list = $("wf-problems");
    list.replaceChildren(
      ...problems.map((p) => {
        const owner = ownerOf(p.path);
        return el("li", { class: "error" }, [
          el("button", {
            type: "button",
            text: owner === SETTINGS ? "settings" : owner === TRIGGER ? "trigger" : owner,
            onclick: () => select(owner, true),
          }),
          document.createTextNode(": " + p.message),
        ]);
      }),
    );
  }

  // --- the graph ---------------------------------------------------------------------------
  function stat(key, value, label) {
    return el("span", { class: "wf-stat", "data-stat": key, title: label }, [
      el("strong", { text: fmt(value) }),
      document.createTextNode(" " + label),
    ]);
  }
  function nodeStats(id) {
    if (!stats) return null;
    if (id === TRIGGER)
      return el("div", { class: "wf-stats" }, [stat("enrolled", stats.totals.enrolled, "enrolled")]);
    const node = nodeById(id);
    const figures = stats.nodes.find((n) => n.node_id === id) || { waiting: 0, completed: 0, converted: 0 };
    if (node?.type === "exit")
      return el("div", { class: "wf-stats" }, [stat("passed", figures.completed, "ended here")]);
    const row = [stat("waiting", figures.waiting, "waiting"), stat("passed", figures.completed, "passed")];
    if (node?.type === "send_email") {
      const e = figures.email || {};
      row.push(
        stat("sent", e.sent, "sent"),
        stat("opened", e.opened, "opened"),
        stat("clicked", e.clicked, "clicked"),
      );
    }
    if (node?.type === "goal" || figures.converted)
      row.push(stat("converted", figures.converted, "converted"));
    return el("div", { class: "wf-stats" }, row);
  }

  function nodeCard(id) {
    const isTrigger = id === TRIGGER;
    const node = isTrigger ? null : nodeById(id);
    const own = problemsOf(id);
    const kind = isTrigger
      ? "Trigger"
      : node.type === "wait" && node.mode === "event"
        ? "Wait for event"
        : KINDS[node.type]?.label || node.type;
    const name = isTrigger ? triggerText(doc.trigger) : title(node);
    const classes = ["wf-node", isTrigger ? "wf-trigger" : `wf-${node.type}`];
    if (own.length) classes.push("invalid");
    if (selected === id) classes.push("selected");
    if (pathSteps?.has(id)) classes.push("on-path");
    const label = `${kind}: ${name}${own.length ? ` (${plural(own.length, "problem")})` : ""}`;
    return el(
      "div",
      {
        class: classes.join(" "),
        "data-node": id,
        tabindex: 0,
        role: "button",
        "aria-label": label,
        "aria-pressed": selected === id ? "true" : "false",
        onclick: () => select(id, false),
        onkeydown: (e) => {
          if (e.key === "Enter" || e.key === " ") {
            e.preventDefault();
            select(id, true);
          }
        },
      },
      [
        el("div", { class: "wf-kind" }, [
          el("span", {
            "aria-hidden": "true",
            text: isTrigger ? "⚡ " : (KINDS[node.type]?.icon || "•") + " ",
          }),
          document.createTextNode(kind),
          !isTrigger ? el("span", { class: "wf-id", text: id }) : null,
          pathSteps?.has(id) ? el("span", { class: "wf-step", text: pathSteps.get(id).join(", ") }) : null,
        ]),
        el("div", { class: "wf-title", text: name }),
        isTrigger ? null : el("div", { class: "wf-detail", text: detailOf(node) }),
        nodeStats(id),
        own.length
          ? el("p", {
              class: "wf-problem",
              text: own[0].message + (own.length > 1 ? ` (+${own.length - 1} more)` : ""),
            })
          : null,
      ],
    );
  }

  function edgeLabel(edge) {
    const exits = stats?.nodes.find((n) => n.node_id === edge.from)?.exits || {};
    const text = edge.named ? edge.label.replaceAll("_", " ") : "";
    const count = edge.named && stats ? ` · ${fmt(exits[edge.label] || 0)}` : "";
    return el("div", { class: "wf-edge-label", "data-edge": `${edge.from}|${edge.label}` }, [
      text ? el("span", { class: "wf-exit-label", text: text + count }) : null,
      editable && summary.status !== "archived"
        ? el("button", {
            type: "button",
            class: "wf-add",
            text: "+",
            "aria-label": `Add a step after ${edge.from === TRIGGER ? "the trigger" : title(nodeById(edge.from))}${edge.named ? ` (${text})` : ""}`,
            "aria-haspopup": "menu",
            onclick: (e) => openMenu(e.currentTarget, edge),
          })
        : null,
    ]);
  }

  // dagre's layout of the graph, kept while the same boxes are joined the same way: most
  // redraws (typing a name, new figures) change no size, and a large graph takes dagre a
  // noticeable moment.
  let lastLayout = null;
  function laidOut(items, edges) {
    const key = JSON.stringify([
      items.map((i) => [i.key, i.width, i.height]),
      edges.map((e) => [e.from, e.to, e.width, e.height]),
    ]);
    if (lastLayout?.key === key) return lastLayout;
    const g = new dagre.graphlib.Graph({ multigraph: true });
    g.setGraph({ rankdir: "TB", nodesep: 28, ranksep: 18, edgesep: 12, marginx: 16, marginy: 16 });
    for (const item of items) g.setNode(item.key, { width: item.width, height: item.height });
    edges.forEach((edge, i) =>
      g.setEdge(
        edge.from,
        edge.to,
        {
          width: edge.width,
          height: edge.height,
          labelpos: "c",
        },
        `e${i}`,
      ),
    );
    dagre.layout(g);
    const size = g.graph();
    lastLayout = {
      key,
      width: Math.ceil(size.width),
      height: Math.ceil(size.height),
      nodes: items.map((item) => ({ x: g.node(item.key).x, y: g.node(item.key).y })),
      edges: edges.map((edge, i) => {
        const laid = g.edge({ v: edge.from, w: edge.to, name: `e${i}` });
        return { x: laid.x, y: laid.y, points: laid.points };
      }),
    };
    return lastLayout;
  }

  function render() {
    const focused = document.activeElement?.closest?.("[data-node],[data-edge]");
    const focusKey = focused
      ? focused.dataset.node
        ? `n:${focused.dataset.node}`
        : `e:${focused.dataset.edge}`
      : null;
    menu?.remove();
    menu = null;
    redrawPending = false;
    graphEl.replaceChildren();
    const items = []; // {key, el}
    const edges = []; // {from, to, label, named, el}
    const ids = [TRIGGER, ...doc.nodes.map((n) => n.id)];
    for (const id of ids) items.push({ key: id, el: nodeCard(id) });
    const addEdge = (from, label, target, named) => {
      let to = target && nodeById(target) ? target : null;
      if (!to) {
        to = `@end:${from}:${label}`;
        items.push({
          key: to,
          el: el("div", { class: "wf-end", text: target ? `missing '${target}'` : "End" }),
        });
      }
      const edge = { from, to, label, named };
      edge.el = edgeLabel(edge);
      edges.push(edge);
    };
    addEdge(TRIGGER, "start", doc.start, false);
    for (const node of doc.nodes) {
      const exits = exitsOf(node);
      for (const [label, target] of exits) addEdge(node.id, label, target, exits.length > 1);
    }
    for (const item of [...items, ...edges]) graphEl.append(item.el);
    // Measure everything in one pass (reads only: a single reflow), then lay out.
    for (const item of [...items, ...edges]) {
      item.width = item.el.offsetWidth;
      item.height = item.el.offsetHeight;
    }
    const layout = laidOut(items, edges);
    graphEl.style.width = `${layout.width}px`;
    graphEl.style.height = `${layout.height}px`;
    const place = (item, centre) => {
      item.el.style.left = `${Math.round(centre.x - item.width / 2)}px`;
      item.el.style.top = `${Math.round(centre.y - item.height / 2)}px`;
    };
    items.forEach((item, i) => place(item, layout.nodes[i]));
    const lines = svg("svg", {
      class: "wf-edges",
      width: layout.width,
      height: layout.height,
      "aria-hidden": "true",
    });
    const defs = svg("defs");
    const marker = svg("marker", {
      id: "wf-arrow",
      viewBox: "0 0 10 10",
      refX: "9",
      refY: "5",
      markerWidth: "7",
      markerHeight: "7",
      orient: "auto-start-reverse",
    });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }));
    defs.append(marker);
    lines.append(defs);
    edges.forEach((edge, i) => {
      const laid = layout.edges[i];
      place(edge, laid);
      const d = laid.points.map((p, j) => `${j ? "L" : "M"} ${p.x.toFixed(1)} ${p.y.toFixed(1)}`).join(" ");
      const lit = pathSteps && pathSteps.has(edge.from) && pathSteps.has(edge.to);
      lines.append(svg("path", { d, class: lit ? "lit" : "", "marker-end": "url(#wf-arrow)" }));
    });
    graphEl.prepend(lines);
    // Tab order follows the drawing: top to bottom, left to right.
    const placed = [...items.map((i) => i.el), ...edges.map((e) => e.el)];
    placed.sort(
      (a, b) =>
        parseInt(a.style.top) - parseInt(b.style.top) || parseInt(a.style.left) - parseInt(b.style.left),
    );
    graphEl.append(...placed);
    graphEl.dataset.drawn = "true";
    if (focusKey) {
      const [kind, key] = [focusKey[0], focusKey.slice(2)];
      const target =
        kind === "n"
          ? graphEl.querySelector(`[data-node="${CSS.escape(key)}"]`)
          : graphEl.querySelector(`[data-edge="${CSS.escape(key)}"] .wf-add`);
      target?.focus({ preventScroll: true });
    }
    showProblemList();
    renderHeader();
    syncJson();
  }

  // --- the "+" menu: insert a step on an edge ------------------------------------------------
  let menu = null;
  let redrawPending = false;
  // Statistics and validation answers redraw the canvas, but not under an open menu.
  function redraw() {
    if (menu) redrawPending = true;
    else render();
  }
  function closeMenu(returnFocus) {
    if (!menu) return;
    const opener = menu.opener;
    menu.remove();
    menu = null;
    if (returnFocus) opener.focus();
    if (redrawPending) {
      redrawPending = false;
      render();
      if (returnFocus)
        graphEl
          .querySelector(`[data-edge="${CSS.escape(opener.closest(".wf-edge-label").dataset.edge)}"] .wf-add`)
          ?.focus();
    }
  }
  function openMenu(button, edge) {
    closeMenu();
    const target =
      edge.from === TRIGGER ? doc.start : exitsOf(nodeById(edge.from)).find(([l]) => l === edge.label)?.[1];
    const atEnd = !target || !nodeById(target);
    const choices = PALETTE.filter(([key]) => key !== "exit" || atEnd);
    menu = el(
      "div",
      { class: "wf-menu", role: "menu", "aria-label": "Add a step" },
      choices.map(([key, label]) =>
        el("button", {
          type: "button",
          role: "menuitem",
          "data-kind": key,
          text: label,
          onclick: () => {
            closeMenu();
            insert(edge, key);
          },
        }),
      ),
    );
    menu.opener = button;
    menu.addEventListener("keydown", (e) => {
      const buttons = [...menu.querySelectorAll("button")];
      const at = buttons.indexOf(document.activeElement);
      if (e.key === "Escape") {
        e.preventDefault();
        closeMenu(true);
      }
      if (e.key === "ArrowDown") {
        e.preventDefault();
        buttons[(at + 1) % buttons.length].focus();
      }
      if (e.key === "ArrowUp") {
        e.preventDefault();
        buttons[(at - 1 + buttons.length) % buttons.length].focus();
      }
    });
    const box = button.closest(".wf-edge-label");
    menu.style.left = box.style.left;
    menu.style.top = `${parseInt(box.style.top) + box.offsetHeight}px`;
    graphEl.append(menu);
    menu.querySelector("button").focus();
  }
  document.addEventListener("click", (e) => {
    if (menu && !menu.contains(e.target) && !e.target.closest(".wf-add")) closeMenu();
  });

  function insert(edge, key) {
    const target =
      edge.from === TRIGGER ? doc.start : exitsOf(nodeById(edge.from)).find(([l]) => l === edge.label)?.[1];
    const next = target && nodeById(target) ? target : null;
    insertingAfter = edge.from === TRIGGER ? null : edge.from;
    const node = PALETTE.find(([k]) => k === key)[2]();
    insertingAfter = null;
    node.id = newId(node.type);
    node.name = node.type === "exit" ? "End" : "";
    const after = edge.from === TRIGGER ? -1 : indexOf(edge.from);
    doc.nodes.splice(after + 1, 0, node);
    const labels = exitsOf(node).map(([l]) => l);
    if (next) labels.forEach((l) => setExit(node, l, next));
    else if (labels.length > 1) {
      // Every path of a new branch or split needs somewhere to go: an exit of its own.
      labels.forEach((l, i) => {
        const end = { id: newId("exit"), name: "End", type: "exit" };
        doc.nodes.splice(after + 2 + i, 0, end);
        setExit(node, l, end.id);
      });
    }
    if (edge.from === TRIGGER) doc.start = node.id;
    else setExit(nodeById(edge.from), edge.label, node.id);
    changed(true);
    select(node.id, true);
  }

  // Apply an edit that may cut steps off (deleting a step, removing a split path): steps no
  // longer reachable go too, after the user agrees when any is more than an exit.
  function withPruning(what, mutate) {
    const snapshot = JSON.stringify(doc);
    const before = reachable();
    mutate();
    const after = reachable();
    const orphans = doc.nodes.filter((n) => before.has(n.id) && !after.has(n.id));
    const real = orphans.filter((n) => n.type !== "exit");
    if (
      real.length &&
      !window.confirm(
        `${what} also removes the steps only reachable through it: ${real.map(title).join(", ")}. Continue?`,
      )
    ) {
      doc = JSON.parse(snapshot);
      renderPanel();
      return false;
    }
    doc.nodes = doc.nodes.filter((n) => !orphans.includes(n));
    return true;
  }

  function removeNode(id) {
    const node = nodeById(id);
    const removed = withPruning(`Removing ${title(node)}`, () => {
      const onward =
        exitsOf(node)
          .map(([, t]) => t)
          .find((t) => t && t !== id) || null;
      if (doc.start === id) doc.start = onward;
      for (const other of doc.nodes) {
        if (other.id === id) continue;
        for (const [label, t] of exitsOf(other)) if (t === id) setExit(other, label, onward);
      }
      doc.nodes.splice(indexOf(id), 1);
    });
    if (!removed) return;
    selected = null;
    changed(true);
    renderPanel();
    graphEl.querySelector(`[data-node="${TRIGGER}"]`)?.focus();
  }

  // --- selection and the side panel -----------------------------------------------------------
  function select(id, focusPanel) {
    selected = id;
    for (const card of graphEl.querySelectorAll("[data-node]")) {
      const on = card.dataset.node === id;
      card.classList.toggle("selected", on);
      card.setAttribute("aria-pressed", on ? "true" : "false");
    }
    renderPanel();
    // Below the canvas (narrow screens) the panel scrolls into view; Enter also moves focus.
    const box = $("wf-panel").getBoundingClientRect();
    if (focusPanel || box.top > window.innerHeight) $("wf-panel").scrollIntoView({ block: "nearest" });
    if (focusPanel) panelTitle.focus({ preventScroll: true });
  }
  panelBody.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && selected)
      graphEl.querySelector(`[data-node="${CSS.escape(selected)}"]`)?.focus();
  });

  let fieldCount = 0;
  // A labelled control with its errors below it; errorPath names the problems it shows.
  function field(label, control, errorPath, help) {
    const id = control.id || `wf-f-${++fieldCount}`;
    const target = control.matches("input,select,textarea")
      ? control
      : control.querySelector("input,select,textarea");
    if (target && !target.id) target.id = id;
    return el("div", { class: "field" }, [
      el("label", { for: target ? target.id : id, text: label }),
      control,
      help ? el("p", { class: "help", text: help }) : null,
      errorPath ? el("p", { class: "field-error", role: "alert", "data-error-path": errorPath }) : null,
    ]);
  }
  function textInput(value, oninput, attrs = {}) {
    return el("input", {
      value: value ?? "",
      oninput: (e) => oninput(e.target.value),
      disabled: !editable,
      ...attrs,
    });
  }
  function numberInput(value, oninput, attrs = {}) {
    return textInput(value, (v) => oninput(v === "" ? undefined : Number(v)), { type: "number", ...attrs });
  }
  function selectBox(options, value, onchange, attrs = {}) {
    const s = el("select", { onchange: (e) => onchange(e.target.value), disabled: !editable, ...attrs });
    for (const [v, text] of options)
      s.append(el("option", { value: v, text, selected: String(v) === String(value ?? "") }));
    return s;
  }
  function listInput(values, onchange, attrs = {}) {
    return textInput(
      (values || []).join(", "),
      (v) =>
        onchange(
          v
            .split(",")
            .map((t) => t.trim())
            .filter(Boolean),
        ),
      attrs,
    );
  }
  // A JSON value edited as text: applied when it parses, an error beside it when not.
  function jsonInput(value, onchange, rows = 3) {
    const note = el("p", { class: "field-error" });
    const area = el("textarea", {
      rows,
      spellcheck: "false",
      class: "code",
      disabled: !editable,
      oninput: (e) => {
        try {
          onchange(e.target.value.trim() ? JSON.parse(e.target.value) : undefined);
          note.textContent = "";
        } catch (exc) {
          note.textContent = "JSON: " + exc.message;
        }
      },
    });
    area.value = value === undefined ? "" : JSON.stringify(value, null, 1);
    return el("div", {}, [area, note]);
  }
  function durationInputs(holder, key, base) {
    const d = holder[key] || (holder[key] = {});
    const part = (unit, label) =>
      el("label", { class: "inline-field" }, [
        numberInput(
          d[unit],
          (v) => {
            if (v === undefined) delete d[unit];
            else d[unit] = v;
            changed(false);
          },
          { min: 0, "aria-label": label, "data-field": `${base}.${unit}` },
        ),
        document.createTextNode(` ${label}`),
      ]);
    return el("div", { class: "wf-duration" }, [
      part("days", "days"),
      part("hours", "hours"),
      part("minutes", "minutes"),
    ]);
  }
  function weekdayBoxes(holder, key) {
    const chosen = new Set(holder[key] || WEEKDAYS);
    return el(
      "div",
      { class: "wf-weekdays", role: "group", "aria-label": "Weekdays" },
      WEEKDAYS.map((day) =>
        el("label", {}, [
          el("input", {
            type: "checkbox",
            checked: chosen.has(day),
            disabled: !editable,
            onchange: (e) => {
              if (e.target.checked) chosen.add(day);
              else chosen.delete(day);
              holder[key] = WEEKDAYS.filter((w) => chosen.has(w));
              changed(false);
            },
          }),
          document.createTextNode(` ${day}`),
        ]),
      ),
    );
  }
  // The condition editor of a branch, a goal node or the workflow goal.
  function conditionField(holder, key, errorBase, optional) {
    const box = el("div", { class: "wf-conditions" });
    const mountEditor = () => {
      box.replaceChildren();
      if (!holder[key]) return;
      const host = el("div");
      box.append(host);
      conditionEditor = NurtureConditions.mount(host, {
        catalog: catalog.conditions,
        readonly: !editable,
        conditions: holder[key].conditions || (holder[key].conditions = []),
        onChange: () => changed(false),
        extraKinds: WORKFLOW_LEAVES,
      });
      conditionEditor.errorBase = errorBase;
      conditionEditor.render();
      showConditionErrors();
    };
    const parts = [];
    if (optional) {
      parts.push(
        el("label", { class: "inline-field" }, [
          el("input", {
            type: "checkbox",
            checked: Boolean(holder[key]),
            disabled: !editable,
            onchange: (e) => {
              if (e.target.checked) holder[key] = { conditions: [freshCondition()] };
              else delete holder[key];
              mountEditor();
              changed(false);
            },
          }),
          document.createTextNode(" Only contacts matching a condition"),
        ]),
      );
    }
    parts.push(box);
    mountEditor();
    return el("div", {}, parts);
  }
  const WORKFLOW_LEAVES = {
    workflow_email: {
      label: "Email from this workflow",
      fresh: () => ({ workflow_email: "opened", node: sendNodes()[0]?.id || "" }),
      row: (leaf, path, changedLeaf, ui) => [
        ui.select(
          "Email activity",
          [
            ["sent", "was sent"],
            ["opened", "opened"],
            ["clicked", "clicked"],
          ],
          leaf.workflow_email,
          (v) => {
            leaf.workflow_email = v;
            changedLeaf(false);
          },
          path + ".workflow_email",
        ),
        ui.el("span", { class: "help", text: " the email of " }),
        ui.select(
          "Send step",
          sendNodes().map((n) => [n.id, `${title(n)} (${n.id})`]),
          leaf.node,
          (v) => {
            leaf.node = v;
            changedLeaf(false);
          },
          path + ".node",
        ),
      ],
    },
    webhook: {
      label: "Webhook answer",
      fresh: () => ({
        webhook: doc.nodes.find((n) => n.type === "webhook")?.id || "",
        path: "ok",
        operator: "equals",
        value: true,
      }),
      row: (leaf, path, changedLeaf, ui) => [
        ui.select(
          "Webhook step",
          doc.nodes.filter((n) => n.type === "webhook").map((n) => [n.id, title(n)]),
          leaf.webhook,
          (v) => {
            leaf.webhook = v;
            changedLeaf(false);
          },
          path + ".webhook",
        ),
        ui.input(
          "Answer path",
          leaf.path,
          (v) => {
            leaf.path = v;
            changedLeaf(false);
          },
          { "data-key": path + ".path", placeholder: "ok, status, body.key" },
        ),
        ui.select(
          "Operator",
          ["equals", "not_equals", "greater_than", "less_than", "contains", "is_set", "is_not_set"],
          leaf.operator || "equals",
          (v) => {
            leaf.operator = v;
            changedLeaf(false);
          },
          path + ".operator",
        ),
        ui.input(
          "Value",
          leaf.value === undefined ? "" : JSON.stringify(leaf.value),
          (v) => {
            try {
              leaf.value = JSON.parse(v);
            } catch {
              leaf.value = v;
            }
            changedLeaf(false);
          },
          { "data-key": path + ".value" },
        ),
      ],
    },
  };
  let shownConditionErrors = "";
  function showConditionErrors() {
    if (!conditionEditor || !conditionEditor.errorBase) return;
    const base = conditionEditor.errorBase + ".";
    const details = problems
      .filter((p) => p.path.startsWith(base))
      .map((p) => ({ ...p, path: p.path.slice(base.length) }));
    const key = JSON.stringify(details);
    if (key === shownConditionErrors) return;
    shownConditionErrors = key;
    conditionEditor.setErrors(conditionEditor.locate(details));
  }

  function nodePanel(node) {
    const i = indexOf(node.id);
    const at = (name) => `nodes[${i}].${name}`;
    const parts = [
      field(
        "Name",
        textInput(
          node.name,
          (v) => {
            node.name = v;
            changed(false);
          },
          { maxlength: 100, id: "wf-node-name" },
        ),
        at("name"),
        `Id: ${node.id} (statistics and migrations go by it)`,
      ),
    ];
    const set = (key) => (v) => {
      if (v === undefined || v === "") delete node[key];
      else node[key] = v;
      changed(false);
    };
    switch (node.type) {
      case "send_email":
        parts.push(
          field(
            "Template",
            selectBox(
              [["", "Choose…"], ...catalog.templates.map((t) => [t.id, t.name])],
              node.template_id,
              (v) => {
                node.template_id = v ? Number(v) : null;
                changed(false);
              },
              { id: "wf-template" },
            ),
            at("template_id"),
            catalog.templates.length ? null : "No template yet: create one under Templates first.",
          ),
        );
        parts.push(
          field(
            "Sender identity",
            selectBox(
              [
                ["", "The template's sender"],
                ...catalog.senders.map((s) => [s.id, `${s.name} <${s.email}>`]),
              ],
              node.sender_identity_id,
              (v) => set("sender_identity_id")(v ? Number(v) : undefined),
            ),
            at("sender_identity_id"),
          ),
        );
        break;
      case "wait": {
        const waits = Object.values(NODE_KINDS.kinds).filter((k) => k.type === "wait");
        const modes = waits.map((k) => [k.mode, k.mode_label]);
        parts.push(
          field(
            "Wait",
            selectBox(
              modes,
              node.mode,
              (v) => {
                for (const key of new Set(waits.flatMap((k) => k.fields))) delete node[key];
                const onward = exitsOf(node)
                  .map(([, t]) => t)
                  .find(Boolean);
                for (const key of new Set(waits.flatMap((k) => k.exits))) delete node[key];
                node.mode = v;
                Object.assign(node, starterOf(`wait:${v}`));
                for (const [label] of exitsOf(node)) setExit(node, label, onward);
                changed(true);
                renderPanel();
              },
              { id: "wf-wait-mode" },
            ),
            at("mode"),
          ),
        );
        if (node.mode === "duration")
          parts.push(field("For", durationInputs(node, "duration", "duration"), at("duration")));
        if (node.mode === "time_of_day" || node.mode === "date_field") {
          parts.push(field("Local time", textInput(node.time, set("time"), { type: "time" }), at("time")));
        }
        if (node.mode === "time_of_day")
          parts.push(field("On", weekdayBoxes(node, "weekdays"), at("weekdays")));
        if (node.mode === "date_field") {
          parts.push(
            field(
              "Date field",
              selectBox(
                [
                  ["", "Choose…"],
                  ...catalog.fields.filter((f) => f.type === "date").map((f) => [f.name, f.label]),
                ],
                node.field,
                set("field"),
              ),
              at("field"),
            ),
          );
          parts.push(
            field(
              "Days from it (negative: before)",
              numberInput(node.offset_days, set("offset_days")),
              at("offset_days"),
            ),
          );
        }
        if (node.mode === "event") {
          parts.push(
            field(
              "Event name",
              textInput(
                node.event,
                (v) => {
                  node.event = v.trim();
                  changed(false);
                },
                { id: "wf-wait-event", placeholder: "order_completed" },
              ),
              at("event"),
            ),
          );
          parts.push(
            field("Event property conditions (JSON list)", jsonInput(node.where, set("where")), at("where")),
          );
          parts.push(
            field(
              "Give up after",
              durationInputs(node, "timeout", "timeout"),
              at("timeout"),
              "Then the contact leaves by “timed out”.",
            ),
          );
        }
        break;
      }
      case "branch":
        parts.push(
          field(
            "Yes when all of these hold",
            conditionField(node, "condition", at("condition"), false),
            null,
          ),
        );
        parts.push(
          el("p", { class: "field-error", role: "alert", "data-error-path": at("condition") + "!" }),
        );
        break;
      case "split": {
        const rows = el("div", { class: "wf-paths" });
        node.paths.forEach((path, j) => {
          rows.append(
            el("div", { class: "wf-path-row" }, [
              textInput(
                path.name,
                (v) => {
                  const old = path.name;
                  path.name = v.trim();
                  if (old !== path.name) changed(true);
                },
                { "aria-label": `Path ${j + 1} name`, maxlength: 40 },
              ),
              numberInput(
                path.weight,
                (v) => {
                  path.weight = v ?? 0;
                  changed(false);
                },
                { "aria-label": `Path ${j + 1} weight`, min: 0, step: "any" },
              ),
              editable && node.paths.length > 2
                ? el("button", {
                    type: "button",
                    class: "small link",
                    text: "✕",
                    "aria-label": `Remove path ${path.name}`,
                    onclick: () => {
                      if (withPruning(`Removing path ${path.name}`, () => node.paths.splice(j, 1))) {
                        changed(true);
                        renderPanel();
                      }
                    },
                  })
                : null,
              el("p", { class: "field-error", role: "alert", "data-error-path": at(`paths[${j}]`) }),
            ]),
          );
        });
        parts.push(field("Paths (name and weight)", rows, at("paths")));
        if (editable && node.paths.length < 10) {
          parts.push(
            el("button", {
              type: "button",
              class: "small",
              text: "+ Add a path",
              onclick: () => {
                let n = node.paths.length + 1;
                while (node.paths.some((p) => p.name === String.fromCharCode(64 + n))) n++;
                const end = { id: newId("exit"), name: "End", type: "exit" };
                doc.nodes.push(end);
                node.paths.push({ name: String.fromCharCode(64 + n), weight: 50, next: end.id });
                changed(true);
                renderPanel();
              },
            }),
          );
        }
        break;
      }
      case "update_contact":
        parts.push(
          field(
            "Add tags",
            listInput(
              node.add_tags,
              (v) => {
                node.add_tags = v;
                changed(false);
              },
              { placeholder: "cart-recovery, vip" },
            ),
            at("add_tags"),
          ),
        );
        parts.push(
          field(
            "Remove tags",
            listInput(node.remove_tags, (v) => {
              node.remove_tags = v;
              changed(false);
            }),
            at("remove_tags"),
          ),
        );
        parts.push(
          field("Change score by", numberInput(node.score_change, set("score_change")), at("score_change")),
        );
        parts.push(
          field(
            "Lifecycle stage",
            selectBox(
              [["", "Unchanged"], ...catalog.lifecycle_stages.map((s) => [s, s])],
              node.lifecycle_stage,
              set("lifecycle_stage"),
            ),
            at("lifecycle_stage"),
          ),
        );
        parts.push(
          field(
            "Set fields (JSON object)",
            jsonInput(node.set, set("set")),
            at("set"),
            'e.g. {"attributes.plan": "pro", "first_name": "Ana"}',
          ),
        );
        {
          const lists = catalog.segments.filter((s) => s.kind === "static");
          const ids = (v) => v.map(Number).filter((n) => !isNaN(n));
          parts.push(
            field(
              "Add to lists (ids)",
              listInput(
                node.add_to_lists,
                (v) => {
                  node.add_to_lists = ids(v);
                  changed(false);
                },
                { placeholder: lists.map((s) => `${s.id} = ${s.name}`).join(", ") },
              ),
              at("add_to_lists"),
            ),
          );
          parts.push(
            field(
              "Remove from lists (ids)",
              listInput(node.remove_from_lists, (v) => {
                node.remove_from_lists = ids(v);
                changed(false);
              }),
              at("remove_from_lists"),
            ),
          );
        }
        break;
      case "webhook":
        parts.push(
          field(
            "URL",
            textInput(
              node.url,
              (v) => {
                node.url = v.trim();
                changed(false);
              },
              { type: "url", placeholder: "https://crm.example.com/hook" },
            ),
            at("url"),
          ),
        );
        parts.push(
          field(
            "Method",
            selectBox(
              [
                ["POST", "POST"],
                ["PUT", "PUT"],
              ],
              node.method || "POST",
              set("method"),
            ),
            at("method"),
          ),
        );
        parts.push(
          field("Extra payload (JSON object)", jsonInput(node.payload, set("payload")), at("payload")),
        );
        parts.push(
          field(
            "Attempts at most",
            numberInput(node.max_attempts, set("max_attempts"), { min: 1, max: 20 }),
            at("max_attempts"),
          ),
        );
        break;
      case "goal":
        parts.push(field("Converted when", conditionField(node, "condition", at("condition"), true), null));
        parts.push(
          field(
            "Others",
            selectBox(
              [
                ["continue", "go on"],
                ["end", "end here"],
                ["wait", "wait here until they meet it"],
              ],
              node.otherwise || "continue",
              set("otherwise"),
            ),
            at("otherwise"),
          ),
        );
        break;
      default:
        break;
    }
    if (editable) {
      parts.push(
        el("div", { class: "form-actions" }, [
          el("button", {
            type: "button",
            class: "danger small",
            text: "Delete this step",
            id: "wf-delete-node",
            onclick: () => removeNode(node.id),
          }),
        ]),
      );
    }
    return parts;
  }

  const TRIGGER_TYPES = [
    ["manual", "Manual / API / segment enrolment only"],
    ["event", "An event happens"],
    ["form_submitted", "A form is submitted"],
    ["email_opened", "An email is opened"],
    ["email_clicked", "An email is clicked"],
    ["segment_entered", "Enters a segment"],
    ["segment_left", "Leaves a segment"],
    ["field_changed", "A contact field changes"],
    ["date", "A date field comes near"],
    ["anniversary", "Every year on a date field"],
  ];
  function triggerPanel() {
    const t = doc.trigger;
    const set = (key) => (v) => {
      if (v === undefined || v === "") delete t[key];
      else t[key] = v;
      changed(false);
    };
    const dateFields = [
      ["", "Choose…"],
      ...catalog.fields.filter((f) => f.type === "date").map((f) => [f.name, f.label]),
    ];
    const parts = [
      field(
        "Starts when",
        selectBox(
          TRIGGER_TYPES,
          t.type,
          (v) => {
            const fresh = { type: v };
            if (v === "event") fresh.event = "";
            if (v === "form_submitted" && catalog.forms.length) fresh.form_id = catalog.forms[0].id;
            if (v.startsWith("segment_")) fresh.segment_id = catalog.segments[0]?.id ?? 0;
            if (v === "field_changed") fresh.field = "lifecycle_stage";
            if (v === "date" || v === "anniversary") {
              fresh.field = dateFields[1]?.[0] || "";
              fresh.time = "09:00";
            }
            if (v === "date") fresh.offset_days = 0;
            doc.trigger = fresh;
            changed(false);
            renderPanel();
          },
          { id: "wf-trigger-type" },
        ),
        "trigger.type",
      ),
    ];
    switch (t.type) {
      case "event":
        parts.push(
          field(
            "Event name",
            textInput(
              t.event,
              (v) => {
                t.event = v.trim();
                changed(false);
              },
              { id: "wf-trigger-event", placeholder: "cart_abandoned" },
            ),
            "trigger.event",
          ),
        );
        parts.push(
          field(
            "Only when its properties match (JSON list)",
            jsonInput(t.where, set("where")),
            "trigger.where",
            '[{"property": "cart_total", "operator": "greater_or_equal", "value": 20}]',
          ),
        );
        break;
      case "form_submitted": {
        // A document may still name its form by name (form); choosing one stores its id,
        // which survives a rename.
        const byName = t.form_id === undefined ? catalog.forms.find((f) => f.name === t.form) : null;
        parts.push(
          field(
            "Form",
            selectBox(
              [
                ["", "Choose…"],
                ...catalog.forms.map((f) => [f.id, f.double_opt_in ? `${f.name} (double opt-in)` : f.name]),
              ],
              t.form_id ?? byName?.id,
              (v) => {
                delete t.form;
                if (v) t.form_id = Number(v);
                else delete t.form_id;
                changed(false);
              },
              { id: "wf-trigger-form" },
            ),
            t.form_id === undefined && t.form !== undefined ? "trigger.form" : "trigger.form_id",
            catalog.forms.length
              ? "With double opt-in, contacts enter when they confirm."
              : "No form yet: create one under Forms first.",
          ),
        );
        break;
      }
      case "email_opened":
      case "email_clicked":
        parts.push(
          field(
            "Template",
            selectBox(
              [["", "Any email"], ...catalog.templates.map((x) => [x.id, x.name])],
              t.template_id,
              (v) => set("template_id")(v ? Number(v) : undefined),
            ),
            "trigger.template_id",
          ),
        );
        break;
      case "segment_entered":
      case "segment_left":
        parts.push(
          field(
            "Segment",
            selectBox(
              catalog.segments.map((s) => [s.id, s.name]),
              t.segment_id,
              (v) => set("segment_id")(Number(v)),
            ),
            "trigger.segment_id",
          ),
        );
        break;
      case "field_changed":
        parts.push(
          field(
            "Field",
            textInput(t.field, set("field"), { placeholder: "lifecycle_stage or attributes.plan" }),
            "trigger.field",
          ),
        );
        // Values as JSON where they parse (10, true, null = unset), else as text.
        for (const [key, label] of [
          ["from", "From (empty: any)"],
          ["to", "To (empty: any)"],
        ]) {
          const shown = key in t ? (typeof t[key] === "string" ? t[key] : JSON.stringify(t[key])) : "";
          parts.push(
            field(
              label,
              textInput(shown, (v) => {
                if (v === "") delete t[key];
                else {
                  try {
                    t[key] = JSON.parse(v);
                  } catch {
                    t[key] = v;
                  }
                }
                changed(false);
              }),
              `trigger.${key}`,
            ),
          );
        }
        break;
      case "date":
      case "anniversary":
        parts.push(field("Date field", selectBox(dateFields, t.field, set("field")), "trigger.field"));
        if (t.type === "date")
          parts.push(
            field(
              "Days from it (negative: before)",
              numberInput(t.offset_days, set("offset_days")),
              "trigger.offset_days",
            ),
          );
        parts.push(field("Local time", textInput(t.time, set("time"), { type: "time" }), "trigger.time"));
        break;
      default:
        parts.push(
          el("p", {
            class: "note",
            text: "Contacts enter by hand, through the API or a whole segment at once. Every workflow also accepts those, whatever its trigger.",
          }),
        );
    }
    parts.push(el("p", { class: "field-error", role: "alert", "data-error-path": "start" }));
    return parts;
  }

  function settingsPanel() {
    const s = doc.settings || (doc.settings = {});
    const parts = [
      field(
        "Name",
        textInput(
          doc.name,
          (v) => {
            doc.name = v;
            changed(false);
          },
          { maxlength: 200, id: "wf-doc-name" },
        ),
        "name",
      ),
      field(
        "Description",
        textInput(
          doc.description,
          (v) => {
            doc.description = v;
            changed(false);
          },
          { maxlength: 2000 },
        ),
        "description",
      ),
    ];
    const reentry = s.reentry || (s.reentry = { mode: "once" });
    parts.push(
      field(
        "Re-entry",
        selectBox(
          [
            ["once", "Once per contact"],
            ["always", "Every time the trigger fires"],
            ["cooldown", "Again after a cool-down"],
          ],
          reentry.mode,
          (v) => {
            reentry.mode = v;
            if (v === "cooldown") reentry.cooldown = reentry.cooldown || { days: 7 };
            else delete reentry.cooldown;
            changed(false);
            renderPanel();
          },
        ),
        "settings.reentry",
      ),
    );
    if (reentry.mode === "cooldown")
      parts.push(
        field("Cool-down", durationInputs(reentry, "cooldown", "cooldown"), "settings.reentry.cooldown"),
      );
    const goal = s.goal || {};
    const keepGoal = () => {
      if (goal.event || goal.condition) s.goal = goal;
      else delete s.goal;
    };
    parts.push(
      field(
        "Goal: leaves as converted when doing the event",
        textInput(
          goal.event,
          (v) => {
            if (v.trim()) goal.event = v.trim();
            else delete goal.event;
            keepGoal();
            changed(false);
          },
          { placeholder: "order_completed" },
        ),
        "settings.goal",
      ),
    );
    const goalCondition = conditionField(goal, "condition", "settings.goal.condition", true);
    goalCondition.addEventListener("change", () => {
      keepGoal();
      changed(false);
    });
    parts.push(field("Goal: or when matching", goalCondition, null));
    const windowFields = (key, label, withDays) => {
      const box = el("div", {});
      const fill = () => {
        box.replaceChildren();
        box.append(
          el("label", { class: "inline-field" }, [
            el("input", {
              type: "checkbox",
              checked: Boolean(s[key]),
              disabled: !editable,
              onchange: (e) => {
                if (e.target.checked)
                  s[key] =
                    key === "quiet_hours"
                      ? { start: "21:00", end: "08:00" }
                      : { start: "09:00", end: "17:00", weekdays: WEEKDAYS.slice(0, 5) };
                else delete s[key];
                changed(false);
                fill();
              },
            }),
            document.createTextNode(` ${label}`),
          ]),
        );
        if (s[key]) {
          box.append(
            el("div", { class: "wf-duration" }, [
              el("label", { class: "inline-field" }, [
                document.createTextNode("from "),
                textInput(
                  s[key].start,
                  (v) => {
                    s[key].start = v;
                    changed(false);
                  },
                  { type: "time", "aria-label": `${label} start` },
                ),
              ]),
              el("label", { class: "inline-field" }, [
                document.createTextNode("to "),
                textInput(
                  s[key].end,
                  (v) => {
                    s[key].end = v;
                    changed(false);
                  },
                  { type: "time", "aria-label": `${label} end` },
                ),
              ]),
            ]),
          );
          if (withDays) box.append(weekdayBoxes(s[key], "weekdays"));
        }
      };
      fill();
      return box;
    };
    parts.push(
      field("Quiet hours", windowFields("quiet_hours", "No email between", false), "settings.quiet_hours"),
    );
    parts.push(
      field("Send window", windowFields("send_window", "Email only between", true), "settings.send_window"),
    );
    parts.push(
      field(
        "Time zone for contacts without one",
        textInput(
          s.fallback_time_zone,
          (v) => {
            if (v.trim()) s.fallback_time_zone = v.trim();
            else delete s.fallback_time_zone;
            changed(false);
          },
          { placeholder: "UTC" },
        ),
        "settings.fallback_time_zone",
      ),
    );
    parts.push(
      field(
        "Priority for the frequency cap (1–10)",
        numberInput(
          s.priority,
          (v) => {
            if (v === undefined) delete s.priority;
            else s.priority = v;
            changed(false);
          },
          { min: 1, max: 10 },
        ),
        "settings.priority",
      ),
    );
    return parts;
  }

  function renderPanel() {
    conditionEditor = null;
    shownConditionErrors = "";
    fieldCount = 0;
    const top = el("ul", { class: "problems", id: "wf-panel-problems" });
    let parts;
    if (selected === TRIGGER) {
      panelTitle.textContent = "Trigger";
      parts = triggerPanel();
    } else if (selected === SETTINGS) {
      panelTitle.textContent = "Workflow settings";
      parts = settingsPanel();
    } else if (selected && nodeById(selected)) {
      const node = nodeById(selected);
      panelTitle.textContent = `${NODE_KINDS.kinds[kindOf(node)]?.heading || KINDS[node.type]?.label || node.type} · ${title(node)}`;
      parts = nodePanel(node);
    } else {
      selected = null;
      panelTitle.textContent = "Select a step";
      parts = [el("p", { class: "note", text: "Choose a step on the canvas to configure it." })];
    }
    panelBody.replaceChildren(top, ...parts);
    showPanelErrors();
  }

  // Problems of the selected step at the field whose path they name; the rest above.
  function showPanelErrors() {
    if (!selected) return;
    const own = problemsOf(selected);
    const slots = [...panelBody.querySelectorAll("[data-error-path]")];
    const claimed = new Set();
    const underEditor = (p) => conditionEditor && p.path.startsWith(conditionEditor.errorBase + ".");
    for (const slot of slots) {
      const base = slot.dataset.errorPath;
      const exact = base.endsWith("!");
      const prefix = exact ? base.slice(0, -1) : base;
      const mine = own.filter(
        (p) =>
          !claimed.has(p) &&
          !underEditor(p) &&
          (p.path === prefix ||
            (!exact && (p.path.startsWith(prefix + ".") || p.path.startsWith(prefix + "[")))),
      );
      mine.forEach((p) => claimed.add(p));
      slot.textContent = mine.map((p) => p.message).join("; ");
      slot.closest(".field")?.classList.toggle("invalid", mine.length > 0);
    }
    if (conditionEditor) {
      own.filter(underEditor).forEach((p) => claimed.add(p));
      showConditionErrors();
    }
    const rest = own.filter((p) => !claimed.has(p));
    const top = $("wf-panel-problems");
    if (top) top.replaceChildren(...rest.map((p) => el("li", { class: "error", text: p.message })));
  }

  // --- edits, validation, saving ------------------------------------------------------------
  let validateTimer = null;
  let drawTimer = null;
  // A new or removed step redraws at once; typing in a field redraws when the typing pauses.
  function changed(structural) {
    clearTimeout(drawTimer);
    if (structural) render();
    else drawTimer = setTimeout(redraw, 120);
    if (structural && selected && selected !== TRIGGER && selected !== SETTINGS && !nodeById(selected))
      renderPanel();
    if (editable) {
      clearTimeout(validateTimer);
      validateTimer = setTimeout(validate, 400);
    }
  }

  let validation = 0;
  async function validate() {
    const mine = ++validation;
    const sent = JSON.stringify(doc);
    const answer = await Nurture.request(`${data.api}/validate`, { method: "POST", json: doc });
    if (mine !== validation || sent !== JSON.stringify(doc)) return; // edited meanwhile
    if (answer.ok) problems = answer.body.errors;
    else
      problems = answer.body?.error?.details?.length
        ? answer.body.error.details
        : [{ path: "", message: answer.body?.error?.message || "could not validate" }];
    redraw();
    showPanelErrors();
  }

  const dirty = () => JSON.stringify(doc) !== savedJson;
  function renderHeader() {
    $("wf-name").textContent = doc.name || summary.name;
    const status = $("wf-status");
    status.textContent = summary.status;
    status.className = `status ${summary.status}`;
    const unpublished = dirty() || summary.has_unpublished_changes;
    $("wf-version").textContent = [
      summary.active_version ? `version ${summary.active_version} live` : "never published",
      dirty()
        ? "unsaved changes"
        : unpublished && summary.active_version
          ? "draft differs from the live version"
          : "",
    ]
      .filter(Boolean)
      .join(" · ");
    if (!editable) return;
    const archived = summary.status === "archived";
    $("wf-save").disabled = !dirty() || archived;
    $("wf-publish").disabled = archived || !(unpublished || dirty());
    $("wf-pause").hidden = summary.status !== "active";
    $("wf-resume").hidden = summary.status !== "paused";
    $("wf-archive").hidden = archived || !summary.active_version;
    $("wf-delete").hidden = Boolean(summary.active_version);
    const live = summary.status === "active";
    $("enrol-submit").disabled = !live;
    $("enrol-note").textContent = live
      ? ""
      : summary.status === "paused"
        ? "Resume the workflow to enrol contacts."
        : "Publish the workflow to enrol contacts.";
  }

  function apiProblems(answer) {
    const details = answer.body?.error?.details || [];
    return details.length
      ? details
      : [{ path: "", message: answer.body?.error?.message || `failed (${answer.status})` }];
  }

  async function save() {
    if (!dirty()) return true;
    say("Saving…");
    const sent = JSON.stringify(doc);
    const answer = await Nurture.request(api, { method: "PUT", json: doc });
    if (!answer.ok) {
      problems = apiProblems(answer);
      render();
      showPanelErrors();
      say(`Not saved: ${plural(problems.length, "problem")} marked on the canvas.`);
      return false;
    }
    savedJson = sent;
    summary = { ...summary, ...pick(answer.body) };
    problems = [];
    render();
    showPanelErrors();
    say("Draft saved.");
    return true;
  }
  const pick = (w) => ({
    name: w.name,
    status: w.status,
    active_version: w.active_version,
    has_unpublished_changes: w.has_unpublished_changes,
  });

  async function refreshSummary() {
    const answer = await Nurture.request(api);
    if (answer.ok) summary = pick(answer.body);
    const listed = await Nurture.request(`${api}/versions`);
    if (listed.ok) {
      const open = Object.fromEntries(versions.map((v) => [v.number, v.open]));
      versions = listed.body.map((v) => ({
        number: v.number,
        published_at: v.published_at,
        open: open[v.number] ?? 0,
      }));
      fillMigration();
    }
    renderHeader();
  }

  async function act(path, done) {
    const answer = await Nurture.request(`${api}/${path}`, { method: "POST" });
    if (!answer.ok) {
      problems = apiProblems(answer);
      render();
      say(answer.body?.error?.message || "Refused.");
      return null;
    }
    await refreshSummary();
    say(done(answer.body));
    return answer.body;
  }

  if (editable) {
    $("wf-save").addEventListener("click", save);
    $("wf-publish").addEventListener("click", async () => {
      if (!(await save())) return;
      const version = await act("publish", (v) => `Published version ${v.number}: new contacts enter it.`);
      if (version) {
        const older = versions.filter((v) => v.number !== version.number && v.open > 0);
        if (older.length)
          say(
            `Published version ${version.number}. ${plural(
              older.reduce((n, v) => n + v.open, 0),
              "contact",
            )} are still on older versions: migrate them below if they should move.`,
          );
      }
    });
    $("wf-pause").addEventListener("click", () =>
      act("pause", () => "Paused: nobody enters or moves until you resume."),
    );
    $("wf-resume").addEventListener("click", () => act("resume", () => "Resumed."));
    $("wf-archive").addEventListener("click", () => {
      if (!window.confirm("Archive this workflow? Every contact in it leaves where it stands.")) return;
      act("archive", () => "Archived.").then((done) => {
        if (done) window.location.reload();
      });
    });
    $("wf-delete").addEventListener("click", async () => {
      if (!window.confirm(`Delete the workflow ${summary.name}?`)) return;
      const answer = await Nurture.request(api, { method: "DELETE" });
      if (answer.ok) window.location.assign(data.list);
      else say(answer.body?.error?.message || "Not deleted.");
    });
    window.addEventListener("beforeunload", (e) => {
      if (dirty()) e.preventDefault();
    });
  }
  $("wf-settings").addEventListener("click", () => select(SETTINGS, true));

  // --- live statistics ------------------------------------------------------------------------
  function renderTotals() {
    if (!stats) return;
    const t = stats.totals;
    $("wf-totals").replaceChildren(
      ...[
        ["enrolled", t.enrolled],
        ["in progress", t.active + t.paused],
        ["completed", t.completed],
        ["converted", t.converted],
        ["exited", t.exited + t.failed],
      ].map(([label, n]) =>
        el("span", { class: "wf-total", "data-total": label }, [
          el("strong", { text: fmt(n) }),
          document.createTextNode(" " + label),
        ]),
      ),
    );
  }
  async function refreshStats() {
    if (document.hidden) return;
    const answer = await Nurture.request(`${api}/stats`);
    if (!answer.ok) return;
    const changedStats = JSON.stringify(answer.body) !== JSON.stringify(stats);
    stats = answer.body;
    if (changedStats) {
      renderTotals();
      redraw();
    }
  }
  setInterval(refreshStats, 3000);

  // --- dry run ---------------------------------------------------------------------------
  const UNITS = { m: 60e3, h: 3600e3, d: 86400e3 };
  function parseTimeline(text, start) {
    return text
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean)
      .map((line, n) => {
        const [offset, name, ...pairs] = line.split(/\s+/);
        const m = /^(\d+(?:\.\d+)?)([mhd])$/.exec(offset || "");
        if (!m || !name) throw new Error(`line ${n + 1}: expected an offset such as 2h, then the event name`);
        const properties = {};
        for (const pair of pairs) {
          const [key, ...rest] = pair.split("=");
          if (!key || !rest.length) throw new Error(`line ${n + 1}: expected property=value, not ${pair}`);
          const value = rest.join("=");
          properties[key] = /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : value;
        }
        return { at: new Date(start.getTime() + Number(m[1]) * UNITS[m[2]]).toISOString(), name, properties };
      });
  }
  function showPath(steps) {
    pathSteps = new Map([[TRIGGER, [0]]]);
    steps.forEach((s, i) => pathSteps.set(s.node_id, [...(pathSteps.get(s.node_id) || []), i + 1]));
    $("dry-clear").hidden = false;
    render();
  }
  $("dry-run")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("dry-error");
    const out = $("dry-result");
    error.textContent = "";
    const startText = $("dry-start").value;
    const start = startText ? new Date(startText + "Z") : new Date();
    let timeline;
    try {
      timeline = parseTimeline($("dry-timeline").value, start);
    } catch (exc) {
      error.textContent = exc.message;
      return;
    }
    if (!(await save())) {
      error.textContent = "Fix the problems on the canvas first: the dry run follows the saved draft.";
      return;
    }
    const json = { contact_id: Number($("dry-contact").value), timeline };
    if (startText || timeline.length) json.start_at = start.toISOString();
    const answer = await Nurture.request(`${api}/dry-run`, { method: "POST", json });
    if (!answer.ok) {
      error.textContent = apiProblems(answer)
        .map((p) => (p.path && p.path !== "body" ? `${p.path}: ` : "") + p.message)
        .join("; ");
      return;
    }
    const result = answer.body;
    out.replaceChildren(
      el("p", {}, [
        el("strong", { text: `Outcome: ${result.outcome}` }),
        document.createTextNode(` · ${plural(result.emails.length, "email")}`),
      ]),
      el("div", { class: "table-wrap" }, [
        el("table", { class: "list", id: "dry-steps" }, [
          el("thead", {}, [
            el(
              "tr",
              {},
              ["#", "Local time", "Step", "Exit", "Note"].map((h) => el("th", { text: h })),
            ),
          ]),
          el(
            "tbody",
            {},
            result.steps.map((s, i) =>
              el("tr", { "data-node": s.node_id }, [
                el("td", { text: String(i + 1) }),
                el("td", { text: s.local_time }),
                el("td", { text: s.name || s.node_id }),
                el("td", { text: s.exit || "" }),
                el("td", { text: s.note || "" }),
              ]),
            ),
          ),
        ]),
      ]),
    );
    showPath(result.steps);
  });
  $("dry-clear")?.addEventListener("click", () => {
    pathSteps = null;
    $("dry-clear").hidden = true;
    $("dry-result").replaceChildren();
    render();
  });

  // --- migration ------------------------------------------------------------------------------
  let previewed = null;
  function fillMigration() {
    const from = $("migrate-from");
    if (!from) return;
    const older = versions.filter((v) => v.number !== summary.active_version);
    from.replaceChildren(
      ...(older.length
        ? older.map((v) =>
            el("option", {
              value: v.number,
              text: `Version ${v.number} (${plural(v.open, "contact")} in it)`,
            }),
          )
        : [el("option", { value: "", text: summary.active_version ? "No older version" : "Publish first" })]),
    );
    from.disabled = !older.length;
    $("migrate-preview").disabled = !older.length;
    loadMap();
  }
  async function loadMap() {
    const box = $("migrate-map");
    previewed = null;
    $("migrate-apply").disabled = true;
    const number = $("migrate-from").value;
    if (!number || !summary.active_version) {
      box.replaceChildren();
      return;
    }
    const [source, target] = await Promise.all([
      Nurture.request(`${api}/versions/${number}`),
      Nurture.request(`${api}/versions/${summary.active_version}`),
    ]);
    if (!source.ok || !target.ok) return;
    const targets = target.body.definition.nodes;
    box.replaceChildren(
      el("table", { class: "list", id: "migrate-nodes" }, [
        el("thead", {}, [
          el("tr", {}, [
            el("th", { text: `Step in version ${number}` }),
            el("th", { text: `Moves to, in version ${summary.active_version}` }),
          ]),
        ]),
        el(
          "tbody",
          {},
          source.body.definition.nodes.map((n) =>
            el("tr", {}, [
              el("td", { text: `${title(n)} (${n.id})` }),
              el("td", {}, [
                el("select", { "data-from": n.id, "aria-label": `Where contacts at ${title(n)} go` }, [
                  el("option", {
                    value: "",
                    text: targets.some((t) => t.id === n.id) ? "The same step" : "Choose…",
                  }),
                  ...targets.map((t) => el("option", { value: t.id, text: `${title(t)} (${t.id})` })),
                ]),
              ]),
            ]),
          ),
        ),
      ]),
    );
  }
  function migrationBody() {
    const nodeMap = {};
    for (const s of document.querySelectorAll("#migrate-map select[data-from]"))
      if (s.value) nodeMap[s.dataset.from] = s.value;
    return { from_version: Number($("migrate-from").value), node_map: nodeMap };
  }
  function showMigration(result, applied) {
    $("migrate-result").replaceChildren(
      el("p", {}, [
        el("strong", {
          text: applied
            ? `Moved ${plural(result.contacts, "contact")} to version ${result.to_version}.`
            : `${plural(result.contacts, "contact")} would move from version ${result.from_version} to ${result.to_version}.`,
        }),
      ]),
      el(
        "ul",
        { id: "migrate-moves" },
        result.moves.map((m) => el("li", { text: m.message })),
      ),
    );
  }
  $("migrate-from")?.addEventListener("change", loadMap);
  $("migrate")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = migrationBody();
    const answer = await Nurture.request(`${api}/migrations/preview`, { method: "POST", json: body });
    if (!answer.ok) {
      previewed = null;
      $("migrate-apply").disabled = true;
      $("migrate-result").replaceChildren(
        el(
          "ul",
          { class: "problems" },
          apiProblems(answer).map((p) => el("li", { class: "error", text: p.message })),
        ),
      );
      return;
    }
    previewed = JSON.stringify(body);
    $("migrate-apply").disabled = answer.body.contacts === 0;
    showMigration(answer.body, false);
  });
  $("migrate-apply")?.addEventListener("click", async () => {
    const body = migrationBody();
    if (JSON.stringify(body) !== previewed) {
      say("The map changed: preview it again first.");
      return;
    }
    if (!window.confirm("Move these contacts now?")) return;
    const answer = await Nurture.request(`${api}/migrations`, { method: "POST", json: body });
    if (!answer.ok) {
      say(answer.body?.error?.message || "Not migrated.");
      return;
    }
    showMigration(answer.body, true);
    versions = versions.map((v) => (v.number === answer.body.from_version ? { ...v, open: 0 } : v));
    fillMigration();
  });

  // --- manual and bulk enrolment ---------------------------------------------------------------
  $("enrol")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const segment = $("enrol-segment").value;
    const emails = $("enrol-emails")
      .value.split(/[\s,;]+/)
      .filter(Boolean);
    $("enrol-error").textContent = "";
    $("enrol-result").replaceChildren();
    if (Boolean(segment) === Boolean(emails.length)) {
      $("enrol-error").textContent = segment
        ? "Choose a segment or list contacts, not both."
        : "Choose a segment or list the contacts' email addresses.";
      return;
    }
    const body = segment ? { segment_id: Number(segment) } : { emails };
    const answer = await Nurture.request(`${api}/enrollments`, { method: "POST", json: body });
    if (!answer.ok) {
      $("enrol-result").replaceChildren(
        el(
          "ul",
          { class: "problems", id: "enrol-problems" },
          apiProblems(answer).map((p) => {
            const at = /^emails\[(\d+)\]$/.exec(p.path || "");
            return el("li", { class: "error", text: at ? `${emails[Number(at[1])]}: ${p.message}` : p.message });
          }),
        ),
      );
      return;
    }
    $("enrol-result").replaceChildren(
      el("p", {}, [el("strong", { text: `${plural(answer.body.enrolled, "contact")} enrolled.` })]),
    );
    $("enrol-emails").value = "";
    refreshStats();
  });

  // --- the document as JSON -------------------------------------------------------------------
  function syncJson() {
    const box = $("wf-json");
    if (document.activeElement !== box) box.value = JSON.stringify(doc, null, 2);
  }
  $("wf-json-apply")?.addEventListener("click", () => {
    try {
      const parsed = JSON.parse($("wf-json").value);
      if (!parsed || typeof parsed !== "object" || !Array.isArray(parsed.nodes))
        throw new Error("expected a workflow document with a nodes list");
      if (!parsed.trigger || typeof parsed.trigger.type !== "string")
        throw new Error("the trigger needs a type");
      parsed.nodes.forEach((n, i) => {
        if (!n || typeof n.id !== "string" || typeof n.type !== "string")
          throw new Error(`nodes[${i}] needs an id and a type`);
      });
      doc = parsed;
      $("wf-json-error").textContent = "";
      changed(true);
      renderPanel();
    } catch (exc) {
      $("wf-json-error").textContent = "JSON: " + exc.message;
    }
  });

  render();
  // Start with the trigger in view (wide graphs scroll sideways inside the canvas).
  const canvasEl = $("wf-canvas");
  const trigger = graphEl.querySelector(`[data-node="${TRIGGER}"]`);
  canvasEl.scrollLeft = trigger.offsetLeft + trigger.offsetWidth / 2 - canvasEl.clientWidth / 2;
  renderPanel();
  fillMigration();
  refreshStats();
})();
