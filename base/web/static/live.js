// bodycam base: pages whose <main> has data-refresh="S" re-read themselves every S seconds and swap
// in the element with id "live" (the server's own autoescaped HTML, parsed inertly by DOMParser:
// scripts in it never run, and the CSP allows none inline anyway). No reload: the alert stream and
// its sound stay as they are.
"use strict";
(function () {
  const main = document.querySelector("main[data-refresh]");
  const live = document.getElementById("live");
  if (!main || !live) return;
  const every = Math.max(1, parseInt(main.dataset.refresh, 10) || 5) * 1000;
  function tick() {
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.text(); })
      .then(function (html) {
        const doc = new DOMParser().parseFromString(html, "text/html");
        const fresh = doc.getElementById("live");
        const now = document.getElementById("live");
        if (fresh && now) now.replaceWith(document.importNode(fresh, true));
        main.dataset.refreshed = new Date().toISOString();
      })
      .catch(function (e) { main.dataset.refreshError = String(e); /* the alert stream shows outages */ });
  }
  setInterval(tick, every);
})();
