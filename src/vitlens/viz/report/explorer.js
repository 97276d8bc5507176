// vitlens attention explorer: everything it shows is embedded in this file; nothing is fetched.
(function () {
  'use strict';
  const meta = JSON.parse(document.getElementById('vl-meta').textContent);
  const M = meta.model;
  const L = M.depth, H = M.heads, N = M.tokens, GH = M.grid[0], GW = M.grid[1], P = GH * GW;
  const $ = (id) => document.getElementById(id);

  function base64Bytes(text) {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  const lut = base64Bytes(meta.lut); // 256 RGB colours

  // A chunk is zlib(float32 row maxima, uint8 codes): inflated once, on first use, then kept.
  const chunks = new Map();
  function chunk(id, rows) {
    if (!chunks.has(id)) {
      chunks.set(id, (async () => {
        const el = document.getElementById(id);
        if (!el) throw new Error('missing data chunk ' + id);
        const stream = new Blob([base64Bytes(el.textContent.trim())]).stream().pipeThrough(new DecompressionStream('deflate'));
        const raw = new Uint8Array(await new Response(stream).arrayBuffer());
        if (raw.length !== rows * (4 + P)) throw new Error('chunk ' + id + ' has ' + raw.length + ' bytes');
        return { scales: new Float32Array(raw.buffer.slice(0, rows * 4)), codes: raw.subarray(rows * 4) };
      })());
    }
    return chunks.get(id);
  }
  function row(c, r) { // dequantized weights of row r over the patches
    const out = new Float32Array(P), s = c.scales[r] / 255, base = r * P;
    for (let k = 0; k < P; k++) out[k] = c.codes[base + k] * s;
    return out;
  }
  function normalized(values) { // divided by its maximum, so that every map uses the full colour scale
    let hi = 0;
    for (const v of values) hi = Math.max(hi, v);
    const out = new Float32Array(values.length);
    if (hi > 0) for (let k = 0; k < values.length; k++) out[k] = values[k] / hi;
    return out;
  }
  function headMap(c, head, query) { // head: index, 'mean' or 'max'
    if (typeof head === 'number') return row(c, head * N + query);
    const acc = new Float32Array(P);
    for (let h = 0; h < H; h++) {
      const r = row(c, h * N + query);
      for (let k = 0; k < P; k++) acc[k] = head === 'max' ? Math.max(acc[k], r[k]) : acc[k] + r[k] / H;
    }
    return acc;
  }

  const views = meta.views;
  const state = { image: 0, view: views[0].id, layer: L - 1, head: 'mean', target: 0, pinned: defaultQuery(), hover: null };
  function defaultQuery() { return M.class_index !== null ? M.class_index : M.prefix; }
  function view() { return views.find((v) => v.id === state.view); }
  function query() {
    if (view().query === 'class') return M.class_index;
    return state.hover !== null ? state.hover : state.pinned;
  }

  const api = { state, shown: null, query: null, renders: 0, meta };
  window.vitlens = api;

  async function currentMap() {
    const img = meta.images[state.image], v = view(), q = query();
    if (v.query === 'none') return Float32Array.from(img.targets[state.target][v.id]);
    if (v.id === 'rollout') return row(await chunk('vl-r-' + state.image, L * N), state.layer * N + q);
    return headMap(await chunk('vl-a-' + state.image + '-' + state.layer, H * N), state.head, q);
  }

  function paint(canvas, values) {
    canvas.width = GW; canvas.height = GH;
    const ctx = canvas.getContext('2d'), im = ctx.createImageData(GW, GH);
    for (let k = 0; k < P; k++) {
      const c = Math.round(values[k] * 255) * 3;
      im.data[4 * k] = lut[c]; im.data[4 * k + 1] = lut[c + 1]; im.data[4 * k + 2] = lut[c + 2]; im.data[4 * k + 3] = 255;
    }
    ctx.putImageData(im, 0, 0);
  }

  function describeQuery(q) {
    if (q === M.class_index) return 'class token';
    if (q === M.dist_index) return 'distillation token';
    if (q < M.prefix) return 'register ' + M.register_indices.indexOf(q);
    const p = q - M.prefix;
    return 'patch (row ' + Math.floor(p / GW) + ', col ' + (p % GW) + ')';
  }

  let ticket = 0;
  async function render() {
    const mine = ++ticket;
    const values = normalized(await currentMap());
    if (mine !== ticket) return; // a newer render has started
    const v = view(), q = query();
    paint($('vl-heat'), values);
    $('vl-heat').style.opacity = $('vl-opacity').value / 100;
    const outline = $('vl-outline');
    if (v.query !== 'none' && q >= M.prefix) {
      const p = q - M.prefix;
      outline.style.display = 'block';
      outline.style.left = (100 * (p % GW) / GW) + '%'; outline.style.top = (100 * Math.floor(p / GW) / GH) + '%';
      outline.style.width = (100 / GW) + '%'; outline.style.height = (100 / GH) + '%';
    } else outline.style.display = 'none';
    const where = v.query === 'none' ? '' : 'query: ' + describeQuery(q) + ' · ';
    const layer = v.query === 'none' ? '' : 'layer ' + state.layer + ' · ';
    const head = v.heads ? (typeof state.head === 'number' ? 'head ' + state.head : state.head + ' of heads') : '';
    const target = v.query === 'none' ? v.label + ' for ' + currentTarget().label : '';
    $('vl-status').textContent = where + layer + head + target;
    $('vl-layer-row').classList.toggle('disabled', v.query === 'none');
    $('vl-head-row').classList.toggle('disabled', !v.heads);
    $('vl-target-row').classList.toggle('disabled', v.query !== 'none');
    $('vl-help').textContent = v.help;
    await renderHeads(mine);
    if (mine !== ticket) return;
    api.shown = values; api.query = q; api.renders += 1;
    document.body.dataset.renders = String(api.renders);
  }

  async function renderHeads(mine) {
    const box = $('vl-heads');
    if (!view().heads) { box.replaceChildren(); return; }
    const c = await chunk('vl-a-' + state.image + '-' + state.layer, H * N);
    if (mine !== ticket) return;
    const q = query(), figs = [];
    for (const head of [...Array(H).keys(), 'mean', 'max']) {
      const fig = document.createElement('figure'), cv = document.createElement('canvas'), cap = document.createElement('figcaption');
      paint(cv, normalized(headMap(c, head, q)));
      cap.textContent = typeof head === 'number' ? 'head ' + head : head;
      fig.append(cv, cap);
      fig.classList.toggle('on', head === state.head);
      fig.addEventListener('click', () => { state.head = head; $('vl-head').value = String(head); render(); });
      figs.push(fig);
    }
    box.replaceChildren(...figs);
  }

  function renderDistance() {
    const svg = $('vl-distance'), img = meta.images[state.image], NS = 'http://www.w3.org/2000/svg';
    $('vl-distance-fig').style.display = img.distance ? '' : 'none';
    if (!img.distance) return;
    const W = 360, Ht = 200, x0 = 34, y0 = 176, maxD = Math.max(1e-6, ...img.distance.flat()) * 1.05;
    const X = (l) => x0 + (L === 1 ? 0.5 : l / (L - 1)) * (W - x0 - 12), Y = (d) => y0 - d / maxD * (y0 - 12);
    const parts = [];
    const el = (tag, attrs, text) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      parts.push(e); return e;
    };
    el('line', { x1: x0, y1: y0, x2: W - 8, y2: y0, stroke: '#999' });
    el('line', { x1: x0, y1: y0, x2: x0, y2: 8, stroke: '#999' });
    el('text', { x: x0 - 4, y: 14, 'text-anchor': 'end' }, maxD.toFixed(0));
    el('text', { x: x0 - 4, y: y0, 'text-anchor': 'end' }, '0');
    el('text', { x: (W + x0) / 2, y: 196, 'text-anchor': 'middle' }, 'layer');
    for (let l = 0; l < L; l++) {
      el('text', { x: X(l), y: y0 + 11, 'text-anchor': 'middle' }, String(l));
      img.distance[l].forEach((d, h) => {
        const on = l === state.layer && (state.head === h || typeof state.head !== 'number');
        const dot = el('circle', { cx: X(l), cy: Y(d), r: on ? 4.5 : 3, fill: on ? '#1f6feb' : '#888', 'fill-opacity': on ? 1 : 0.6 });
        dot.appendChild(document.createElementNS(NS, 'title')).textContent = 'layer ' + l + ', head ' + h + ': ' + d.toFixed(1) + ' px';
        dot.addEventListener('click', () => { state.layer = l; state.head = h; syncControls(); update(); });
      });
    }
    svg.replaceChildren(...parts);
  }

  function currentTarget() { return meta.images[state.image].targets[state.target]; }

  function renderTargets() { // each image has its own: its top classes, then every text and reference
    const targets = meta.images[state.image].targets;
    state.target = Math.min(state.target, Math.max(0, targets.length - 1));
    $('vl-target').replaceChildren(...targets.map((t, j) => new Option((t.kind === 'class' ? '' : t.kind + ': ') + t.label, String(j))));
    $('vl-target').value = String(state.target);
    $('vl-target-row').style.display = targets.length ? '' : 'none';
  }

  function renderImage() {
    renderTargets();
    const img = meta.images[state.image], photo = new Image();
    photo.onload = () => {
      const cv = $('vl-photo'); cv.width = photo.width; cv.height = photo.height;
      cv.getContext('2d').drawImage(photo, 0, 0);
    };
    photo.src = img.src;
    const top = $('vl-top');
    top.replaceChildren(...img.top.map((t) => {
      const li = document.createElement('li');
      li.textContent = t.label + ' ' + (t.prob >= 0.01 ? t.prob.toFixed(2) : t.prob.toPrecision(2)); // 0.83, 0.0012
      const on = currentTarget();
      li.classList.toggle('target', on !== undefined && on.kind === 'class' && t.index === on.index);
      return li;
    }));
  }

  function syncControls() {
    $('vl-layer').value = String(state.layer);
    $('vl-layer-out').textContent = state.layer + ' / ' + (L - 1);
    $('vl-head').value = String(state.head);
  }
  function update() { syncControls(); renderDistance(); return render(); }

  function patchAt(event) {
    const box = $('vl-stage').getBoundingClientRect();
    const c = Math.min(GW - 1, Math.max(0, Math.floor((event.clientX - box.left) / box.width * GW)));
    const r = Math.min(GH - 1, Math.max(0, Math.floor((event.clientY - box.top) / box.height * GH)));
    return M.prefix + r * GW + c;
  }

  function setup() {
    $('vl-model').textContent = M.summary;
    $('vl-image').replaceChildren(...meta.images.map((img, i) => new Option(img.name, String(i))));
    $('vl-head').replaceChildren(new Option('mean of heads', 'mean'), new Option('max of heads', 'max'),
      ...[...Array(H).keys()].map((h) => new Option('head ' + h, String(h))));
    $('vl-layer').max = String(L - 1);
    $('vl-views').append(...views.map((v) => {
      const label = document.createElement('label'), input = document.createElement('input');
      input.type = 'radio'; input.name = 'vl-view'; input.value = v.id; input.checked = v.id === state.view;
      input.addEventListener('change', () => { state.view = v.id; state.hover = null; update(); });
      label.append(input, ' ' + v.label);
      return label;
    }));
    $('vl-image').addEventListener('change', (e) => { state.image = Number(e.target.value); renderImage(); update(); });
    $('vl-target').addEventListener('change', (e) => { state.target = Number(e.target.value); renderImage(); update(); });
    $('vl-layer').addEventListener('input', (e) => { state.layer = Number(e.target.value); update(); });
    $('vl-head').addEventListener('change', (e) => {
      const v = e.target.value; state.head = v === 'mean' || v === 'max' ? v : Number(v); update();
    });
    $('vl-opacity').addEventListener('input', (e) => { $('vl-heat').style.opacity = e.target.value / 100; });
    const stage = $('vl-stage');
    let frame = 0;
    stage.addEventListener('mousemove', (e) => {
      if (view().query !== 'patch') return;
      const q = patchAt(e);
      if (q === state.hover) return;
      state.hover = q;
      cancelAnimationFrame(frame); frame = requestAnimationFrame(render);
    });
    stage.addEventListener('mouseleave', () => { if (state.hover !== null) { state.hover = null; render(); } });
    stage.addEventListener('click', (e) => {
      if (view().query !== 'patch') return;
      state.pinned = patchAt(e); state.hover = null; render();
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') { state.pinned = defaultQuery(); state.hover = null; render(); }
    });
    const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    stage.addEventListener('keydown', (e) => { // arrow keys walk the pinned patch over the grid
      if (!moves[e.key] || view().query !== 'patch') return;
      e.preventDefault();
      const p = Math.max(0, state.pinned - M.prefix), [dr, dc] = moves[e.key];
      const r = Math.min(GH - 1, Math.max(0, Math.floor(p / GW) + dr)), c = Math.min(GW - 1, Math.max(0, (p % GW) + dc));
      state.pinned = M.prefix + r * GW + c; state.hover = null; render();
    });
    renderImage();
    return update();
  }

  api.ready = setup().catch((err) => { $('vl-status').textContent = 'error: ' + err.message; throw err; });
})();
