// callgrid console: tabs, live panels over server-sent events, and forms posted as JSON.
// Hand-written and dependency-free, so the console works offline.
(function () {
  "use strict";

  // ---- tabs: one section shown at a time, chosen by the address's #fragment
  function showTab() {
    var id = (location.hash || "#calls").slice(1);
    var sections = document.querySelectorAll("section.tab");
    var found = false;
    sections.forEach(function (s) { if (s.id === id) { found = true; } });
    if (!found) { id = "calls"; }
    sections.forEach(function (s) { s.hidden = s.id !== id; });
    document.querySelectorAll("#tabs a").forEach(function (a) {
      a.classList.toggle("active", a.dataset.tab === id);
    });
  }
  window.addEventListener("hashchange", showTab);
  showTab();

  // ---- live panels: the server sends a panel's HTML whenever it changes
  var pending = {};

  function typingIn(el) {
    var active = document.activeElement;
    return active && el.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
  }

  function swap(name, html) {
    document.querySelectorAll('[data-live="' + name + '"]').forEach(function (el) {
      if (typingIn(el)) { pending[name] = html; return; }  // applied when the field loses focus
      var open = {};
      el.querySelectorAll("details[data-key]").forEach(function (d) { open[d.dataset.key] = d.open; });
      el.innerHTML = html;
      el.querySelectorAll("details[data-key]").forEach(function (d) {
        if (open[d.dataset.key] !== undefined) { d.open = open[d.dataset.key]; }
      });
    });
  }

  document.addEventListener("focusout", function () {
    setTimeout(function () {
      Object.keys(pending).forEach(function (name) {
        var html = pending[name];
        delete pending[name];
        swap(name, html);
      });
    }, 0);
  });

  var status = document.getElementById("status");
  var names = [];
  document.querySelectorAll("[data-live]").forEach(function (el) {
    if (names.indexOf(el.dataset.live) < 0) { names.push(el.dataset.live); }
  });

  function connect() {
    var source = new EventSource("/console/stream");
    names.forEach(function (name) {
      source.addEventListener(name, function (e) { swap(name, e.data); });
    });
    source.onopen = function () { status.className = "live"; status.title = "live"; };
    source.onerror = function () {
      status.className = "down";
      status.title = "reconnecting…";
      if (source.readyState === EventSource.CLOSED) {
        // 401 (logged out elsewhere) closes the stream for good: back to the login page.
        fetch("/console/panels/clock", { credentials: "same-origin" }).then(function (r) {
          if (r.status === 401) { location.href = "/console/login"; } else { setTimeout(connect, 2000); }
        });
      }
    };
  }
  connect();

  // ---- actions: every form.act posts its fields as JSON, with the console's header
  var flash = document.getElementById("flash");
  var flashTimer = null;

  function say(text, ok) {
    flash.textContent = text;
    flash.className = ok ? "ok" : "error";
    clearTimeout(flashTimer);
    flashTimer = setTimeout(function () { flash.className = ""; flash.textContent = ""; }, ok ? 4000 : 12000);
  }

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList || !form.classList.contains("act")) { return; }
    e.preventDefault();
    var body = {};
    new FormData(form).forEach(function (value, key) { body[key] = value; });
    if (e.submitter && e.submitter.name) { body[e.submitter.name] = e.submitter.value; }
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.dataset.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Callgrid-Console": "1" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (answer) {
        if (response.ok) { say(answer.message || "Done.", true); }
        else if (response.status === 401) { location.href = "/console/login"; }
        else { say((answer.error && (answer.error.code + ": " + answer.error.message)) || response.statusText, false); }
      });
    }).catch(function (err) {
      say("callgrid did not answer: " + err, false);
    }).finally(function () {
      buttons.forEach(function (b) { b.disabled = false; });
    });
  });
})();
