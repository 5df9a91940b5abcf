// Behaviour every page shares. Pages work without it; it adds confirmations, shortcuts
// and a fetch helper that sends the CSRF token.
"use strict";

const Nurture = (() => {
  const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // fetch() for our own endpoints: same-origin cookies, JSON in and out, and the CSRF
  // header on every state-changing request (the API refuses cookie calls without it).
  async function request(url, { method = "GET", json } = {}) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken();
    if (json !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: json === undefined ? undefined : JSON.stringify(json),
    });
    const body = response.status === 204 ? null : await response.json().catch(() => null);
    return { status: response.status, ok: response.ok, body };
  }

  // <form data-confirm="Really?">: ask before submitting.
  function confirmForms(root) {
    root.addEventListener("submit", (event) => {
      const message = event.target.dataset?.confirm;
      if (message && !window.confirm(message)) event.preventDefault();
    });
  }

  // <select data-autosubmit>: submit its form when it changes (filters).
  function autoSubmit(root) {
    root.addEventListener("change", (event) => {
      if (event.target.matches("[data-autosubmit]")) event.target.form?.requestSubmit();
    });
  }

  // "/" jumps to the page's search box, unless the user is typing somewhere.
  function searchShortcut() {
    document.addEventListener("keydown", (event) => {
      if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
      const typing = event.target.closest?.("input, textarea, select, [contenteditable]");
      const search = document.querySelector("[data-search]");
      if (!typing && search) {
        event.preventDefault();
        search.focus();
        search.select();
      }
    });
  }

  // <button data-copy="#id">: copy that element's text to the clipboard.
  function copyButtons(root) {
    root.addEventListener("click", async (event) => {
      const button = event.target.closest("[data-copy]");
      if (!button) return;
      const source = document.querySelector(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select and copy by hand";
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    confirmForms(document);
    autoSubmit(document);
    searchShortcut();
    copyButtons(document);
  });

  return { request, csrfToken };
})();
window.Nurture = Nurture;
