/* GeoLangBind map: a Streamlit component (plain postMessage protocol, no build step).
 *
 * Everything it loads comes from the folder Streamlit serves it from: Leaflet and its plugins
 * (fetched from npm at install time), country outlines, and the basemap itself, which is the
 * indexed imagery (one overview picture per scene, placed by its four corners). A web basemap
 * is added only when the page asks for it.
 *
 * Python -> map (args): data (URL of the scenes list), results (GeoJSON), results_key,
 *   region (GeoJSON geometry or null), region_key, query_footprint (GeoJSON geometry of an
 *   uploaded query image, or null), fit ({key, bounds, max_zoom}), web_basemap, height.
 *
 * What the analyst sees: results are fitted inside the part of the map no control covers
 * (FIT_PAD); footprints stacked on one place share one label ("3 · 14"); the selected result
 * is an outline over its own scene's overview picture (drawn above the others), its label
 * shows its rank first; the region searched stays drawn; a locator inset shows where the map
 * is when it is zoomed in past the imagery's context.
 * Map -> Python (component value): {event: "region", geometry} or {event: "select", tile_id},
 *   each with a fresh `seq` so the page handles it once.
 */
(function () {
  "use strict";

  var state = { data: null, resultsKey: null, regionKey: null, fitKey: null, pendingFit: null,
                height: 0, n: 0, scenes: [], selected: null, queryKey: null };
  // Room left around fitted results for the controls: draw toolbar (top left), layer switch
  // (top right), info box and scale (bottom left), locator inset (bottom right).
  var FIT_PAD = { topLeft: [56, 20], bottomRight: [56, 104] };

  function post(type, extra) {
    var msg = { isStreamlitMessage: true, type: type };
    for (var k in extra) { msg[k] = extra[k]; }
    window.parent.postMessage(msg, "*");
  }
  function send(value) {
    state.n += 1;
    value.seq = Date.now() + "-" + state.n;
    post("streamlit:setComponentValue", { value: value, dataType: "json" });
  }
  function esc(s) {
    return String(s === undefined || s === null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  // --- map and panes (bottom to top) ---------------------------------------------------
  var map = L.map("map", { minZoom: 1, maxZoom: 20, zoomSnap: 0.5, worldCopyJump: false });
  map.attributionControl.setPrefix("Leaflet");
  map.setView([20, 0], 2);
  [["glb-land", 150], ["glb-imagery", 220], ["glb-selimg", 230], ["glb-outlines", 410],
   ["glb-results", 420], ["glb-region", 430], ["glb-labels", 610]].forEach(function (p) {
    map.createPane(p[0]).style.zIndex = p[1];
  });
  map.getPane("glb-land").style.pointerEvents = "none";
  map.getPane("glb-imagery").style.pointerEvents = "none";
  map.getPane("glb-selimg").style.pointerEvents = "none";

  var land = L.layerGroup().addTo(map);
  var imagery = L.layerGroup().addTo(map);
  var outlines = L.layerGroup().addTo(map);
  var results = L.layerGroup().addTo(map);
  var labels = L.layerGroup().addTo(map);
  var drawn = new L.FeatureGroup().addTo(map);
  var queryLayer = L.layerGroup().addTo(map);
  var selectedScene = null;  // the selected result's own overview, above the other imagery
  var web = null;

  L.control.layers(null, {
    "Imagery from the index": imagery, "Scene outlines": outlines, "Countries": land,
    "Results": results, "Result numbers": labels
  }, { collapsed: true, position: "topright" }).addTo(map);
  L.control.scale({ imperial: false }).addTo(map);

  var info = L.control({ position: "bottomleft" });
  info.onAdd = function () {
    this._div = L.DomUtil.create("div", "glb-info");
    this._div.id = "glb-info";
    return this._div;
  };
  info.addTo(map);
  function showInfo() {
    var loaded = state.scenes.filter(function (s) { return s.overlay; }).length;
    var nres = results.getLayers().length ? results.getLayers()[0].getLayers().length : 0;
    info._div.innerHTML = "<b>" + state.scenes.length + "</b> scenes · imagery for <b>" +
      loaded + "</b>" + (nres ? " · <b>" + nres + "</b> results" : "") +
      "<br>Draw a rectangle or polygon (top left) to search inside it.";
    document.body.dataset.scenes = state.scenes.length;
    document.body.dataset.overlays = loaded;
    document.body.dataset.results = nres;
  }

  // --- locator inset: where the map is, once zoomed in past the outlines' context ---------
  var locDiv = L.DomUtil.create("div", "glb-locator", document.body);
  locDiv.id = "glb-locator";
  var locator = L.map(locDiv, { attributionControl: false, zoomControl: false, dragging: false,
                                scrollWheelZoom: false, doubleClickZoom: false, boxZoom: false,
                                keyboard: false, touchZoom: false }).setView([20, 0], 0);
  locator.createPane("loc-land").style.zIndex = 150;  // beneath the mark
  var locMark = L.circleMarker([0, 0], { radius: 5, color: "#fff", weight: 2, fillColor: "#c92a2a",
                                         fillOpacity: 1, className: "glb-locator-mark" });
  function updateLocator() {
    var z = map.getZoom(), show = z >= 8;
    locDiv.style.display = show ? "block" : "none";
    document.body.dataset.locator = show ? "1" : "0";
    if (!show) { return; }
    locator.invalidateSize();
    var c = map.getCenter();
    locator.setView(c, 3, { animate: false });
    locMark.setLatLng(c).addTo(locator);
  }
  map.on("moveend zoomend", updateLocator);

  // --- country outlines (Natural Earth 1:110m, served locally) ---------------------------
  fetch("vendor/world-atlas/countries-110m.json").then(function (r) { return r.json(); })
    .then(function (topo) {
      var countries = topojson.feature(topo, topo.objects.countries);
      L.geoJSON(countries, {
        pane: "glb-land", interactive: false, renderer: L.canvas({ pane: "glb-land" }),
        style: { color: "#8d99a6", weight: 0.7, fillColor: "#efece4", fillOpacity: 1 }
      }).addTo(land);
      L.geoJSON(countries, { interactive: false, pane: "loc-land",
        style: { color: "#8d99a6", weight: 0.5, fillColor: "#efece4", fillOpacity: 1 }
      }).addTo(locator);
    }).catch(function () { /* orientation only; the imagery basemap does not need it */ });

  // --- scenes: outlines always, overview pictures when in view and big enough -------------
  function latlng(c) { return L.latLng(c[1], c[0]); }  // [lon, lat] -> LatLng

  function loadScenes(url) {
    fetch(url).then(function (r) { return r.json(); }).then(function (list) {
      outlines.clearLayers();
      imagery.clearLayers();
      state.scenes = list.map(function (s) {
        var ll = s.corners.map(latlng);  // TL, TR, BR, BL
        var tip = esc(s.scene) + "<br>" + esc(s.sensor) + " · " + esc(s.modality) + " · " +
          esc(s.acquired || "no date") + " · " + s.n_tiles + " tiles";
        L.polygon(ll, { pane: "glb-outlines", color: "#0b7285", weight: 1, fill: false,
                        className: "glb-scene" }).bindTooltip(tip, { sticky: true, className: "glb-tip" })
          .addTo(outlines);
        var bounds = L.latLngBounds(ll);
        // A dot marks scenes too small to see at this zoom (shown by updateImagery).
        var dot = L.circleMarker(bounds.getCenter(), {
          pane: "glb-outlines", radius: 4, color: "#0b7285", weight: 1, fillColor: "#15aabf",
          fillOpacity: 0.8, className: "glb-scene-dot"
        }).bindTooltip(tip, { className: "glb-tip" });
        return { rec: s, bounds: bounds, corners: ll, overlay: null, dot: dot };
      });
      updateImagery();
      showSelectedScene();
    }).catch(function (e) { info._div.textContent = "Could not load the scene list: " + e; });
  }

  function sidePx(bounds) {
    var a = map.latLngToContainerPoint(bounds.getNorthWest());
    var b = map.latLngToContainerPoint(bounds.getSouthEast());
    return Math.max(Math.abs(b.x - a.x), Math.abs(b.y - a.y));
  }

  function updateImagery() {
    var view = map.getBounds().pad(0.25);
    state.scenes.forEach(function (s) {
      var px = sidePx(s.bounds);
      if (px < 10 && !outlines.hasLayer(s.dot)) { outlines.addLayer(s.dot); }
      if (px >= 10 && outlines.hasLayer(s.dot)) { outlines.removeLayer(s.dot); }
      if (s.overlay || px < 12 || !view.intersects(s.bounds)) { return; }
      // Added once and kept: removing an image while it loads would abort its request.
      s.overlay = L.imageOverlay.rotated(s.rec.img, s.corners[0], s.corners[1], s.corners[3], {
        pane: "glb-imagery", interactive: false, alt: s.rec.scene
      }).on("load", showInfo).addTo(imagery);
    });
    showInfo();
  }
  map.on("moveend zoomend", updateImagery);

  // --- results ------------------------------------------------------------------------
  // The selected result's own scene overview, drawn above the other imagery: revisits of
  // the same place (other dates) lie beneath it.
  function showSelectedScene() {
    if (selectedScene) { map.removeLayer(selectedScene); selectedScene = null; }
    document.body.dataset.selectedScene = "";
    var p = state.selected;
    if (!p) { return; }
    var s = state.scenes.filter(function (x) { return x.rec.scene_id === p.scene_id; })[0];
    if (!s) { return; }
    selectedScene = L.imageOverlay.rotated(s.rec.img, s.corners[0], s.corners[1], s.corners[3], {
      pane: "glb-selimg", interactive: false, alt: s.rec.scene, className: "glb-selected-scene"
    }).addTo(map);
    document.body.dataset.selectedScene = s.rec.scene_id;
  }

  function setResults(fc) {
    results.clearLayers();
    labels.clearLayers();
    state.selected = null;
    if (!fc || !fc.features) { showSelectedScene(); showInfo(); return; }
    fc.features.forEach(function (f) { if (f.properties.selected) { state.selected = f.properties; } });
    var layer = L.geoJSON(fc, {
      pane: "glb-results",
      style: function (f) {
        // the selection is an outline: its imagery stays visible
        var sel = f.properties.selected;
        return sel ? { color: "#c92a2a", weight: 3, fill: false, className: "glb-result glb-selected" }
                   : { color: "#e8590c", weight: 1.5, fillOpacity: 0.08, className: "glb-result" };
      },
      onEachFeature: function (f, lyr) {
        var p = f.properties;
        lyr.bindTooltip("#" + p.rank + " · " + p.score + " · " + esc(p.modality) + " · " +
          esc(p.sensor) + " · " + esc(p.acquired || "no date") + "<br>" + esc(p.scene),
          { sticky: true, className: "glb-tip" });
        lyr.on("click", function () { send({ event: "select", tile_id: p.tile_id }); });
      }
    }).addTo(results);
    // One label per place: results with the same footprint (one place, several dates or
    // sensors) share it, "3 · 14 · 20 +2"; the selected one's rank comes first. Clicking it
    // selects the best of them, and the next one on each further click.
    // "One place" as the engine's diversification has it: footprints overlapping by half or
    // more (revisits differ by a pixel or two of georeferencing).
    function samePlace(a, b) {
      var w = Math.min(a.getEast(), b.getEast()) - Math.max(a.getWest(), b.getWest());
      var h = Math.min(a.getNorth(), b.getNorth()) - Math.max(a.getSouth(), b.getSouth());
      if (w <= 0 || h <= 0) { return false; }
      var area = function (x) { return (x.getEast() - x.getWest()) * (x.getNorth() - x.getSouth()); };
      return w * h >= 0.5 * (area(a) + area(b) - w * h);
    }
    var groups = [];
    layer.eachLayer(function (lyr) {
      var bb = lyr.getBounds();
      var g = groups.filter(function (x) { return samePlace(x.bounds, bb); })[0];
      if (!g) { g = { bounds: bb, center: bb.getCenter(), items: [] }; groups.push(g); }
      g.items.push(lyr.feature.properties);
    });
    groups.forEach(function (g) {
      var items = g.items.sort(function (a, b) { return a.rank - b.rank; });
      var si = -1;
      items.forEach(function (p, i) { if (p.selected) { si = i; } });
      var shown = si < 0 ? items : [items[si]].concat(items.filter(function (p, i) { return i !== si; }));
      var text = shown.slice(0, 3).map(function (p) { return p.rank; }).join(" · ") +
        (shown.length > 3 ? " +" + (shown.length - 3) : "");
      var next = items[(si + 1) % items.length];
      L.marker(g.center, {
        pane: "glb-labels", keyboard: false, zIndexOffset: si < 0 ? 0 : 1000,
        title: items.map(function (p) { return "#" + p.rank + " " + p.scene; }).join("\n"),
        icon: L.divIcon({ className: "glb-rank-anchor", iconSize: [0, 0],
                          html: '<span class="glb-rank' + (si >= 0 ? " glb-rank-selected" : "") +
                            '" data-n="' + items.length + '">' + esc(text) + "</span>" })
      }).on("click", function () { send({ event: "select", tile_id: next.tile_id }); })
        .addTo(labels);
    });
    showSelectedScene();
    showInfo();
  }

  // --- the analyst's region -------------------------------------------------------------
  // The region searched: an outline in its own pane above the results (no fill, so the results
  // inside it stay clickable), kept until the analyst clears or redraws it.
  var regionStyle = { color: "#1971c2", weight: 2.5, dashArray: "6 4", fill: false,
                      pane: "glb-region", className: "glb-region" };
  map.addControl(new L.Control.Draw({
    position: "topleft",
    draw: {
      polyline: false, circle: false, marker: false, circlemarker: false,
      // showArea off: leaflet-draw 1.0.4's area label throws with Leaflet 1.9
      rectangle: { showArea: false, shapeOptions: regionStyle },
      polygon: { allowIntersection: false, showArea: false, shapeOptions: regionStyle }
    },
    edit: { featureGroup: drawn, remove: true }
  }));
  function sendRegion() {
    var layers = drawn.getLayers();
    send({ event: "region", geometry: layers.length ? layers[0].toGeoJSON().geometry : null });
  }
  map.on(L.Draw.Event.CREATED, function (e) {
    drawn.clearLayers();
    drawn.addLayer(e.layer);
    sendRegion();
  });
  map.on(L.Draw.Event.EDITED, sendRegion);
  map.on(L.Draw.Event.DELETED, sendRegion);

  function setRegion(geometry) {
    drawn.clearLayers();
    if (!geometry) { return; }
    L.geoJSON(geometry, { style: regionStyle, pane: "glb-region" })
      .eachLayer(function (l) { drawn.addLayer(l); });
  }

  // An uploaded query image that says where it is: its footprint, dashed purple.
  function setQueryFootprint(geometry) {
    queryLayer.clearLayers();
    if (!geometry) { return; }
    L.geoJSON(geometry, { pane: "glb-region", interactive: false,
      style: { color: "#7048e8", weight: 2.5, dashArray: "2 5", fill: false,
               className: "glb-query-footprint" } }).addTo(queryLayer);
  }

  // --- optional web basemap (only when the page asks: it needs the internet) ---------------
  function setWeb(on) {
    if (on && !web) {
      web = L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
        maxZoom: 19, attribution: "&copy; OpenStreetMap contributors"
      }).addTo(map);
    } else if (!on && web) {
      map.removeLayer(web);
      web = null;
    }
  }

  // --- Streamlit render -----------------------------------------------------------------
  function render(args) {
    var h = args.height || 520;
    if (h !== state.height) {
      state.height = h;
      post("streamlit:setFrameHeight", { height: h });
      setTimeout(applyFit, 100);
    }
    setWeb(!!args.web_basemap);
    if (args.data && args.data !== state.data) { state.data = args.data; loadScenes(args.data); }
    if (args.results_key !== state.resultsKey) { state.resultsKey = args.results_key; setResults(args.results); }
    if (args.region_key !== state.regionKey) { state.regionKey = args.region_key; setRegion(args.region); }
    var qk = JSON.stringify(args.query_footprint || null);
    if (qk !== state.queryKey) { state.queryKey = qk; setQueryFootprint(args.query_footprint); }
    var fit = args.fit;
    if (fit && fit.key !== state.fitKey && fit.bounds) {
      state.fitKey = fit.key;
      state.pendingFit = fit;
      applyFit();
    }
  }

  // Fitting needs the frame's final size: until Streamlit has sized the iframe, keep the fit
  // pending and apply it on the resize that follows.
  function applyFit() {
    var fit = state.pendingFit;
    if (!fit) { return; }
    map.invalidateSize();
    if (map.getSize().y < state.height - 5 || map.getSize().x < 50) { return; }
    state.pendingFit = null;
    map.fitBounds(fit.bounds, { maxZoom: fit.max_zoom || 16, paddingTopLeft: FIT_PAD.topLeft,
                                paddingBottomRight: FIT_PAD.bottomRight });
  }

  window.addEventListener("message", function (event) {
    if (event.data && event.data.type === "streamlit:render") { render(event.data.args || {}); }
  });
  window.addEventListener("resize", function () { map.invalidateSize(); applyFit(); });
  post("streamlit:componentReady", { apiVersion: 1 });
}());
