/* compoundwatch offline map page. Data comes from the JSON block #cw-data (written by
 * pipeline/publish/mappage.py); every text from the data reaches the page through textContent or
 * attribute setters, never as HTML. After each render the page sets on <body>:
 *   data-total-flags     flags in the data
 *   data-visible-flags   flags passing the date filter
 *   data-rendered-flags  distinct flags MapLibre drew in the viewport (queryRenderedFeatures)
 *   data-idle-count      how many times the map went idle (rendered everything) so far
 *   data-ready="1"       once the map has rendered at least once
 *   data-table-rows      rows in the flags table (one per flag)
 *   data-imagery-sites   sites with before/after imagery
 *   data-imagery-tiles   imagery tiles handed to MapLibre so far
 *   data-imagery-mode    before | after | none
 * Imagery tiles come from imagery/<key>.js scripts (base64 WebP per z/x/y, EPSG:3857 XYZ), loaded on the
 * first request of one of a site's tiles through the cwimg:// protocol: a file:// page may run scripts
 * from its folder but may neither fetch files nor hand <img> tiles to WebGL.
 */
(function () {
  'use strict';
  var body = document.body;
  var statusEl = document.getElementById('status');

  function fail(message) {
    statusEl.textContent = 'The map could not be drawn: ' + message;
    body.dataset.error = message;
    console.error('compoundwatch map: ' + message);
  }

  var DATA;
  try {
    DATA = JSON.parse(document.getElementById('cw-data').textContent);
  } catch (err) {
    fail('the embedded data is not valid JSON (' + err + ')');
    return;
  }
  var flags = (DATA.flags && DATA.flags.features) || [];
  var points = (DATA.flag_points && DATA.flag_points.features) || [];
  var sites = (DATA.sites && DATA.sites.features) || [];
  var rows = DATA.flag_table || [];
  var imagery = DATA.imagery || [];
  body.dataset.totalFlags = String(flags.length);

  // ------------------------------------------------------------------ panel: run, legend, sites
  var CLASSES = DATA.confidence_classes; // [{min, color, label}], highest first
  var run = [];
  if (DATA.pipeline_version) run.push('compoundwatch ' + DATA.pipeline_version);
  if (DATA.params_hash) run.push('params ' + DATA.params_hash);
  if (DATA.period) run.push('imagery ' + DATA.period);
  document.getElementById('run').textContent = run.join(' · ');

  var legend = document.getElementById('legend');
  function legendItem(swatchClass, color, text) {
    var li = document.createElement('li');
    var sw = document.createElement('span');
    sw.className = 'swatch ' + swatchClass;
    if (color) sw.style.background = color;
    li.appendChild(sw);
    var label = document.createElement('span');
    label.textContent = text;
    li.appendChild(label);
    legend.appendChild(li);
  }
  CLASSES.forEach(function (c) { legendItem('flag', c.color, 'flag, confidence ' + c.label); });
  legendItem('site', null, 'site (area of interest)');

  function fmtArea(m2) {
    var v = Number(m2);
    if (!isFinite(v)) return '–';
    return (v / 10000).toFixed(2) + ' ha';
  }
  function fmt(v) {
    if (v === null || v === undefined) return '–';
    if (typeof v === 'number') return String(Math.round(v * 1e6) / 1e6);
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }
  function bboxOf(features) {
    var b = [Infinity, Infinity, -Infinity, -Infinity];
    function walk(c) {
      if (typeof c[0] === 'number') {
        b[0] = Math.min(b[0], c[0]); b[1] = Math.min(b[1], c[1]);
        b[2] = Math.max(b[2], c[0]); b[3] = Math.max(b[3], c[1]);
      } else { c.forEach(walk); }
    }
    features.forEach(function (f) { if (f.geometry) walk(f.geometry.coordinates); });
    return isFinite(b[0]) ? b : null;
  }

  // ------------------------------------------------------------------ date filter
  var dates = [];
  flags.forEach(function (f) {
    var d = f.properties.appeared_before;
    if (typeof d === 'string' && dates.indexOf(d) < 0) dates.push(d);
  });
  dates.sort();
  var slider = document.getElementById('date-filter');
  var dateLabel = document.getElementById('date-label');
  slider.max = String(Math.max(dates.length - 1, 0));
  slider.value = slider.max;
  slider.disabled = dates.length === 0;
  function cutoff() { return dates.length ? dates[Number(slider.value)] : '9999-12-31'; }
  function dateFilter() {
    return ['<=', ['to-string', ['coalesce', ['get', 'appeared_before'], '']], cutoff()];
  }
  function updateCounts() {
    var c = cutoff();
    var visible = flags.filter(function (f) { return String(f.properties.appeared_before || '') <= c; }).length;
    body.dataset.visibleFlags = String(visible);
    dateLabel.textContent = dates.length ? c : '(no dates)';
    document.getElementById('counts').textContent = flags.length
      ? visible + ' of ' + flags.length + ' flag(s) shown'
      : 'No flags in this run.';
    tableRows.forEach(function (tr) { tr.hidden = String(tr.cwRow.appeared_before || '') > c; });
  }

  // ------------------------------------------------------------------ flags table (textContent only)
  var LINKS = [['copernicus', 'CB', 'Copernicus Browser'], ['eo_browser', 'EO', 'EO Browser'],
               ['osm', 'OSM', 'OpenStreetMap']];
  var siteNames = {};
  sites.forEach(function (f) { siteNames[f.properties.site_id] = f.properties.name; });
  var tbody = document.querySelector('#flag-table tbody');
  var tableRows = [];
  var selectedRow = null;
  function classColour(conf) {
    var v = Number(conf);
    for (var i = 0; i < CLASSES.length; i++) if (v >= CLASSES[i].min) return CLASSES[i].color;
    return CLASSES[CLASSES.length - 1].color;
  }
  function cell(tr, text, cls) {
    var td = tr.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }
  rows.forEach(function (r) {
    var tr = document.createElement('tr');
    tr.cwRow = r;
    tr.dataset.flagId = String(r.flag_id);
    cell(tr, fmt(r.rank), 'num rank');
    var site = cell(tr, fmt(Object.prototype.hasOwnProperty.call(siteNames, r.site_id)
      ? siteNames[r.site_id] : r.site_id), 'site');
    site.title = String(r.flag_id) + ' · ' + String(r.site_id);
    cell(tr, fmtArea(r.area_m2), 'num area');
    cell(tr, fmt(r.appeared_before), 'date');
    var conf = cell(tr, '', 'num conf');
    var dot = document.createElement('span');
    dot.className = 'conf-dot';
    dot.style.background = classColour(r.confidence);
    conf.appendChild(dot);
    conf.appendChild(document.createTextNode(typeof r.confidence === 'number' ? r.confidence.toFixed(2) : '–'));
    var links = cell(tr, '', 'links');
    LINKS.forEach(function (l) {
      var url = r.links && r.links[l[0]];
      if (typeof url !== 'string' || url.indexOf('https://') !== 0) return;
      var a = document.createElement('a');
      a.href = url;
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      a.textContent = l[1];
      a.title = 'Open this location in ' + l[2] + ' (on the internet)';
      a.className = 'viewer-' + l[0];
      a.addEventListener('click', function (e) { e.stopPropagation(); });
      links.appendChild(a);
    });
    tr.addEventListener('click', function () { zoomToRow(tr); });
    tableRows.push(tr);
    tbody.appendChild(tr);
  });
  body.dataset.tableRows = String(tableRows.length);

  // sorting: rank ascending first, area and date largest/newest first; a second click reverses
  var FIRST = { rank: 'ascending', area_m2: 'descending', appeared_before: 'descending' };
  var heads = Array.prototype.slice.call(document.querySelectorAll('#flag-table th[data-key]'));
  function sortBy(key, dir) {
    var sign = dir === 'ascending' ? 1 : -1;
    function val(tr) {
      var v = tr.cwRow[key];
      return key === 'appeared_before' ? String(v || '') : Number(v);
    }
    tableRows.sort(function (a, b) {
      var x = val(a), y = val(b);
      var c = x < y ? -1 : x > y ? 1 : 0;
      return c !== 0 ? sign * c : Number(a.cwRow.rank) - Number(b.cwRow.rank);
    });
    tableRows.forEach(function (tr) { tbody.appendChild(tr); });
    heads.forEach(function (th) { th.setAttribute('aria-sort', th.dataset.key === key ? dir : 'none'); });
  }
  heads.forEach(function (th) {
    th.querySelector('button').addEventListener('click', function () {
      var key = th.dataset.key;
      var cur = th.getAttribute('aria-sort');
      var dir = cur === 'none' ? FIRST[key] : (cur === 'ascending' ? 'descending' : 'ascending');
      sortBy(key, dir);
    });
  });
  updateCounts();

  // ------------------------------------------------------------------ map
  if (typeof maplibregl === 'undefined') {
    fail('maplibre-gl.js did not load; it must sit next to index.html');
    return;
  }
  var byId = {};
  flags.forEach(function (f) { byId[f.properties.flag_id] = f; });
  var colour = ['step', ['to-number', ['get', 'confidence'], 0]];
  var asc = CLASSES.slice().reverse();
  colour.push(asc[0].color);
  asc.slice(1).forEach(function (c) { colour.push(c.min, c.color); });

  // imagery: one raster source per site and scene, tiles served from imagery/<key>.js
  var KEY = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
  var SCRIPT = /^imagery\/[A-Za-z0-9][A-Za-z0-9_-]*\.js$/;
  var EMPTY_PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg==';
  imagery = imagery.filter(function (im) { return KEY.test(String(im.key)) && SCRIPT.test(String(im.script)); });
  body.dataset.imageryTiles = '0';
  body.dataset.imagerySites = String(imagery.length);
  var imageryByKey = {};
  imagery.forEach(function (im) { imageryByKey[im.key] = im; });
  var scriptLoads = {};
  function loadImagery(key) {
    if (!scriptLoads[key]) {
      scriptLoads[key] = new Promise(function (resolve, reject) {
        var s = document.createElement('script');
        s.src = imageryByKey[key].script;
        s.onload = function () { resolve((window.CW_IMAGERY || {})[key] || {}); };
        s.onerror = function () { reject(new Error('imagery script ' + imageryByKey[key].script + ' did not load')); };
        document.head.appendChild(s);
      });
    }
    return scriptLoads[key];
  }
  function decode(b64) {
    var bin = atob(b64);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  var imageryLayers = [];
  var styleSources = {
    basemap: { type: 'geojson', data: DATA.basemap || { type: 'FeatureCollection', features: [] } },
    sites: { type: 'geojson', data: DATA.sites },
    flags: { type: 'geojson', data: DATA.flags },
    flag_points: { type: 'geojson', data: DATA.flag_points },
    site_points: { type: 'geojson', data: DATA.site_points }
  };
  var styleLayers = [
    { id: 'background', type: 'background', paint: { 'background-color': '#c9dbe6' } },
    { id: 'basemap-land', type: 'fill', source: 'basemap', paint: { 'fill-color': '#eceee8' } },
    { id: 'basemap-borders', type: 'line', source: 'basemap',
      paint: { 'line-color': '#a9b0b6', 'line-width': 0.8 } }
  ];
  ['before', 'after'].forEach(function (role) {
    imagery.forEach(function (im) {
      var id = 'imagery-' + im.key + '-' + role;
      styleSources[id] = { type: 'raster', tiles: ['cwimg://' + im.key + '/' + role + '/{z}/{x}/{y}'],
        tileSize: 256, minzoom: im.minzoom, maxzoom: im.maxzoom, bounds: im.bounds };
      styleLayers.push({ id: id, type: 'raster', source: id,
        paint: { 'raster-opacity': 1, 'raster-fade-duration': 0, 'raster-resampling': 'nearest' } });
      imageryLayers.push({ id: id, role: role });
    });
  });
  if (imagery.length) {
    maplibregl.addProtocol('cwimg', function (params) {
      var m = /^cwimg:\/\/([^/]+)\/(before|after)\/(\d+\/\d+\/\d+)$/.exec(params.url);
      if (!m || !imageryByKey[m[1]]) return Promise.reject(new Error('no imagery for ' + params.url));
      return loadImagery(m[1]).then(function (tiles) {
        var b64 = (tiles[m[2]] || {})[m[3]];
        if (b64) body.dataset.imageryTiles = String(Number(body.dataset.imageryTiles) + 1);
        return { data: decode(b64 || EMPTY_PNG) };
      });
    });
  }

  var bounds = bboxOf(sites.concat(flags));
  var map;
  try {
    map = new maplibregl.Map({
      container: 'map',
      style: {
        version: 8,
        sources: styleSources,
        layers: styleLayers.concat([
          { id: 'sites-fill', type: 'fill', source: 'sites',
            paint: { 'fill-color': '#1f78b4', 'fill-opacity': imagery.length ? 0.0 : 0.10 } },
          { id: 'sites-line', type: 'line', source: 'sites',
            paint: { 'line-color': '#1f78b4', 'line-width': 2 } },
          { id: 'sites-point', type: 'circle', source: 'site_points', maxzoom: 10,
            paint: { 'circle-color': 'rgba(31,120,180,0.10)', 'circle-radius': 14,
                     'circle-stroke-color': '#1f78b4', 'circle-stroke-width': 2 } },
          { id: 'flags-fill', type: 'fill', source: 'flags', minzoom: 9,
            paint: { 'fill-color': colour, 'fill-opacity': imagery.length ? 0.12 : 0.65 } },
          { id: 'flags-casing', type: 'line', source: 'flags', minzoom: 9,
            paint: { 'line-color': '#1d0505', 'line-width': 4 } },
          { id: 'flags-line', type: 'line', source: 'flags', minzoom: 9,
            paint: { 'line-color': colour, 'line-width': 2 } },
          { id: 'flags-point', type: 'circle', source: 'flag_points', maxzoom: 11,
            paint: { 'circle-color': colour, 'circle-radius': 6, 'circle-stroke-color': '#3b0a0a',
                     'circle-stroke-width': 1.2 } }
        ])
      },
      bounds: bounds || undefined,
      center: bounds ? undefined : [0, 20],
      zoom: bounds ? undefined : 1,
      fitBoundsOptions: { padding: 40, maxZoom: 15 },
      attributionControl: false,
      refreshExpiredTiles: false,
      maxPitch: 0
    });
  } catch (err) {
    fail(String(err && err.message ? err.message : err));
    return;
  }
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), 'top-right');
  map.addControl(new maplibregl.ScaleControl({ unit: 'metric' }), 'bottom-right');

  function applyFilter() {
    var f = dateFilter();
    ['flags-fill', 'flags-casing', 'flags-line', 'flags-point'].forEach(function (id) { map.setFilter(id, f); });
    updateCounts();
  }
  slider.addEventListener('input', function () { if (map.loaded()) applyFilter(); else updateCounts(); });

  function countRendered() {
    var seen = {};
    var n = 0;
    map.queryRenderedFeatures({ layers: ['flags-fill', 'flags-point'] }).forEach(function (f) {
      var id = f.properties && f.properties.flag_id;
      if (id !== undefined && !seen[id]) { seen[id] = true; n += 1; }
    });
    body.dataset.renderedFlags = String(n);
    body.dataset.idleCount = String(Number(body.dataset.idleCount || 0) + 1);
    body.dataset.ready = '1';
  }
  map.on('load', applyFilter);
  map.on('idle', countRendered);

  // ------------------------------------------------------------------ imagery controls
  var opacity = document.getElementById('imagery-opacity');
  var modes = Array.prototype.slice.call(document.querySelectorAll('input[name="imagery-mode"]'));
  function imageryMode() {
    var checked = modes.filter(function (r) { return r.checked; })[0];
    return checked ? checked.value : 'after';
  }
  function applyImagery() {
    var mode = imageryMode();
    var a = Number(opacity.value) / 100;
    body.dataset.imageryMode = mode;
    imageryLayers.forEach(function (l) {
      var shown = mode === 'after' ? true : mode === 'before' ? l.role === 'before' : false;
      var op = l.role === mode ? a : 1;
      map.setLayoutProperty(l.id, 'visibility', shown ? 'visible' : 'none');
      map.setPaintProperty(l.id, 'raster-opacity', op);
    });
  }
  modes.forEach(function (r) { r.addEventListener('change', function () { if (map.loaded()) applyImagery(); }); });
  opacity.addEventListener('input', function () { if (map.loaded()) applyImagery(); });
  map.on('load', applyImagery);
  if (!imagery.length) {
    document.getElementById('imagery-dates').textContent =
      'No imagery in this run: the basemap shows land, sea and borders only.';
    modes.concat([opacity]).forEach(function (el) { el.disabled = true; });
  }
  var datesList = document.getElementById('imagery-dates');
  imagery.forEach(function (im) {
    var li = document.createElement('li');
    var name = Object.prototype.hasOwnProperty.call(siteNames, im.site_id) ? siteNames[im.site_id] : im.site_id;
    var cf = im.clear_fraction || {};
    function pct(v) { return typeof v === 'number' ? ' (' + Math.round(v * 100) + ' % clear)' : ''; }
    li.textContent = fmt(name) + ': before ' + fmt(im.dates && im.dates.before) + pct(cf.before) +
      ' · after ' + fmt(im.dates && im.dates.after) + pct(cf.after);
    datesList.appendChild(li);
  });

  function zoomToRow(tr) {
    if (selectedRow) selectedRow.classList.remove('selected');
    selectedRow = tr;
    tr.classList.add('selected');
    var b = tr.cwRow.bbox;
    if (b && b.length === 4) map.fitBounds(b, { padding: 120, maxZoom: 15 });
  }

  // ------------------------------------------------------------------ popups (DOM nodes, textContent only)
  var CHIP = /^chips\/[A-Za-z0-9_.-]+\.png$/;
  function table(props, keys) {
    var t = document.createElement('table');
    keys.forEach(function (k) {
      if (!Object.prototype.hasOwnProperty.call(props, k)) return;
      var tr = t.insertRow();
      var th = document.createElement('th');
      th.textContent = k;
      tr.appendChild(th);
      var td = tr.insertCell();
      td.textContent = k.indexOf('area') >= 0 || k.indexOf('added_m2') === 0
        ? fmtArea(props[k]) + ' (' + fmt(props[k]) + ' m²)' : fmt(props[k]);
    });
    return t;
  }
  function flagPopup(props) {
    var box = document.createElement('div');
    box.className = 'cw-popup';
    var h = document.createElement('h3');
    h.textContent = 'Flag ' + fmt(props.flag_id);
    box.appendChild(h);
    if (typeof props.chip === 'string' && CHIP.test(props.chip)) {
      var a = document.createElement('a');
      a.href = props.chip;
      a.target = '_blank';
      a.rel = 'noopener';
      var img = document.createElement('img');
      img.src = props.chip;
      img.alt = 'before/after image chip of ' + String(props.flag_id);
      a.appendChild(img);
      box.appendChild(a);
    }
    box.appendChild(table(props, Object.keys(props)));
    return box;
  }
  function sitePopup(props) {
    var box = document.createElement('div');
    box.className = 'cw-popup';
    var h = document.createElement('h3');
    h.textContent = fmt(props.name);
    box.appendChild(h);
    box.appendChild(table(props, Object.keys(props).filter(function (k) { return k !== 'name'; })));
    return box;
  }
  function openPopup(lngLat, node) {
    return new maplibregl.Popup({ maxWidth: '480px' }).setLngLat(lngLat).setDOMContent(node).addTo(map);
  }
  function onFlag(e) {
    var id = e.features[0].properties.flag_id;
    var f = byId[id];
    if (f) openPopup(e.lngLat, flagPopup(f.properties));
  }
  map.on('click', 'flags-fill', onFlag);
  map.on('click', 'flags-point', onFlag);
  map.on('click', 'sites-point', function (e) {
    map.fitBounds(bboxOf([sites.filter(function (f) {
      return f.properties.site_id === e.features[0].properties.site_id; })[0]]), { padding: 40, maxZoom: 16 });
  });
  map.on('click', 'sites-fill', function (e) {
    if (map.queryRenderedFeatures(e.point, { layers: ['flags-fill', 'flags-point'] }).length) return;
    var sid = e.features[0].properties.site_id;
    var s = sites.filter(function (f) { return f.properties.site_id === sid; })[0];
    if (s) openPopup(e.lngLat, sitePopup(s.properties));
  });
  ['flags-fill', 'flags-point', 'sites-fill', 'sites-point'].forEach(function (id) {
    map.on('mouseenter', id, function () { map.getCanvas().style.cursor = 'pointer'; });
    map.on('mouseleave', id, function () { map.getCanvas().style.cursor = ''; });
  });

  // site list
  var list = document.getElementById('sites');
  sites.forEach(function (f) {
    var p = f.properties;
    var li = document.createElement('li');
    var btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'site-name';
    btn.textContent = fmt(p.name);
    btn.addEventListener('click', function () {
      var b = bboxOf([f]);
      if (b) map.fitBounds(b, { padding: 40, maxZoom: 16 });
    });
    li.appendChild(btn);
    var meta = document.createElement('div');
    meta.className = 'meta';
    meta.textContent = fmt(p.site_id) + ' · ' + fmt(p.n_flags) + ' flag(s) · ' + fmtArea(p.area_added_m2) +
      ' added · latest clear image ' + fmt(p.latest_clear_date) + ' · construction ongoing (' +
      fmt(p.last_period) + '): ';
    var ongoing = document.createElement('span');
    ongoing.className = 'ongoing-' + (p.construction_ongoing === 'yes' ? 'yes' : 'no');
    ongoing.textContent = fmt(p.construction_ongoing);
    meta.appendChild(ongoing);
    li.appendChild(meta);
    list.appendChild(li);
  });

  // for tests and scripting
  window.compoundwatch = { map: map, flags: flags, rows: rows, imagery: imagery, openFlagPopup: function (id) {
    var f = byId[id];
    if (!f) return null;
    var p = points.filter(function (q) { return q.properties.flag_id === id; })[0];
    return openPopup(p ? p.geometry.coordinates : map.getCenter(), flagPopup(f.properties));
  }, openSitePopup: function (sid) {
    var s = sites.filter(function (f) { return f.properties.site_id === sid; })[0];
    if (!s) return null;
    var b = bboxOf([s]);
    return openPopup([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], sitePopup(s.properties));
  } };
})();
