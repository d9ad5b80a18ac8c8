// bodycam base: the map. Last positions of the devices and the shot markers, from /map.json, on
// Leaflet (vendored in /static/leaflet/). With a tile URL configured (`serve --tile-url`) the tiles
// come from that server; without one (a base offline) the points are drawn on a plain lat/lon grid.
// Server data is only ever set as text (textContent) or numbers, never parsed as HTML.
"use strict";
(function () {
  const box = document.getElementById("map");
  if (!box || typeof L === "undefined") return;
  const tiles = box.dataset.tiles || "";
  const map = L.map(box, { preferCanvas: false, worldCopyJump: true }).setView([0, 0], 2);
  const status = document.getElementById("map-status");
  const areaButton = document.getElementById("search-area");

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  if (tiles) {
    L.tileLayer(tiles, { attribution: box.dataset.attribution || "", maxZoom: 19 }).addTo(map);
  } else {
    box.classList.add("no-tiles");
    const grid = L.layerGroup().addTo(map);
    function step(span) {
      const steps = [30, 10, 5, 1, 0.5, 0.1, 0.05, 0.01, 0.005, 0.001, 0.0005, 0.0001];
      for (const s of steps) if (span / s >= 4) return s;
      return 0.0001;
    }
    function drawGrid() {
      grid.clearLayers();
      const b = map.getBounds();
      const s = step(Math.min(b.getNorth() - b.getSouth(), b.getEast() - b.getWest()));
      const style = { color: "#9aa5b1", weight: 1, opacity: 0.6, interactive: false };
      for (let lat = Math.ceil(b.getSouth() / s) * s; lat <= b.getNorth(); lat += s) {
        grid.addLayer(L.polyline([[lat, b.getWest()], [lat, b.getEast()]], style));
      }
      for (let lon = Math.ceil(b.getWest() / s) * s; lon <= b.getEast(); lon += s) {
        grid.addLayer(L.polyline([[b.getSouth(), lon], [b.getNorth(), lon]], style));
      }
    }
    map.on("moveend", drawGrid);
  }

  function popup(lines) {
    const div = el("div", "popup");
    lines.forEach(function (line, i) { div.appendChild(el(i === 0 ? "strong" : "div", null, line)); });
    return div;
  }

  function ok(loc) {
    return loc && typeof loc.lat === "number" && typeof loc.lon === "number";
  }

  const points = [];
  function show(data) {
    const layer = L.featureGroup().addTo(map);
    // devices first, shots on top (a camera stands where it fired)
    (data.devices || []).forEach(function (d) {
      if (!ok(d.location)) return;
      const online = d.state === "online";
      const c = L.circleMarker([d.location.lat, d.location.lon], {
        radius: 7, color: online ? "#0b3d91" : "#5b6470", weight: 2,
        fillColor: online ? "#1e88e5" : "#c9d1d9", fillOpacity: 0.9, className: "device",
      });
      c.bindTooltip(String(d.device), { permanent: true, direction: "right", className: "device-label" });
      c.bindPopup(popup([String(d.device), d.state + (d.recording ? ", recording" : ""),
        "last seen " + (d.last_seen || "never"), "position from " + (d.source || "?")]));
      c.on("add", function () {
        const e = c.getElement();
        if (e) { e.dataset.device = String(d.device); e.dataset.state = String(d.state); }
      });
      c.addTo(layer);
      points.push([d.location.lat, d.location.lon]);
    });
    (data.shots || []).forEach(function (m) {
      if (!ok(m.location)) return;
      const c = L.circleMarker([m.location.lat, m.location.lon], {
        radius: 8, color: "#7f0000", weight: 2, fillColor: "#e53935", fillOpacity: 0.9, className: "shot",
      });
      c.bindPopup(popup([m.kind.toUpperCase() + " " + m.device + " #" + m.seq, m.t,
        m.location.lat.toFixed(5) + ", " + m.location.lon.toFixed(5)]));
      c.on("add", function () {
        const e = c.getElement();
        if (e) { e.dataset.marker = String(m.id); e.dataset.device = String(m.device); }
      });
      c.addTo(layer);
      points.push([m.location.lat, m.location.lon]);
    });
    if (points.length) map.fitBounds(L.latLngBounds(points).pad(0.3), { maxZoom: 16 });
    else map.fire("moveend");
    if (status) status.textContent = (data.devices || []).filter(function (d) { return ok(d.location); }).length +
      " device(s) and " + (data.shots || []).length + " shot marker(s) with a position";
    box.dataset.ready = "yes";
  }

  if (areaButton) {
    areaButton.addEventListener("click", function () {
      const b = map.getBounds();
      function clamp(x, lim) { return Math.max(-lim, Math.min(lim, x)).toFixed(5); }
      const wide = b.getEast() - b.getWest() >= 360;
      const west = wide ? -180 : L.Util.wrapNum(b.getWest(), [-180, 180], true);
      const east = wide ? 180 : L.Util.wrapNum(b.getEast(), [-180, 180], true);
      const area = [clamp(b.getSouth(), 90), clamp(west, 180), clamp(b.getNorth(), 90), clamp(east, 180)];
      window.location = "/markers?area=" + encodeURIComponent(area.join(","));
    });
  }

  fetch(box.dataset.source, { credentials: "same-origin", headers: { "Accept": "application/json" } })
    .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
    .then(show)
    .catch(function (e) { if (status) status.textContent = "could not load the positions (" + e.message + ")"; });
})();
