/* Nurture site tracking and form helper. Embed:
 *   <script src="https://NURTURE/t/nurture.js" async></script>
 * API (calls made before the script loads are queued by the stub in docs/tracking.md):
 *   nurture.track("cart_abandoned", {value: 42});   custom event
 *   nurture.page();                                   page view (sent once on load)
 *   nurture.identify({email: "ada@example.com", hash: "<from your server>"});
 *                                                     attach this visitor to a contact: hash
 *                                                     is hex HMAC-SHA256(identity secret,
 *                                                     lower-cased email); without a valid
 *                                                     one the visitor stays anonymous
 */
(function () {
  "use strict";
  if (window.nurture && window.nurture.loaded) return;
  var script = document.currentScript || document.querySelector('script[src*="/t/nurture.js"]');
  var base = new URL(script.src, location.href).origin;
  var VISITOR = "nurture_vid", IDENTITY = "nurture_id";

  function load(key) {
    try { var v = window.localStorage.getItem(key); if (v) return v; } catch (e) { /* private mode */ }
    var m = document.cookie.match(new RegExp("(?:^|; )" + key + "=([A-Za-z0-9_-]+)"));
    return m ? m[1] : null;
  }
  function store(key, value) {
    try { window.localStorage.setItem(key, value); } catch (e) { /* private mode */ }
    document.cookie = key + "=" + value + "; path=/; max-age=31536000; SameSite=Lax" +
      (location.protocol === "https:" ? "; Secure" : "");
  }
  function randomId() {
    var bytes = new Uint8Array(16), out = "";
    window.crypto.getRandomValues(bytes);
    for (var i = 0; i < bytes.length; i++) out += ("0" + bytes[i].toString(16)).slice(-2);
    return out;
  }

  var visitor = load(VISITOR);
  if (!visitor || !/^[A-Za-z0-9_-]{16,64}$/.test(visitor)) { visitor = randomId(); store(VISITOR, visitor); }
  // A visitor arriving from a tracked email link: the click redirect added ?nurture_id=…
  var here = new URL(location.href);
  var fromLink = here.searchParams.get(IDENTITY);
  if (fromLink && /^[A-Za-z0-9_-]{32}$/.test(fromLink)) {
    store(IDENTITY, fromLink);
    here.searchParams.delete(IDENTITY);
    try { history.replaceState(history.state, "", here.toString()); } catch (e) { /* sandboxed */ }
  }
  var identity = load(IDENTITY);

  function send(body) {
    if (identity) body.identity = identity;
    // text/plain: a "simple" cross-origin request, no preflight; the server checks Origin.
    return window.fetch(base + "/t/collect", {
      method: "POST", mode: "cors", credentials: "omit", keepalive: true,
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify(body)
    }).catch(function () { /* tracking never breaks the page */ });
  }

  var queue = [], timer = null;
  function flush() {
    timer = null;
    while (queue.length) send({visitor_id: visitor, events: queue.splice(0, 20)});
  }
  function cut(value) { return String(value || "").slice(0, 500); }

  var api = {
    loaded: true,
    track: function (name, properties) {
      queue.push({name: String(name), properties: properties || {}});
      if (!timer) timer = setTimeout(flush, 0);
    },
    page: function () {
      api.track("page.viewed", {url: cut(location.href), path: cut(location.pathname),
        title: cut(document.title), referrer: cut(document.referrer)});
    },
    identify: function (traits) {
      flush();
      var who = {email: String((traits || {}).email || "")};
      if ((traits || {}).hash) who.hash = String(traits.hash);
      return send({visitor_id: visitor, identify: who});
    },
    visitorId: function () { return visitor; }
  };

  function enhance(form) {
    var hidden = document.createElement("input");
    hidden.type = "hidden"; hidden.name = "nurture_visitor"; hidden.value = visitor;
    form.appendChild(hidden);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var note = form.querySelector(".nurture-message");
      if (!note) { note = document.createElement("p"); note.className = "nurture-message"; form.appendChild(note); }
      window.fetch(form.action, {
        method: "POST", mode: "cors", credentials: "omit",
        headers: {"Accept": "application/json"},
        body: new URLSearchParams(new FormData(form))
      }).then(function (response) {
        return response.json().then(function (data) { return {ok: response.ok, data: data}; });
      }).then(function (result) {
        if (result.ok) { note.textContent = result.data.message; form.reset(); return; }
        var details = (result.data.error && result.data.error.details) || [];
        note.textContent = details.length
          ? details.map(function (d) { return d.path + ": " + d.message; }).join("; ")
          : (result.data.error ? result.data.error.message : "Something went wrong");
      }).catch(function () { note.textContent = "Could not send the form; please try again."; });
    });
  }

  var waiting = (window.nurture && window.nurture.q) || [];
  window.nurture = api;
  for (var i = 0; i < waiting.length; i++) {
    var call = waiting[i];
    if (api[call[0]]) api[call[0]].apply(null, Array.prototype.slice.call(call, 1));
  }
  if (!script.hasAttribute("data-no-pageview")) api.page();
  var forms = document.querySelectorAll("form[data-nurture-form]");
  for (var f = 0; f < forms.length; f++) enhance(forms[f]);
})();
