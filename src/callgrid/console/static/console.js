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

// ---- softphone: the browser is a party of a call, over WebRTC with the server's media plane
(function () {
  "use strict";
  var form = document.getElementById("softphone-form");
  if (!form) { return; }
  var panel = document.getElementById("softphone");
  var state = document.getElementById("softphone-state");
  var incoming = document.getElementById("softphone-incoming");
  var audio = document.getElementById("softphone-audio");
  var meter = document.getElementById("softphone-level");
  var flash = document.getElementById("flash");
  var current = null;  // {id, pc, stream, timer, poll}

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Callgrid-Console": "1" },
      body: JSON.stringify(body || {})
    }).then(function (response) {
      return response.json().then(function (answer) {
        if (!response.ok) {
          throw new Error((answer.error && (answer.error.code + ": " + answer.error.message)) || response.statusText);
        }
        return answer;
      });
    });
  }

  function show(text, ok) {
    flash.textContent = text;
    flash.className = ok ? "ok" : "error";
  }

  function setState(text) {
    state.textContent = text;
    state.className = "badge " + text;
    panel.dataset.state = text;
  }

  function gathered(pc) {
    // aiortc takes every candidate in the offer (no trickle): wait for gathering to finish.
    if (pc.iceGatheringState === "complete") { return Promise.resolve(); }
    return new Promise(function (resolve) {
      var done = function () {
        if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); }
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);
    });
  }

  function listen(stream) {
    // How loud what the party hears is, for people (the meter) and tests (data-heard-peak, data-heard-energy).
    var context = new (window.AudioContext || window.webkitAudioContext)();
    var analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(stream).connect(analyser);
    var samples = new Float32Array(analyser.fftSize);
    var peak = 0, energy = 0;
    return setInterval(function () {
      analyser.getFloatTimeDomainData(samples);
      var sum = 0;
      for (var i = 0; i < samples.length; i++) { sum += samples[i] * samples[i]; }
      var rms = Math.sqrt(sum / samples.length);
      peak = Math.max(peak, rms);
      energy += rms * rms;
      meter.value = Math.min(1, rms * 4);
      panel.dataset.heardPeak = peak.toFixed(4);
      panel.dataset.heardEnergy = energy.toFixed(6);
    }, 50);
  }

  function end(reason) {
    incoming.hidden = true;
    if (!current) { setState(reason || "ended"); return; }
    clearInterval(current.timer);
    clearInterval(current.poll);
    current.stream.getTracks().forEach(function (t) { t.stop(); });
    current.pc.close();
    current = null;
    setState(reason || "ended");
  }

  // Microphone, peer connection, offer; the server answers at `url` (placing a call, or registering).
  function connect(url, body, then) {
    if (current) { show("The softphone is already in use: hang up first.", false); return; }
    panel.hidden = false;
    setState("starting");
    navigator.mediaDevices.getUserMedia({ audio: true }).then(function (stream) {
      var pc = new RTCPeerConnection({ iceServers: [] });
      current = { id: null, pc: pc, stream: stream, timer: null, poll: null };
      stream.getTracks().forEach(function (t) { pc.addTrack(t, stream); });
      pc.addEventListener("track", function (event) {
        var remote = event.streams[0] || new MediaStream([event.track]);
        audio.srcObject = remote;
        audio.play().catch(function () { /* autoplay refused: the meter still shows what is heard */ });
        current.timer = listen(remote);
      });
      pc.addEventListener("connectionstatechange", function () {
        if (pc.connectionState === "failed" || pc.connectionState === "closed") { end("ended"); }
      });
      return pc.createOffer().then(function (offer) {
        return pc.setLocalDescription(offer);
      }).then(function () {
        return gathered(pc);
      }).then(function () {
        body.sdp = pc.localDescription.sdp;
        return post(url, body);
      }).then(function (answer) {
        current.id = answer.id;
        show(answer.message, true);
        return pc.setRemoteDescription({ type: "answer", sdp: answer.sdp }).then(function () { then(answer); });
      });
    }).catch(function (err) {
      show(String(err.message || err), false);
      end("failed");
    });
  }

  // The server's view of the session: calling, waiting, ringing (who calls), inCall, ended.
  function follow() {
    current.poll = setInterval(function () {
      if (!current || !current.id) { return; }
      fetch("/console/softphone/" + current.id, { credentials: "same-origin" }).then(function (r) {
        if (r.status === 404) { end("ended"); return null; }
        return r.json();
      }).then(function (s) {
        if (!s || !current) { return; }
        if (s.state === "ended") { end("ended"); return; }
        setState(s.state);
        panel.dataset.serverCallId = s.serverCallId || "";
        incoming.hidden = s.state !== "ringing";
        document.getElementById("softphone-caller").textContent = s.from || "";
      });
    }, 300);
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var to = form.elements.to.value;
    if (!to) { show("Who to call? Fill in To.", false); return; }
    connect("/console/softphone/calls", { from: form.elements.from.value, to: to }, function () { follow(); });
  });

  document.getElementById("softphone-register").addEventListener("click", function () {
    connect("/console/softphone/register", { as: form.elements.from.value }, function () { follow(); });
  });

  function act(what) {
    if (current && current.id) {
      post("/console/softphone/" + current.id + "/" + what).then(function (a) { show(a.message, true); })
        .catch(function (err) { show(err.message, false); });
    }
  }
  document.getElementById("softphone-answer").addEventListener("click", function () { act("answer"); });
  document.getElementById("softphone-decline").addEventListener("click", function () { act("decline"); });

  panel.addEventListener("click", function (e) {
    var key = e.target.dataset && e.target.dataset.key;
    if (key && current && current.id) {
      post("/console/softphone/" + current.id + "/dtmf", { tones: key }).catch(function (err) { show(err.message, false); });
    }
  });

  document.getElementById("softphone-hangup").addEventListener("click", function () {
    if (!current || !current.id) { end("ended"); return; }
    post("/console/softphone/" + current.id + "/hangUp").then(function () { end("ended"); })
      .catch(function (err) { show(err.message, false); end("ended"); });
  });
})();
