// bodycam base: live alerts over server-sent events. Data from the server is only ever set with
// textContent or as an attribute value, never parsed as HTML.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
  const box = document.getElementById("alerts");
  const outage = document.getElementById("outage");
  const soundButton = document.getElementById("sound");
  const shown = new Map();
  let audio = null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function beep() {
    // a two-tone alarm from the Web Audio API (no sound file to fetch); "blocked" until the
    // browser allows audio (a click on "Enable sound")
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state !== "running") audio.resume();
      if (audio.state !== "running") {
        soundButton.hidden = false;
        return "blocked";
      }
      const t0 = audio.currentTime;
      [880, 660, 880].forEach(function (f, i) {
        const o = audio.createOscillator();
        const g = audio.createGain();
        o.frequency.value = f;
        g.gain.value = 0.2;
        o.connect(g).connect(audio.destination);
        o.start(t0 + i * 0.25);
        o.stop(t0 + i * 0.25 + 0.2);
      });
      return "played";
    } catch (e) {
      return "unavailable";
    }
  }

  if (soundButton) {
    soundButton.addEventListener("click", function () {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      audio.resume().then(function () { soundButton.hidden = true; });
    });
  }

  function place(loc) {
    if (!loc || typeof loc.lat !== "number" || typeof loc.lon !== "number") return "no location";
    return loc.lat.toFixed(5) + ", " + loc.lon.toFixed(5);
  }

  function sources(ev) {
    if (!ev || typeof ev !== "object") return "";
    return Object.keys(ev).sort().map(function (k) { return k + " " + ev[k]; }).join(", ");
  }

  function addAlert(a, sound) {
    if (shown.has(a.n)) return;
    const div = el("div", "alert");
    div.setAttribute("role", "alert");
    div.dataset.n = String(a.n);
    div.dataset.marker = String(a.marker);
    div.dataset.receivedNs = String(a.received_ns);
    div.dataset.shownMs = String(performance.timeOrigin + performance.now());
    div.appendChild(el("strong", "what", String(a.kind).toUpperCase()));
    div.appendChild(el("span", "device", a.device));
    div.appendChild(el("span", "time", a.t));
    div.dataset.kind = String(a.kind);
    // a marker whose signature did not verify with a registered key: shown, and said so
    if (a.verified === false) {
      div.classList.add("unverified");
      div.appendChild(el("span", "unverified", "UNVERIFIED" + (typeof a.signature === "string" ? " (" + a.signature + ")" : "")));
    }
    if (typeof a.confidence === "number") div.appendChild(el("span", "conf", "conf " + a.confidence.toFixed(2)));
    if (typeof a.detail === "string") div.appendChild(el("span", "detail", a.detail));
    else div.appendChild(el("span", "where", place(a.location)));
    const src = sources(a.evidence);
    if (src) div.appendChild(el("span", "sources", src));
    const link = el("a", "details", "details");
    link.setAttribute("href", typeof a.href === "string" && a.href.charAt(0) === "/" && a.href.charAt(1) !== "/"
      ? a.href : "/markers/" + encodeURIComponent(a.marker));
    div.appendChild(link);
    const ack = el("button", "ack", "Acknowledge");
    ack.type = "button";
    ack.addEventListener("click", function () { acknowledge(a.n, ack); });
    div.appendChild(ack);
    box.prepend(div);
    shown.set(a.n, div);
    div.dataset.sound = sound ? beep() : "none";
  }

  function removeAlert(n) {
    const div = shown.get(n);
    if (div) { div.remove(); shown.delete(n); }
  }

  function acknowledge(n, button) {
    button.disabled = true;
    fetch("/alerts/" + encodeURIComponent(n) + "/ack", {
      method: "POST",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
      credentials: "same-origin",
    }).then(function (r) {
      if (r.ok) { removeAlert(n); return; }
      button.disabled = false;
      if (r.status === 401) { window.location = "/login"; return; }
      showOutage("acknowledging failed (" + r.status + "); try again");
    }).catch(function () {
      button.disabled = false;
      showOutage("base is not reachable; acknowledging failed");
    });
  }

  function showOutage(text) { outage.textContent = text; outage.hidden = false; }
  function hideOutage() { outage.textContent = ""; outage.hidden = true; }

  if (!box) return;
  const es = new EventSource("/events");
  function on(type, fn) {
    es.addEventListener(type, function (e) {
      let data;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      fn(data);
    });
  }
  on("snapshot", function (d) {
    const open = new Set(d.alerts.map(function (a) { return a.n; }));
    Array.from(shown.keys()).forEach(function (n) { if (!open.has(n)) removeAlert(n); });
    d.alerts.forEach(function (a, i) { addAlert(a, i === d.alerts.length - 1); });
    if (d.outage) showOutage(d.outage); else hideOutage();
    document.body.dataset.live = "yes";
  });
  on("alert", function (a) { addAlert(a, true); });
  on("ack", function (d) { removeAlert(d.n); });
  on("outage", function (d) { showOutage(d.message); });
  on("restored", function () { hideOutage(); });
  es.onerror = function () {
    document.body.dataset.live = "no";
    if (es.readyState === EventSource.CLOSED) {
      showOutage("the live connection to base ended; reload the page (or log in again)");
    } else {
      showOutage("connection to base lost; reconnecting…");
    }
  };
})();
