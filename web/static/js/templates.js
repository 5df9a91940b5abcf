// The template editor: CodeMirror over the MJML textarea, a debounced check + render of the
// draft (errors marked at their line), previews in sandboxed iframes at desktop and mobile
// widths, the variable picker, saving a version and sending a test.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("template-data").textContent);
  const $ = (id) => document.getElementById(id);
  const textarea = $("t-mjml");
  const problems = $("problems");
  const editor = window.CodeMirror
    ? CodeMirror.fromTextArea(textarea, {
        mode: "xml",
        lineNumbers: true,
        lineWrapping: true,
        readOnly: !data.editable,
        extraKeys: {
          "Ctrl-S": () => $("save-template")?.click(),
          "Cmd-S": () => $("save-template")?.click(),
          Esc: (cm) => cm.getInputField().blur(),
          Tab: false, // keep Tab for moving focus (keyboard users)
          "Shift-Tab": false,
        },
      })
    : null;
  if (editor) editor.getInputField().setAttribute("aria-label", "MJML source");
  const source = () => (editor ? editor.getValue() : textarea.value);
  let marked = [];

  function content() {
    const sender = $("t-sender").value;
    return {
      kind: $("t-kind").value,
      sender_identity_id: sender ? Number(sender) : null,
      subject: $("t-subject").value,
      preheader: $("t-preheader").value,
      language: $("t-language").value.trim() || null,
      mjml: source(),
    };
  }

  function goTo(line, column) {
    if (!editor || !line) return;
    editor.focus();
    editor.setCursor({ line: line - 1, ch: Math.max((column || 1) - 1, 0) });
  }

  function showProblems(errors, warnings) {
    for (const line of marked) editor?.removeLineClass(line, "background", "cm-error-line");
    marked = [];
    document.querySelectorAll("[data-error]").forEach((p) => (p.textContent = ""));
    problems.replaceChildren();
    const item = (problem, level) => {
      const li = document.createElement("li");
      li.className = level;
      li.dataset.path = problem.path;
      if (problem.line) li.dataset.line = problem.line;
      const where = problem.line ? `${problem.path} line ${problem.line}${problem.column ? ", column " + problem.column : ""}` : problem.path;
      const link = document.createElement("button");
      link.type = "button";
      link.textContent = where;
      link.addEventListener("click", () => goTo(problem.line, problem.column));
      li.append(link, document.createTextNode(": " + problem.message));
      problems.append(li);
      const field = document.querySelector(`[data-error="${CSS.escape(problem.path)}"]`);
      if (field && level === "error") field.textContent = problem.message;
      if (editor && problem.path === "mjml" && problem.line && level === "error") {
        const handle = editor.addLineClass(problem.line - 1, "background", "cm-error-line");
        marked.push(handle);
      }
    };
    errors.forEach((p) => item(p, "error"));
    warnings.forEach((p) => item(p, "warning"));
  }

  function showPreview(html, subject) {
    $("preview-desktop").srcdoc = html;
    $("preview-mobile").srcdoc = html;
    $("preview-subject").textContent = subject ? "— " + subject : "";
  }

  let timer = null;
  let generation = 0;
  async function refresh() {
    const mine = ++generation;
    const contact = $("preview-contact").value;
    let answer;
    if (data.editable) {
      answer = await Nurture.request(data.api + "/preview-draft", {
        method: "POST",
        json: { ...content(), contact_id: contact ? Number(contact) : null },
      });
    } else {
      answer = await Nurture.request(`${data.api}/${data.template.id}/preview`, {
        method: "POST",
        json: { contact_id: contact ? Number(contact) : null },
      });
    }
    if (mine !== generation) return;
    if (!answer.ok) {
      const details = (answer.body?.error?.details || []).map((d) => ({ line: null, ...d }));
      showProblems(details.length ? details : [{ path: "", message: answer.body?.error?.message || "failed" }], []);
      return;
    }
    const body = answer.body;
    showProblems(body.errors || [], body.warnings || []);
    if (body.html) showPreview(body.html, body.subject);
  }
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 500);
  }

  editor?.on("change", schedule);
  textarea.addEventListener("input", schedule);
  for (const id of ["t-subject", "t-preheader", "t-language", "t-kind", "t-sender"]) $(id).addEventListener("input", schedule);
  $("preview-for").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });

  $("insert-variable")?.addEventListener("click", () => {
    const name = $("t-variable").value;
    if (!name) return;
    const text = `{{ ${name} }}`;
    if (editor) {
      editor.replaceSelection(text);
      editor.focus();
    } else {
      textarea.setRangeText(text, textarea.selectionStart, textarea.selectionEnd, "end");
      schedule();
    }
  });

  $("save-template")?.addEventListener("click", async () => {
    const status = $("save-status");
    status.textContent = "Saving…";
    const answer = data.template
      ? await Nurture.request(`${data.api}/${data.template.id}/versions`, { method: "POST", json: content() })
      : await Nurture.request(data.api, { method: "POST", json: { ...content(), name: $("t-name").value.trim() } });
    if (!answer.ok) {
      const details = (answer.body?.error?.details || []).map((d) => ({ line: null, ...d }));
      showProblems(details, []);
      status.textContent = answer.body?.error?.message || "Not saved.";
      return;
    }
    status.textContent = `Saved version ${answer.body.latest_version}.`;
    window.location.assign(`${data.detail}/${answer.body.id}`);
  });

  $("test-send")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = $("test-status");
    status.textContent = "Sending…";
    const contact = $("preview-contact").value;
    const answer = await Nurture.request(`${data.api}/${data.template.id}/test-send`, {
      method: "POST",
      json: { to: $("test-to").value, contact_id: contact ? Number(contact) : null },
    });
    status.textContent = answer.ok
      ? `Sent (${answer.body.status}) — the saved version, not unsaved edits.`
      : answer.body?.error?.details?.[0]?.message || answer.body?.error?.message || "failed";
  });

  refresh();
})();
