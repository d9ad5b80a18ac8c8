// The review page: play a recording from any marker, step by frames, and label it through the JSON API.
// Data is set only with textContent and attributes (markers carry text a camera wrote).
(function () {
  "use strict";
  var root = document.getElementById("review");
  if (!root) { return; }
  var video = document.getElementById("video");
  var device = root.getAttribute("data-device");
  var recording = root.getAttribute("data-recording");
  var fps = parseFloat(root.getAttribute("data-fps"));
  var frames = parseInt(root.getAttribute("data-frames"), 10);
  var api = "/api/review/v1/recordings/" + encodeURIComponent(device) + "/" + encodeURIComponent(recording);
  var csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
  var state = null;
  var selected = 0;
  var spanStart = null;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function button(text, act, fn) {
    var b = el("button", "small", text);
    b.type = "button";
    b.setAttribute("data-act", act);
    b.addEventListener("click", fn);
    return b;
  }
  function utc(ns) { return new Date(ns / 1e6).toISOString().replace("T", " ").replace("Z", ""); }
  function say(text, bad) {
    var s = document.getElementById("status");
    s.textContent = text;
    s.className = bad ? "error" : "hint";
  }

  function frame() { return Math.max(0, Math.min(frames - 1, Math.floor(video.currentTime * fps + 1e-4))); }
  function seek(f) {
    f = Math.max(0, Math.min(frames - 1, f));
    video.pause();
    video.currentTime = (f + 0.5) / fps; // the middle of the frame: shows frame f whatever the rounding
    show(f);
  }
  function show(f) {
    document.getElementById("frame").textContent = String(f === undefined ? frame() : f);
    document.getElementById("time").textContent = video.currentTime.toFixed(3);
    root.setAttribute("data-frame", String(f === undefined ? frame() : f));
  }

  function verdictOf(marker) {
    var found = null;
    state.labels.forEach(function (l) { if (l.marker === marker) { found = l; } });
    return found;
  }

  function render() {
    var tbody = root.querySelector("table.detections tbody");
    tbody.textContent = "";
    state.detections.forEach(function (d, i) {
      var v = verdictOf(d.marker);
      var tr = el("tr", (i === selected ? "selected " : "") + (v ? "verdict-" + v.kind : "undecided"));
      tr.setAttribute("data-marker", d.marker);
      tr.appendChild(el("td", "frame", d.frame));
      tr.appendChild(el("td", "kind", d.kind));
      tr.appendChild(el("td", "", d.confidence === null ? "" : d.confidence.toFixed(2)));
      tr.appendChild(el("td", "model", d.model));
      tr.appendChild(el("td", "verdict", v ? (v.kind === "move" ? "moved to " + v.frame : v.kind + "ed") + " by " + v.by : "undecided"));
      var td = el("td");
      td.appendChild(button("Play from here", "goto", function () { selected = i; render(); seek(Math.max(0, d.frame - Math.round(fps))); video.play(); }));
      td.appendChild(button("Show frame", "show", function () { selected = i; render(); seek(d.frame); }));
      tr.appendChild(td);
      tbody.appendChild(tr);
    });
    var lb = root.querySelector("table.labels tbody");
    lb.textContent = "";
    state.labels.forEach(function (l) {
      var tr = el("tr", "label-" + l.kind);
      tr.setAttribute("data-n", String(l.n));
      tr.appendChild(el("td", "", l.n));
      tr.appendChild(el("td", "kind", l.kind));
      tr.appendChild(el("td", "frames", l.end_frame === null ? l.frame : l.frame + "–" + l.end_frame));
      tr.appendChild(el("td", "by", l.by));
      tr.appendChild(el("td", "", utc(l.t_ns)));
      tr.appendChild(el("td", "", l.replaces === null ? "" : "#" + l.replaces));
      tr.appendChild(el("td", "note", l.note));
      var td = el("td");
      td.appendChild(button("Go", "goto", function () { seek(l.frame); }));
      if (l.kind === "add" || l.kind === "shot_free") {
        td.appendChild(button("Withdraw", "withdraw", function () { post({kind: "withdraw", replaces: l.n}); }));
      }
      tr.appendChild(td);
      lb.appendChild(tr);
    });
    var hist = root.querySelector("table.history tbody");
    hist.textContent = "";
    state.history.slice().reverse().forEach(function (l) {
      var tr = el("tr");
      [l.n, l.kind, l.marker || "", l.end_frame === null ? l.frame : l.frame + "–" + l.end_frame, l.by,
       utc(l.t_ns), l.replaces === null ? "" : "#" + l.replaces].forEach(function (x) { tr.appendChild(el("td", "", x)); });
      hist.appendChild(tr);
    });
    root.setAttribute("data-labels", String(state.labels.length));
    root.setAttribute("data-history", String(state.history.length));
    root.setAttribute("data-reviewed", state.progress.reviewed ? "yes" : "no");
  }

  function chapters() {
    var list = root.querySelector("ul.chapters");
    var track = video.textTracks[0];
    if (!track || !track.cues) { return; }
    list.textContent = "";
    Array.prototype.forEach.call(track.cues, function (cue) {
      var li = el("li");
      li.appendChild(button(cue.startTime.toFixed(3) + " s", "chapter", function () {
        seek(Math.round(cue.startTime * fps)); // cue times are frame times rounded to the ms
      }));
      li.appendChild(el("span", "", " " + cue.text));
      list.appendChild(li);
    });
    root.setAttribute("data-chapters", String(track.cues.length));
  }

  function load() {
    return fetch(api, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (s) {
        state = s;
        selected = Math.min(selected, Math.max(0, s.detections.length - 1));
        render();
        root.setAttribute("data-ready", "yes");
      })
      .catch(function (e) { say("Cannot load the labels: " + e.message, true); });
  }

  function post(label) {
    say("saving…");
    return fetch(api + "/labels", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(label)
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.error || ("HTTP " + r.status)); }
        return body;
      });
    }).then(function (l) {
      say("saved #" + l.n + " (" + l.kind + ")");
      return load();
    }).catch(function (e) { say(e.message, true); });
  }

  function current() { return state && state.detections[selected]; }
  var actions = {
    "prev-frame": function (ev) { seek(frame() - (ev && ev.shiftKey ? 10 : 1)); },
    "next-frame": function (ev) { seek(frame() + (ev && ev.shiftKey ? 10 : 1)); },
    "play": function () { if (video.paused) { video.play(); } else { video.pause(); } },
    "confirm": function () { var d = current(); if (d) { post({kind: "confirm", marker: d.marker}); } },
    "reject": function () { var d = current(); if (d) { post({kind: "reject", marker: d.marker}); } },
    "move": function () { var d = current(); if (d) { post({kind: "move", marker: d.marker, frame: frame()}); } },
    "add": function () { post({kind: "add", frame: frame()}); },
    "span": function () {
      var f = frame();
      if (spanStart === null) {
        spanStart = f;
        document.getElementById("span-state").textContent = "shot-free span from frame " + f + ": press s at its end";
        return;
      }
      var a = Math.min(spanStart, f), b = Math.max(spanStart, f);
      spanStart = null;
      document.getElementById("span-state").textContent = "";
      post({kind: "shot_free", frame: a, end_frame: b});
    },
    "next": function () { if (state && state.detections.length) { selected = (selected + 1) % state.detections.length; render(); seek(current().frame); } },
    "prev": function () { if (state && state.detections.length) { selected = (selected - 1 + state.detections.length) % state.detections.length; render(); seek(current().frame); } },
    "cancel": function () { spanStart = null; document.getElementById("span-state").textContent = ""; }
  };
  var keys = {",": "prev-frame", "<": "prev-frame", ".": "next-frame", ">": "next-frame", " ": "play", "c": "confirm",
              "x": "reject", "m": "move", "a": "add", "s": "span", "n": "next", "p": "prev", "Escape": "cancel"};

  root.querySelectorAll(".buttons button[data-act]").forEach(function (b) {
    b.addEventListener("click", function (ev) { actions[b.getAttribute("data-act")](ev); });
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var t = ev.target && ev.target.tagName;
    if (t === "INPUT" || t === "TEXTAREA" || t === "SELECT") { return; }
    var act = keys[ev.key];
    if (!act) { return; }
    ev.preventDefault();
    actions[act](ev);
  });
  video.addEventListener("timeupdate", function () { show(); });
  video.addEventListener("seeked", function () { show(); });
  function metadata() { root.setAttribute("data-video", "loaded"); chapters(); }
  video.addEventListener("loadedmetadata", metadata);
  video.addEventListener("error", function () {
    var e = video.error;
    root.setAttribute("data-video", "error");
    say("The video cannot be played here" + (e ? " (media error " + e.code + (e.message ? ": " + e.message : "") + ")" : ""), true);
  });
  if (video.readyState >= 1) { metadata(); } // loaded before this script ran: the event is gone
  var trackEl = video.querySelector("track");
  if (trackEl) {
    trackEl.addEventListener("load", chapters);
    if (video.textTracks[0]) { video.textTracks[0].mode = "hidden"; }
    if (trackEl.readyState === 2) { chapters(); }
  }
  load();
}());
