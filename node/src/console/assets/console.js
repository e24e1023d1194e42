// eastwall console. Plain JavaScript, served by eastwall itself; no library, nothing fetched
// from elsewhere. Every text from the network goes into the page as text (textContent,
// canvas fillText), never as markup.
'use strict';

const $ = (id) => document.getElementById(id);
let session = null;
let topo = null; // the last /api/topology answer
let nodesCache = null;

// ---- helpers ---------------------------------------------------------------------------

/** An element with text children (strings become text nodes, never markup). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'title') e.title = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else if (k === 'onclick') e.addEventListener('click', v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

function fmtCount(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(1) + ' G';
  if (n >= 1e6) return (n / 1e6).toFixed(1) + ' M';
  if (n >= 1e4) return (n / 1e3).toFixed(0) + ' k';
  return String(n);
}

class ApiError extends Error {
  constructor(status, body) { super(body.error || ('HTTP ' + status)); this.status = status; this.body = body; }
}

/** One request to the console's API; a lost session shows the sign-in form. */
async function api(method, path, body) {
  const init = { method, headers: {}, credentials: 'same-origin' };
  if (method !== 'GET') {
    init.headers['content-type'] = 'application/json';
    if (session) init.headers['x-eastwall-csrf'] = session.csrf;
    init.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, init);
  let data = {};
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (r.status === 401 && path !== '/api/login') { showSignIn(); }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) q.append(k, v);
  const s = q.toString();
  return s ? '?' + s : '';
}

// ---- sign-in and views -----------------------------------------------------------------

function showSignIn() {
  session = null;
  for (const v of document.querySelectorAll('.view')) v.hidden = true;
  $('tabs').hidden = true; $('signout').hidden = true; $('who').textContent = '';
  $('signin').hidden = false;
  $('signin-user').focus();
}

function signedIn(s) {
  session = s;
  $('signin').hidden = true;
  $('tabs').hidden = false; $('signout').hidden = false;
  $('who').textContent = s.user + ' (' + s.role + ')';
  const apply = $('apply-run');
  apply.disabled = s.role !== 'admin';
  apply.title = s.role === 'admin' ? '' : 'only admins apply';
  show(location.hash.replace('#', '') || 'map');
}

const loaders = {};
function show(view) {
  if (!loaders[view]) view = 'map';
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== 'view-' + view;
  for (const t of document.querySelectorAll('.tab')) t.classList.toggle('active', t.dataset.view === view);
  if (location.hash !== '#' + view) history.replaceState(null, '', '#' + view);
  loaders[view]();
}

$('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('signin-error').textContent = '';
  try {
    const s = await api('POST', '/api/login', { user: $('signin-user').value, password: $('signin-password').value });
    $('signin-password').value = '';
    signedIn(s);
  } catch (e) {
    $('signin-error').textContent = e.message;
  }
});

$('signout').addEventListener('click', async () => {
  try { await api('POST', '/api/logout'); } catch (_) { /* gone anyway */ }
  showSignIn();
});

for (const t of document.querySelectorAll('.tab')) t.addEventListener('click', () => show(t.dataset.view));

// ---- the map ---------------------------------------------------------------------------

const OUTCOME_COLOR = { allow: '#2e7d32', monitor: '#ef8f00', deny: '#c62828', alert: '#7b1fa2' };
const OUTCOME_WORDS = { allow: 'allowed', monitor: 'monitor would deny', deny: 'denied', alert: 'IDS alert' };
const OUTCOME_ORDER = ['allow', 'monitor', 'deny', 'alert'];
const OUTSIDE = '(outside)';

const map = {
  expanded: new Map(), // 'z:zone' or 'a:zone/app' -> open or not (over the level's default)
  nodes: [],          // drawn boxes and dots: {kind, key, x, y, w, h, label, ...}
  edges: [],          // drawn edges: {src, dst, outcome, count, list, pts}
  shown: [],          // the edges in the table (unfolded)
  selected: null,
  lastRender: null,
  scale: 1,
};
window.eastwallMap = map; // for tests and the benchmark: positions and timings

function workloadsByName() {
  const m = new Map();
  for (const w of topo.workloads) m.set(w.name, w);
  return m;
}

function endOf(name, byName) {
  if (name === OUTSIDE) return { name: OUTSIDE, app: OUTSIDE, zone: OUTSIDE };
  return byName.get(name) || { name, app: '', zone: '' };
}

function isOpen(kind, key) {
  const level = $('map-level').value;
  const dflt = kind === 'z' ? level !== 'zone' : level === 'workload';
  const v = map.expanded.get(kind + ':' + key);
  return v === undefined ? dflt : v;
}

function mapFilters() {
  return {
    zone: $('map-zone').value, app: $('map-app').value, group: $('map-group').value,
    proto: $('map-proto').value, search: $('map-search').value.trim().toLowerCase(),
    outcomes: new Set(OUTCOME_ORDER.filter((o) => $('map-o-' + o).checked)),
  };
}

function fillSelect(sel, values) {
  const keep = sel.value;
  while (sel.options.length > 1) sel.remove(1);
  for (const v of values) sel.add(new Option(v, v));
  sel.value = values.includes(keep) ? keep : '';
}

async function loadMap() {
  const t0 = performance.now();
  $('map-status').textContent = 'loading…';
  try {
    topo = await api('GET', '/api/topology' + query({ hours: $('map-hours').value }));
  } catch (e) {
    $('map-status').textContent = e.message;
    return;
  }
  const t1 = performance.now();
  const zones = [...new Set(topo.workloads.map((w) => w.zone).filter(Boolean))].sort();
  const apps = [...new Set(topo.workloads.map((w) => w.app).filter(Boolean))].sort();
  const groups = [...new Set(topo.edges.flatMap((e) => e.groups))].sort();
  const protos = [...new Set(topo.edges.map((e) => e.proto).filter(Boolean))].sort();
  fillSelect($('map-zone'), zones); fillSelect($('map-app'), apps);
  fillSelect($('map-group'), groups); fillSelect($('map-proto'), protos);
  fillSelect($('recommend-app'), apps); fillSelect($('recommend-zone'), zones);
  renderMap();
  map.lastRender.fetchMs = t1 - t0;
  map.lastRender.totalMs = performance.now() - t0;
  $('map-status').textContent = topo.workloads.length + ' workloads, ' + topo.edges.length +
    ' edges since ' + topo.since + ' (policy version ' + topo.version.version + ')';
}

/** Lays out zones → apps → workloads and folds the edges onto what is shown. */
function renderMap() {
  if (!topo) return;
  const t0 = performance.now();
  const f = mapFilters();
  const byName = workloadsByName();
  const match = (w) => !f.search || w.name.toLowerCase().includes(f.search) ||
    (w.app || '').toLowerCase().includes(f.search) || (w.zone || '').toLowerCase().includes(f.search);
  const inScope = (w) => (!f.zone || w.zone === f.zone) && (!f.app || w.app === f.app);

  // The edges the filters keep.
  const kept = topo.edges.filter((e) => {
    if (!f.outcomes.has(e.outcome)) return false;
    if (f.proto && e.proto !== f.proto) return false;
    if (f.group && !e.groups.includes(f.group)) return false;
    const s = endOf(e.src, byName), d = endOf(e.dst, byName);
    if (!(inScope(s) || inScope(d))) return false;
    if (f.search && !(match(s) || match(d))) return false;
    return true;
  });
  // The workloads shown: in scope and matching, and the peers of kept edges.
  const shown = new Set();
  for (const w of topo.workloads) if (inScope(w) && match(w)) shown.add(w.name);
  for (const e of kept) { shown.add(e.src); shown.add(e.dst); }
  const tree = new Map(); // zone -> app -> [workload]
  for (const name of shown) {
    const w = endOf(name, byName);
    const z = w.zone || '(no zone)', a = w.app || '(no app)';
    if (!tree.has(z)) tree.set(z, new Map());
    const apps = tree.get(z);
    if (!apps.has(a)) apps.set(a, []);
    apps.get(a).push(w.name);
  }

  // Layout: shelves of zones, shelves of apps in each zone, a grid of workloads in each app.
  const canvas = $('map-canvas');
  const width = Math.max(600, $('map-box').clientWidth - 4);
  const nodes = [];
  const rep = new Map(); // workload -> the key of what stands for it
  const place = (items, maxW, gap) => { // shelf packing; items {w,h}; sets x,y; returns {w,h}
    let x = 0, y = 0, rowH = 0, W = 0;
    for (const it of items) {
      if (x > 0 && x + it.w > maxW) { x = 0; y += rowH + gap; rowH = 0; }
      it.x = x; it.y = y; x += it.w + gap; rowH = Math.max(rowH, it.h); W = Math.max(W, it.x + it.w);
    }
    return { w: W, h: y + rowH };
  };
  const zoneBoxes = [];
  for (const [zone, apps] of [...tree.entries()].sort()) {
    const zKey = zone;
    const nW = [...apps.values()].reduce((n, l) => n + l.length, 0);
    if (!isOpen('z', zKey)) {
      const box = { kind: 'zone', key: zKey, label: zone, sub: apps.size + ' apps, ' + nW + ' workloads', w: 170, h: 54, open: false, children: [] };
      for (const l of apps.values()) for (const n of l) rep.set(n, 'z:' + zKey);
      zoneBoxes.push(box);
      continue;
    }
    const appBoxes = [];
    for (const [app, list] of [...apps.entries()].sort()) {
      const aKey = zone + '/' + app;
      list.sort();
      if (!isOpen('a', aKey)) {
        for (const n of list) rep.set(n, 'a:' + aKey);
        appBoxes.push({ kind: 'app', key: aKey, label: app, sub: list.length + ' workloads', w: 150, h: 44, open: false, children: [] });
        continue;
      }
      const labels = list.length <= 24;
      const cw = labels ? 112 : 16, ch = labels ? 30 : 16;
      const cols = Math.max(1, Math.min(list.length, labels ? 3 : Math.ceil(Math.sqrt(list.length * 2))));
      const rows = Math.ceil(list.length / cols);
      const kids = list.map((n, i) => {
        rep.set(n, 'w:' + n);
        return { kind: 'workload', key: n, label: n, labels, x: 8 + (i % cols) * cw, y: 22 + Math.floor(i / cols) * ch, w: cw, h: ch };
      });
      appBoxes.push({ kind: 'app', key: aKey, label: app, sub: list.length + ' workloads', w: Math.max(150, cols * cw + 16), h: 30 + rows * ch, open: true, children: kids });
    }
    appBoxes.sort((a, b) => b.h - a.h);
    const area = appBoxes.reduce((s, b) => s + (b.w + 10) * (b.h + 10), 0);
    const inner = place(appBoxes, Math.max(340, Math.min(width - 40, Math.sqrt(area) * 1.6)), 10);
    zoneBoxes.push({ kind: 'zone', key: zKey, label: zone, sub: nW + ' workloads', w: inner.w + 20, h: inner.h + 38, open: true, children: appBoxes });
  }
  const total = place(zoneBoxes, width - 20, 16);
  // Absolute positions.
  const abs = (box, ox, oy) => {
    box.x += ox; box.y += oy;
    nodes.push(box);
    for (const c of box.children || []) abs(c, box.x + (box.kind === 'zone' ? 10 : 0), box.y + (box.kind === 'zone' ? 28 : 0));
  };
  for (const z of zoneBoxes) abs(z, 10, 10);
  const center = new Map();
  for (const n of nodes) {
    if (n.kind === 'workload') center.set('w:' + n.key, { x: n.x + 7, y: n.y + 7 });
    else if (!n.open) center.set((n.kind === 'zone' ? 'z:' : 'a:') + n.key, { x: n.x + n.w / 2, y: n.y + n.h / 2 });
  }

  // Edges folded onto what stands for their ends.
  const folded = new Map();
  for (const e of kept) {
    const a = rep.get(e.src), b = rep.get(e.dst);
    if (!a || !b) continue;
    const k = a + '\u0000' + b + '\u0000' + e.outcome;
    if (!folded.has(k)) folded.set(k, { src: a, dst: b, outcome: e.outcome, count: 0, list: [] });
    const g = folded.get(k);
    g.count += e.count; g.list.push(e);
  }
  const edges = [...folded.values()].sort((x, y) => OUTCOME_ORDER.indexOf(x.outcome) - OUTCOME_ORDER.indexOf(y.outcome));
  for (const e of edges) {
    const p = center.get(e.src), q = center.get(e.dst);
    e.pts = [];
    if (!p || !q) continue;
    // Curves bend by outcome so that two outcomes between the same ends stay apart.
    const bend = 0.12 + 0.08 * OUTCOME_ORDER.indexOf(e.outcome);
    let cx, cy;
    if (e.src === e.dst) { cx = p.x + 40; cy = p.y - 40; } else {
      cx = (p.x + q.x) / 2 - (q.y - p.y) * bend; cy = (p.y + q.y) / 2 + (q.x - p.x) * bend;
    }
    e.ctrl = { x: cx, y: cy };
    for (let i = 0; i <= 16; i++) {
      const t = i / 16, u = 1 - t;
      e.pts.push({ x: u * u * p.x + 2 * u * t * cx + t * t * q.x, y: u * u * p.y + 2 * u * t * cy + t * t * q.y });
    }
  }
  map.nodes = nodes; map.edges = edges;
  const t1 = performance.now();
  canvas.width = Math.max(width, total.w + 30);
  canvas.height = Math.max(300, total.h + 30);
  drawMap();
  map.lastRender = { layoutMs: t1 - t0, drawMs: performance.now() - t1, nodes: nodes.length, edges: edges.length, workloads: topo.workloads.length };
  fillEdgeTable(kept, byName);
}

function drawMap() {
  const c = $('map-canvas');
  const g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  g.textBaseline = 'top';
  for (const n of map.nodes) {
    const sel = map.selected && map.selected.kind === n.kind && map.selected.key === n.key;
    if (n.kind === 'zone') {
      g.fillStyle = n.open ? '#eef2f8' : '#dfe6f1'; g.strokeStyle = sel ? '#1d2330' : '#9aa7bd'; g.lineWidth = sel ? 2 : 1;
      g.fillRect(n.x, n.y, n.w, n.h); g.strokeRect(n.x, n.y, n.w, n.h);
      g.fillStyle = '#1d2330'; g.font = 'bold 13px system-ui, sans-serif';
      g.fillText((n.open ? '▾ ' : '▸ ') + 'zone ' + n.label, n.x + 6, n.y + 5, n.w - 12);
      if (!n.open) { g.font = '12px system-ui, sans-serif'; g.fillStyle = '#5b6474'; g.fillText(n.sub, n.x + 6, n.y + 26, n.w - 12); }
    } else if (n.kind === 'app') {
      g.fillStyle = '#fff'; g.strokeStyle = sel ? '#1d2330' : '#b8c2d3'; g.lineWidth = sel ? 2 : 1;
      g.fillRect(n.x, n.y, n.w, n.h); g.strokeRect(n.x, n.y, n.w, n.h);
      g.fillStyle = '#1d2330'; g.font = '12px system-ui, sans-serif';
      g.fillText((n.open ? '▾ ' : '▸ ') + n.label, n.x + 5, n.y + 4, n.w - 10);
      if (!n.open) { g.fillStyle = '#5b6474'; g.fillText(n.sub, n.x + 5, n.y + 22, n.w - 10); }
    } else {
      g.beginPath(); g.arc(n.x + 7, n.y + 7, sel ? 6 : 4.5, 0, Math.PI * 2);
      g.fillStyle = sel ? '#1d2330' : '#6d7a90'; g.fill();
      if (n.labels) { g.fillStyle = '#1d2330'; g.font = '11px system-ui, sans-serif'; g.fillText(n.label, n.x + 15, n.y + 2, n.w - 18); }
    }
  }
  // Edges of one outcome and width go into one path, stroked once: thousands of edges cost
  // a few dozen strokes (software rendering pays per stroke).
  const width = (e) => Math.round(2 * (1 + 1.5 * Math.log10(1 + e.count))) / 2;
  const batches = new Map();
  for (const e of map.edges) {
    if (e.pts.length === 0) continue;
    const k = OUTCOME_ORDER.indexOf(e.outcome) + '|' + width(e);
    if (!batches.has(k)) batches.set(k, []);
    batches.get(k).push(e);
  }
  const arrow = (e, size) => {
    const a = e.pts[14], b = e.pts[16];
    const ang = Math.atan2(b.y - a.y, b.x - a.x);
    g.moveTo(b.x, b.y);
    g.lineTo(b.x - size * Math.cos(ang - 0.4), b.y - size * Math.sin(ang - 0.4));
    g.lineTo(b.x - size * Math.cos(ang + 0.4), b.y - size * Math.sin(ang + 0.4));
    g.closePath();
  };
  const stroke = (list, outcome, w, alpha) => {
    g.strokeStyle = OUTCOME_COLOR[outcome]; g.fillStyle = OUTCOME_COLOR[outcome];
    g.globalAlpha = alpha; g.lineWidth = w;
    g.beginPath();
    for (const e of list) { g.moveTo(e.pts[0].x, e.pts[0].y); g.quadraticCurveTo(e.ctrl.x, e.ctrl.y, e.pts[16].x, e.pts[16].y); }
    g.stroke();
    g.beginPath();
    for (const e of list) arrow(e, 9);
    g.fill();
  };
  // Allowed first, alerts last: the outcomes that matter most stay on top.
  for (const k of [...batches.keys()].sort((x, y) => parseFloat(x) - parseFloat(y) || parseFloat(x.split('|')[1]) - parseFloat(y.split('|')[1]))) {
    const list = batches.get(k);
    stroke(list, list[0].outcome, width(list[0]), 0.75);
  }
  const sel = map.selected && map.selected.kind === 'edge' ? map.selected.edge : null;
  if (sel && sel.pts && sel.pts.length) stroke([sel], sel.outcome, width(sel) + 2, 1);
  g.globalAlpha = 1;
}

/** What is under the canvas point (x, y): an edge, a workload, an app or a zone. */
function hit(x, y) {
  for (let i = map.nodes.length - 1; i >= 0; i--) {
    const n = map.nodes[i];
    if (n.kind === 'workload' && Math.hypot(x - (n.x + 7), y - (n.y + 7)) <= 7) return { kind: 'workload', key: n.key };
  }
  let best = null, bestD = 6;
  for (const e of map.edges) {
    for (const p of e.pts) {
      const d = Math.hypot(x - p.x, y - p.y);
      if (d < bestD) { bestD = d; best = e; }
    }
  }
  if (best) return { kind: 'edge', edge: best };
  for (let i = map.nodes.length - 1; i >= 0; i--) {
    const n = map.nodes[i];
    if (n.kind !== 'workload' && x >= n.x && x <= n.x + n.w && y >= n.y && y <= n.y + n.h) {
      // Only the header of an open box toggles it; the rest of it is its content.
      if (n.open && y > n.y + 24) continue;
      return { kind: n.kind, key: n.key };
    }
  }
  return null;
}

$('map-canvas').addEventListener('click', (ev) => {
  const c = $('map-canvas');
  const r = c.getBoundingClientRect();
  const x = (ev.clientX - r.left) * (c.width / r.width), y = (ev.clientY - r.top) * (c.height / r.height);
  const h = hit(x, y);
  if (!h) return;
  if (h.kind === 'zone' || h.kind === 'app') {
    const k = (h.kind === 'zone' ? 'z' : 'a');
    map.expanded.set(k + ':' + h.key, !isOpen(k, h.key));
    renderMap();
    return;
  }
  select(h);
});

/** Midpoint of the drawn edge from `src` to `dst` (what stands for them) with `outcome`,
 *  in page coordinates: where a click selects it. */
map.edgePoint = function (src, dst, outcome) {
  const e = map.edges.find((x) => x.outcome === outcome && x.src.endsWith(':' + src) && x.dst.endsWith(':' + dst));
  if (!e || !e.pts.length) return null;
  const c = $('map-canvas');
  const r = c.getBoundingClientRect();
  const p = e.pts[8];
  return { x: r.left + p.x * (r.width / c.width), y: r.top + p.y * (r.height / c.height) };
};

function select(h) {
  map.selected = h;
  drawMap();
  for (const tr of document.querySelectorAll('#map-edges tbody tr')) tr.classList.remove('selected');
  if (h.kind === 'edge') showEdge(h.edge.list);
  else if (h.kind === 'workload') showWorkload(h.key);
}

function dl(pairs) {
  const d = el('dl');
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === '' || (Array.isArray(v) && v.length === 0)) continue;
    d.append(el('dt', {}, k), el('dd', {}, Array.isArray(v) ? v.join(', ') : v));
  }
  return d;
}

/** The details of edges (a drawn edge may stand for several) and their recent flows. */
async function showEdge(list) {
  const box = $('map-detail');
  clear(box);
  const e0 = list[0];
  const uniq = (f) => [...new Set(list.flatMap(f))];
  box.append(el('h3', { id: 'edge-title' }, e0.src + ' → ' + e0.dst));
  box.append(dl([
    ['outcome', OUTCOME_WORDS[e0.outcome]],
    ['ports', uniq((e) => [e.proto + '/' + e.port])],
    ['rules', uniq((e) => e.rules)],
    ['monitor rules', uniq((e) => e.monitors)],
    ['identities', uniq((e) => e.identities)],
    ['users', uniq((e) => e.users)],
    ['groups', uniq((e) => e.groups)],
    ['L7 paths', uniq((e) => e.requests)],
    ['decisions', fmtCount(list.reduce((n, e) => n + e.count, 0))],
    ['bytes', fmtCount(list.reduce((n, e) => n + e.bytes, 0))],
    ['first seen', list.map((e) => e.first).sort()[0]],
    ['last seen', list.map((e) => e.last).sort().slice(-1)[0]],
  ]));
  const recent = el('table', { id: 'edge-flows', class: 'grid' },
    el('thead', {}, el('tr', {}, el('th', {}, 'time'), el('th', {}, 'verdict'), el('th', {}, 'rule'), el('th', {}, 'detail'))));
  const body = el('tbody');
  recent.append(body);
  box.append(el('h4', {}, 'Recent flows'), recent);
  const names = (n) => (n === OUTSIDE ? '' : 'workload:' + n);
  const params = { from: names(e0.src), to: names(e0.dst), limit: 20 };
  if (e0.outcome === 'deny' || e0.outcome === 'allow') params.verdict = e0.outcome;
  if (e0.outcome === 'alert') params.type = 'alert';
  try {
    const r = await api('GET', '/api/flows' + query(params));
    for (const rec of r.records.slice().reverse()) {
      const p = (rec.eastwall || {}).policy || {};
      body.append(el('tr', {}, el('td', {}, rec.timestamp || ''), el('td', {}, p.verdict || rec.event_type || ''),
        el('td', {}, p.rule || (rec.alert ? 'sid ' + rec.alert.signature_id : '')), el('td', {}, detailOf(rec))));
    }
    if (!r.records.length) body.append(el('tr', {}, el('td', { colSpan: 4 }, 'none in the collector for these ends')));
  } catch (err) {
    body.append(el('tr', {}, el('td', { colSpan: 4, class: 'error' }, err.message)));
  }
}

async function nodeStatuses() {
  if (!nodesCache) {
    try { nodesCache = await api('GET', '/api/nodes'); } catch (_) { nodesCache = { nodes: [] }; }
  }
  return nodesCache;
}

async function showWorkload(name) {
  const box = $('map-detail');
  clear(box);
  const w = topo.workloads.find((x) => x.name === name);
  box.append(el('h3', { id: 'workload-title' }, name));
  if (!w) { box.append(el('p', {}, 'outside the registry: addresses and identities no workload has')); return; }
  const labels = Object.entries(w.labels || {}).map(([k, v]) => k + '=' + v);
  const st = (await nodeStatuses()).nodes.find((n) => n.node === w.node) || {};
  const expiry = (st.workloadCerts || {})[w.identity];
  box.append(dl([
    ['identity', w.identity], ['app', w.app], ['zone', w.zone], ['node', w.node],
    ['addresses', w.addresses], ['user', w.user], ['labels', labels],
    ['certificate expires', expiry || (st.state ? 'no certificate on its node' : 'its node reports no status')],
  ]));
  const out = topo.edges.filter((e) => e.src === name), inn = topo.edges.filter((e) => e.dst === name);
  const list = (title, edges, other) => {
    box.append(el('h4', {}, title + ' (' + edges.length + ')'));
    const ul = el('ul');
    for (const e of edges.slice(0, 50)) ul.append(el('li', { class: 'o-' + e.outcome }, e[other] + ' ' + e.proto + '/' + e.port + ' ' + OUTCOME_WORDS[e.outcome] + ' ×' + fmtCount(e.count)));
    box.append(ul);
  };
  list('talks to', out, 'dst');
  list('is talked to by', inn, 'src');
}

function fillEdgeTable(kept, byName) {
  const body = $('map-edges').tBodies[0];
  clear(body);
  const sorted = kept.slice().sort((a, b) => OUTCOME_ORDER.indexOf(b.outcome) - OUTCOME_ORDER.indexOf(a.outcome) || b.count - a.count);
  const MAX = 500;
  for (const e of sorted.slice(0, MAX)) {
    const s = endOf(e.src, byName), d = endOf(e.dst, byName);
    const tr = el('tr', { class: 'selectable', 'data-src': e.src, 'data-dst': e.dst, 'data-outcome': e.outcome },
      el('td', {}, e.src + (s.zone ? ' (' + s.zone + ')' : '')), el('td', {}, e.dst + (d.zone ? ' (' + d.zone + ')' : '')),
      el('td', {}, e.proto + '/' + e.port), el('td', { class: 'outcome-' + e.outcome }, OUTCOME_WORDS[e.outcome]),
      el('td', {}, e.rules.join(', ')), el('td', {}, fmtCount(e.count)), el('td', {}, e.last));
    tr.addEventListener('click', () => {
      map.selected = { kind: 'edge', edge: map.edges.find((x) => x.list.includes(e)) || null };
      drawMap();
      for (const r of body.rows) r.classList.remove('selected');
      tr.classList.add('selected');
      showEdge([e]);
    });
    body.append(tr);
  }
  if (sorted.length > MAX) body.append(el('tr', {}, el('td', { colSpan: 7 }, (sorted.length - MAX) + ' more: narrow with the filters')));
}

for (const id of ['map-zone', 'map-app', 'map-group', 'map-proto', 'map-level', 'map-o-allow', 'map-o-deny', 'map-o-monitor', 'map-o-alert']) {
  $(id).addEventListener('change', () => { if (id === 'map-level') map.expanded.clear(); renderMap(); });
}
$('map-hours').addEventListener('change', loadMap);
let searchTimer = null;
$('map-search').addEventListener('input', () => { clearTimeout(searchTimer); searchTimer = setTimeout(renderMap, 150); });
loaders.map = () => { nodesCache = null; loadMap(); };

// ---- flows -----------------------------------------------------------------------------

function who(end, ip) {
  const base = (end && (end.workload || end.identity)) || ip || '?';
  return end && end.user ? base + ' (' + end.user + ')' : base;
}

function detailOf(rec) {
  if (rec.http) return (rec.http.http_method || '') + ' ' + (rec.http.url || '');
  if (rec.dns && rec.dns.queries && rec.dns.queries[0]) return 'query ' + rec.dns.queries[0].rrname;
  if (rec.alert) return 'alert ' + rec.alert.signature_id + ' ' + (rec.alert.signature || '');
  if (rec.anomaly) return 'anomaly ' + (rec.anomaly.event || '') + ': ' + ((rec.eastwall && rec.eastwall.reason) || '');
  return '';
}

const flows = { last: null, timer: null, query: '', seq: 0 };

function flowRow(rec) {
  const e = rec.eastwall || {};
  const p = e.policy || {};
  const src = e.src || { identity: e.src_identity }, dst = e.dest || { identity: e.dest_identity };
  return el('tr', {}, el('td', {}, rec.timestamp || ''), el('td', {}, e.node || ''), el('td', {}, rec.event_type || ''),
    el('td', { class: 'outcome-' + (p.verdict || '') }, p.verdict || ''), el('td', {}, p.rule || ''),
    el('td', {}, who(src, rec.src_ip)), el('td', {}, who(dst, rec.dest_ip)),
    el('td', {}, (rec.proto || '') + '/' + (rec.dest_port || '')), el('td', {}, detailOf(rec)));
}

async function loadFlows(more) {
  const body = $('flows-table').tBodies[0];
  // Only the answer to the latest request is shown (an older, slower one is dropped).
  const seq = ++flows.seq;
  try {
    const params = new URLSearchParams(flows.query);
    if (more) { params.set('after', flows.last || 0); params.set('limit', 1000); } else params.set('limit', 200);
    const r = await api('GET', '/api/flows?' + params.toString());
    if (seq !== flows.seq) return;
    if (!more) clear(body);
    // Newest first.
    for (const rec of r.records) body.insertBefore(flowRow(rec), body.firstChild);
    while (body.rows.length > 2000) body.deleteRow(body.rows.length - 1);
    if (r.last !== null && r.last !== undefined) flows.last = r.last;
    $('flows-status').textContent = body.rows.length + ' records shown' + ($('flows-follow').checked ? ', following' : '');
  } catch (e) {
    $('flows-status').textContent = e.message;
  }
}

function followFlows() {
  clearInterval(flows.timer);
  flows.timer = null;
  if ($('flows-follow').checked && !$('view-flows').hidden) flows.timer = setInterval(() => { if ($('view-flows').hidden) { clearInterval(flows.timer); flows.timer = null; } else loadFlows(true); }, 2000);
}

$('flows-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const q = new URLSearchParams();
  for (const [k, v] of new FormData($('flows-form'))) if (v) q.append(k, v);
  flows.query = q.toString();
  flows.last = null;
  loadFlows(false).then(followFlows);
});
$('flows-follow').addEventListener('change', followFlows);
loaders.flows = () => { loadFlows(false).then(followFlows); };

// ---- nodes -----------------------------------------------------------------------------

loaders.nodes = async () => {
  const body = $('nodes-table').tBodies[0];
  try {
    const r = await api('GET', '/api/nodes');
    nodesCache = r;
    clear(body);
    const latest = r.latest ? r.latest.version : 0;
    for (const n of r.nodes) {
      body.append(el('tr', { class: n.drift ? 'drift' : '', 'data-node': n.node },
        el('td', {}, n.node), el('td', { class: 'state' }, n.state), el('td', {}, n.version === undefined ? '-' : String(n.version)),
        el('td', {}, (n.hash || '-').slice(0, 19)), el('td', {}, n.appliedAt || '-'), el('td', {}, n.eastwallVersion || '-'),
        el('td', {}, n.certificates === undefined ? '-' : String(n.certificates)), el('td', {}, n.certExpiry || '-'),
        el('td', {}, n.connections === undefined ? '-' : String(n.connections)), el('td', {}, n.denied === undefined ? '-' : String(n.denied)),
        el('td', {}, n.problem || n.restartNeeded || '')));
    }
    const drift = r.nodes.filter((n) => n.drift).length;
    $('nodes-status').textContent = 'latest version ' + latest + (r.latest ? ' by ' + r.latest.author + ' at ' + r.latest.time : '') +
      '; ' + r.nodes.length + ' nodes' + (drift ? ', ' + drift + ' not enforcing it' : ', all enforcing it');
  } catch (e) {
    $('nodes-status').textContent = e.message;
  }
};

// ---- rules and explain -----------------------------------------------------------------

let rulesCache = null;

loaders.rules = async () => {
  const body = $('rules-table').tBodies[0];
  try {
    const r = await api('GET', '/api/rules' + query({ hours: $('rules-hours').value }));
    rulesCache = r;
    clear(body);
    for (const x of r.rules) {
      body.append(el('tr', { class: x.hits === 0 ? 'never' : '', 'data-rule': x.id },
        el('td', {}, x.section), el('td', {}, x.id), el('td', {}, x.action), el('td', {}, x.mode),
        el('td', {}, x.ports || 'any' + (x.l7 ? ' (L7)' : '')), el('td', {}, String(x.line)),
        el('td', { class: 'hits' }, x.hits ? fmtCount(x.hits) : 'never matched'), el('td', {}, x.lastHit || '')));
    }
    $('rules-text').textContent = r.text;
    $('rules-status').textContent = 'version ' + r.version.version + ': ' + r.rules.length + ' rules, ' + r.neverMatched +
      ' never matched since ' + r.since + '; ' + fmtCount(r.defaultDenied) + ' decisions denied by default';
  } catch (e) {
    $('rules-status').textContent = e.message;
  }
  if (!topo) { try { topo = await api('GET', '/api/topology'); } catch (_) { return; } }
  const names = topo.workloads.map((w) => w.name).sort();
  for (const sel of [$('explain-from'), $('explain-to')]) {
    const keep = sel.value;
    clear(sel);
    for (const n of names) sel.add(new Option(n, n));
    if (names.includes(keep)) sel.value = keep;
  }
};
$('rules-hours').addEventListener('change', loaders.rules);

$('explain-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const p = {};
  for (const [k, v] of new FormData($('explain-form'))) p[k] = v;
  try {
    const r = await api('GET', '/api/explain' + query(p));
    $('explain-out').textContent = r.text;
  } catch (e) {
    $('explain-out').textContent = e.message;
  }
});

// ---- recommend, replay, apply ----------------------------------------------------------

let candidateBase = null;

$('recommend-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const p = {};
  for (const [k, v] of new FormData($('recommend-form'))) p[k] = v;
  $('recommend-status').textContent = 'reading the flows…';
  try {
    const r = await api('GET', '/api/recommend' + query(p));
    $('candidate').value = r.yaml;
    candidateBase = r.base;
    $('recommend-status').textContent = r.rules + ' rules covering ' + fmtCount(r.covered) + ' allowed decisions, from ' +
      fmtCount(r.edges) + ' per-day aggregates from ' + r.since.slice(0, 10) + ' (UTC days; based on version ' + r.base + ')' +
      (r.skipped.length ? '; left out: ' + r.skipped.join('; ') : '');
  } catch (e) {
    $('recommend-status').textContent = e.message;
  }
});

$('load-current').addEventListener('click', async () => {
  try {
    const r = rulesCache || await api('GET', '/api/rules');
    $('candidate').value = r.text;
    candidateBase = r.version.version;
    $('recommend-status').textContent = 'the policy of version ' + candidateBase;
  } catch (e) {
    $('recommend-status').textContent = e.message;
  }
});

function groupTable(title, groups, cls) {
  const box = el('div', { class: cls });
  box.append(el('h3', {}, title + ' (' + groups.reduce((n, g) => n + g.count, 0) + ')'));
  if (!groups.length) { box.append(el('p', { class: 'hint' }, 'none')); return box; }
  const t = el('table', { class: 'grid' }, el('thead', {}, el('tr', {}, el('th', {}, 'edge'), el('th', {}, 'rule before'),
    el('th', {}, 'rule now'), el('th', {}, 'decisions'), el('th', {}, 'examples'))));
  const body = el('tbody');
  for (const g of groups) body.append(el('tr', {}, el('td', {}, g.edge), el('td', {}, g.before), el('td', {}, g.after),
    el('td', {}, String(g.count)), el('td', {}, g.examples.join(' | '))));
  t.append(body);
  box.append(t);
  return box;
}

$('replay-run').addEventListener('click', async () => {
  const out = $('replay-out');
  clear(out);
  $('replay-status').textContent = 'replaying…';
  const hours = Number(new FormData($('recommend-form')).get('hours')) || 168;
  try {
    const r = await api('POST', '/api/replay', { policy: $('candidate').value, hours });
    $('replay-status').textContent = r.decisions + ' decisions replayed: ' + r.unchanged + ' unchanged, ' + r.breaks + ' allowed before and denied now';
    $('replay-status').className = 'status' + (r.breaks ? ' breaks' : '');
    out.append(groupTable('Would break (allowed, now denied)', r.newlyDenied, 'newly-denied'),
      groupTable('Newly allowed', r.newlyAllowed, 'newly-allowed'),
      groupTable('Undetermined (needs what was not recorded)', r.undetermined, 'undetermined'));
  } catch (e) {
    $('replay-status').textContent = e.message;
    if (e.body && e.body.problems) out.append(el('pre', {}, e.body.problems));
  }
});

$('apply-run').addEventListener('click', async () => {
  if (candidateBase === null) { $('replay-status').textContent = 'recommend a policy or edit the one in force first'; return; }
  $('replay-status').textContent = 'applying…';
  try {
    const r = await api('POST', '/api/apply', { policy: $('candidate').value, base: candidateBase, message: $('apply-message').value });
    if (r.applied) {
      candidateBase = r.applied.version;
      $('replay-status').textContent = 'applied as version ' + r.applied.version + ' by ' + r.applied.author;
    } else {
      $('replay-status').textContent = 'nothing to apply: the candidate is the policy in force';
    }
    rulesCache = null;
  } catch (e) {
    $('replay-status').textContent = e.message;
    if (e.body && e.body.problems) { clear($('replay-out')); $('replay-out').append(el('pre', {}, e.body.problems)); }
  }
});

loaders.recommend = () => { if (!topo) loadMap(); };

// ---- start -----------------------------------------------------------------------------

window.addEventListener('resize', () => { if (!$('view-map').hidden) renderMap(); });
(async () => {
  try {
    signedIn(await api('GET', '/api/session'));
  } catch (_) {
    showSignIn();
  }
})();
