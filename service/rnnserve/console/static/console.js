// rnnserve console: models, a live forecast over a WebSocket session, server metrics.
// Plain browser JavaScript, no dependencies. API key: sent as "Authorization: Bearer <key>" on
// fetches; a browser cannot set headers on a WebSocket, so the stream offers the subprotocols
// "rnnserve" and "rnnserve.key.<key>" (the server selects "rnnserve" and never echoes the key,
// and the key stays out of URLs, which logs and histories keep). Kept in sessionStorage, so it
// lives only as long as this tab.
'use strict';
(() => {
  const KEY_STORE = 'rnnserve.apiKey';
  const $ = (sel) => document.querySelector(sel);
  const enc = encodeURIComponent;

  // ------------------------------------------------------------------ errors, API calls

  function showError(message) {
    $('#error-text').textContent = message;
    $('#error').hidden = false;
  }
  function hideError() { $('#error').hidden = true; }

  function apiKey() { return sessionStorage.getItem(KEY_STORE) || ''; }
  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    const key = apiKey();
    if (key) headers.Authorization = 'Bearer ' + key;
    return headers;
  }

  // fetch with the key; a non-2xx answer throws an Error carrying the server's {"error": ...}
  async function api(path, options = {}) {
    const method = options.method || 'GET';
    let res;
    try {
      res = await fetch(path, Object.assign({}, options, { headers: authHeaders(options.headers) }));
    } catch (err) {
      throw new Error(`${method} ${path}: cannot reach the server (${err.message})`);
    }
    if (res.ok) return res;
    const text = await res.text();
    let detail = text;
    try { detail = JSON.parse(text).error || text; } catch (_) { /* not JSON: show as is */ }
    const error = new Error(`${method} ${path} → ${res.status} ${res.statusText}: ${detail}`);
    error.status = res.status;
    throw error;
  }
  const getJSON = async (path) => (await api(path)).json();
  const postJSON = async (path, body) => (await api(path, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  })).json();

  // A subprotocol must be an HTTP token; a key with other characters (new WebSocket would throw)
  // falls back to the ?api_key= query parameter, which the server also accepts.
  const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

  // new WebSocket(...) for a path, carrying the key as a subprotocol.
  function openWebSocket(path) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${location.host}${path}`;
    const key = apiKey();
    if (!key) return new WebSocket(url);
    if (!TOKEN.test(key)) return new WebSocket(`${url}?api_key=${enc(key)}`);
    return new WebSocket(url, ['rnnserve', 'rnnserve.key.' + key]);
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') node.className = v; else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  const fmt = (v, digits = 3) => (Number.isFinite(v) ? v.toFixed(digits) : '–');
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ------------------------------------------------------------------ navigation

  const pages = ['models', 'live', 'server'];
  function showPage() {
    const page = pages.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'models';
    for (const p of pages) $(`#page-${p}`).hidden = p !== page;
    for (const a of document.querySelectorAll('nav a')) {
      a.classList.toggle('active', a.dataset.nav === page);
    }
    if (page === 'server') server.start(); else server.stop();
  }

  // ------------------------------------------------------------------ models page

  let models = [];
  const METRIC_LABELS = {
    site: 'Training site', test_rmse_f: 'Test RMSE (°F)',
    test_persistence_rmse_f: 'Test persistence RMSE (°F)',
    test_same_hour_yesterday_rmse_f: 'Test same-hour-yesterday RMSE (°F)',
    test_linear_ar_rmse_f: 'Test linear AR RMSE (°F)',
    below_persistence_pct: 'Below persistence (%)', beats_linear_ar: 'Beats linear AR',
    val_rmse_f: 'Validation RMSE (°F)', val_persistence_rmse_f: 'Validation persistence RMSE (°F)',
    val_linear_ar_rmse_f: 'Validation linear AR RMSE (°F)', linear_ar_penalty: 'Linear AR penalty',
    epochs: 'Epochs', best_epoch: 'Best epoch',
    params: 'Parameters', seed: 'Seed', train_seconds: 'Training time (s)',
  };
  const SITE_COLUMNS = [['model', 'Model'], ['persistence', 'Persistence'],
    ['same_hour_yesterday', 'Same hour yesterday'], ['linear_ar', 'Linear AR']];

  // metrics.json's "sites": RMSE (°F) per site and months, the model beside each baseline.
  function sitesTable(sites) {
    const body = el('tbody');
    for (const [site, scopes] of Object.entries(sites)) {
      for (const entry of Object.values(scopes)) {
        const months = entry.months.length === 12 ? 'all 12' : entry.months.join(', ');
        body.append(el('tr', {}, el('td', {}, site.replace('_', ' ')), el('td', {}, months),
          ...SITE_COLUMNS.map(([k]) => el('td', { class: 'num' }, metricValue(entry.rmse_f[k])))));
      }
    }
    return el('table', { class: 'site-rmse' }, el('thead', {}, el('tr', {},
      el('th', {}, 'Site'), el('th', {}, 'Months'),
      ...SITE_COLUMNS.map(([, label]) => el('th', { class: 'num' }, `${label} RMSE (°F)`)))), body);
  }

  function metricValue(v) {
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    if (typeof v === 'number') return v.toLocaleString('en', { maximumFractionDigits: 4 });
    return typeof v === 'object' ? JSON.stringify(v) : String(v);
  }

  async function loadReportImage(img, caption, name, file) {
    try {
      const blob = await (await api(`/console/models/${enc(name)}/${file}`)).blob();
      img.src = URL.createObjectURL(blob);
    } catch (err) {
      img.remove();
      caption.textContent += ` — not available: ${err.message}`;
    }
  }

  async function metricsTable(model) {
    let metrics = model.metrics || {};
    try {
      metrics = await getJSON(`/console/models/${enc(model.name)}/metrics.json`);
    } catch (err) {
      if (err.status !== 404) throw err; // no metrics.json: model.json's metrics, if any
    }
    const rows = Object.entries(metrics).filter(([k]) => !['model', 'cell', 'sites'].includes(k));
    if (!rows.length) return el('p', { class: 'muted' }, 'No training metrics for this model.');
    const body = el('tbody');
    for (const [k, v] of rows) {
      body.append(el('tr', {}, el('td', {}, METRIC_LABELS[k] || k),
        el('td', { class: 'num' }, metricValue(v))));
    }
    const table = el('table', { class: 'metrics' }, el('thead', {}, el('tr', {},
      el('th', {}, 'Metric'), el('th', { class: 'num' }, 'Value'))), body);
    if (!metrics.sites || typeof metrics.sites !== 'object') return table;
    return el('div', {}, table, sitesTable(metrics.sites));
  }

  // Each version this server knows: its state (READY, UNAVAILABLE, ...; why when not ready),
  // its live sessions (per version where the listing counts them, else the model's), and the
  // settings its model.json sets.
  function versionsTable(m, liveByModel) {
    const body = el('tbody');
    for (const v of m.version_states || []) {
      const live = v.live_sessions ?? (v.version === m.version ? liveByModel?.[m.name] : null);
      const own = v.settings ? v.settings.from_model_json
        .map((k) => `${k}=${k === 'warmup' ? v.settings.warmup.length : v.settings[k]}`) : [];
      body.append(el('tr', { 'data-version': String(v.version), class: `state-${v.state}` },
        el('td', {}, `v${v.version}${v.version === m.version ? ' (default)' : ''}`),
        el('td', { class: 'version-state' }, v.state + (v.reason ? `: ${v.reason}` : '')),
        el('td', { class: 'num live-sessions' }, live == null ? '–' : String(live)),
        el('td', {}, own.join(', ') || 'server defaults')));
    }
    return el('table', { class: 'versions' }, el('thead', {}, el('tr', {},
      el('th', {}, 'Version'), el('th', {}, 'State'), el('th', { class: 'num' }, 'Live sessions'),
      el('th', {}, 'model.json settings'))), body);
  }

  function modelCard(m, liveByModel) {
    const state = m.state.map((s) => `${s.input} [${s.shape.join(', ')}]`).join(', ') || 'none';
    const features = (m.features || []).map((f) => `${f.name}${f.unit ? ` (${f.unit})` : ''}`);
    const facts = el('dl', { class: 'facts' });
    const fact = (k, v) => facts.append(el('dt', {}, k), el('dd', {}, v));
    fact('Cell', (m.cell || 'unknown').toUpperCase() + (m.directions === 2 ? ', bidirectional' : ''));
    fact('Layers × hidden', `${m.layers ?? '–'} × ${m.hidden_size ?? '–'}`);
    fact('Sessions', m.streamable === false ? `no, predict only: ${m.not_streamable_reason}` : 'yes');
    fact('Input → output', `${m.input_size} → ${m.output_size}`);
    fact('Features', features.join(', ') || '–');
    fact('State', state);
    fact('Versions', m.versions.join(', '));
    fact('Provider', m.provider);

    const plots = el('div', { class: 'plots' });
    for (const [file, title] of [['learning_curve.png', 'Learning curve'],
      ['forecast.png', 'Test-week forecast']]) {
      const img = el('img', { alt: `${m.name} ${title.toLowerCase()}` });
      const caption = el('figcaption', {}, title);
      plots.append(el('figure', {}, img, caption));
      loadReportImage(img, caption, m.name, file);
    }
    const left = el('div', {}, facts, versionsTable(m, liveByModel));
    metricsTable(m).then((t) => left.append(t), (err) => left.append(
      el('p', { class: 'muted' }, `Metrics not available: ${err.message}`)));
    return el('article', { class: 'card', 'data-model': m.name },
      el('h2', {}, m.name, el('span', { class: 'badge' }, `v${m.version}`),
        el('span', { class: 'badge' }, m.provider)),
      el('p', { class: 'muted' }, m.description || ''),
      el('div', { class: 'model-body' }, left, plots));
  }

  async function loadModels() {
    const status = $('#models-status');
    status.textContent = 'Loading models…';
    try {
      const data = await getJSON('/v1/models');
      models = data.models;
      const box = $('#models');
      box.replaceChildren(...models.map((m) => modelCard(m, data.live_sessions)));
      for (const p of data.unavailable || []) {
        box.append(el('article', { class: 'card' }, el('h2', {}, p.name,
          el('span', { class: 'badge' }, 'not loaded')), el('p', { class: 'muted' }, p.reason)));
      }
      status.textContent = `${models.length} model(s) loaded.`;
      live.fillModels();
    } catch (err) {
      status.textContent = 'Could not load the models.';
      showError(err.message);
    }
  }

  // ------------------------------------------------------------------ live forecast chart

  const SVG = 'http://www.w3.org/2000/svg';
  function svgEl(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Draws the week's axes and the points received so far; the values drawn are also written to
  // data-* attributes (data-forecast, data-actual: JSON arrays), for tests and curious people.
  function drawChart(week, points) {
    const svg = $('#chart');
    const W = 960, H = 340, L = 48, R = 16, T = 30, B = 34;
    const n = week ? week.inputs.length : 168;
    const values = week ? [...week.target_f, ...points.map((p) => p.forecast)] : [40, 60];
    const lo = Math.floor(Math.min(...values) - 1), hi = Math.ceil(Math.max(...values) + 1);
    // point i is the forecast for the hour after timestamps[i]: x position i + 1
    const x = (i) => L + ((i + 1) / n) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    const nodes = [];
    const step = Math.max(1, Math.ceil((hi - lo) / 8));
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      nodes.push(svgEl('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        svgEl('text', { class: 'axis', x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, `${v}°`));
    }
    if (week) {
      week.timestamps.forEach((ts, i) => {
        const hour = Number(ts.slice(11, 13));
        if ((hour + 1) % 24 !== 0) return; // midnight of the forecast hour
        const day = new Date(Date.parse(ts.slice(0, 10) + 'T00:00:00Z') + 86400e3);
        const label = day.toLocaleDateString('en', { weekday: 'short', day: 'numeric',
          month: 'short', timeZone: 'UTC' });
        nodes.push(svgEl('line', { class: 'grid', x1: x(i), x2: x(i), y1: T, y2: H - B }));
        if (x(i) < W - R - 70) nodes.push(svgEl('text', { class: 'axis', x: x(i) + 4, y: H - B + 16 }, label));
      });
    }
    const line = (cls, key) => svgEl('polyline', {
      class: cls, points: points.map((p) => `${x(p.i).toFixed(1)},${y(p[key]).toFixed(1)}`).join(' '),
    });
    nodes.push(line('actual', 'actual'), line('linear', 'linear'), line('forecast', 'forecast'));
    nodes.push(svgEl('line', { class: 'actual', x1: L + 8, x2: L + 34, y1: 16, y2: 16 }),
      svgEl('text', { class: 'legend', x: L + 40, y: 20 }, 'observed °F'),
      svgEl('line', { class: 'forecast', x1: L + 130, x2: L + 156, y1: 16, y2: 16 }),
      svgEl('text', { class: 'legend', x: L + 162, y: 20 }, 'model, one hour ahead'),
      svgEl('line', { class: 'linear', x1: L + 330, x2: L + 356, y1: 16, y2: 16 }),
      svgEl('text', { class: 'legend', x: L + 362, y: 20 }, 'linear AR baseline'));
    svg.replaceChildren(...nodes);
    svg.dataset.points = String(points.length);
    svg.dataset.forecast = JSON.stringify(points.map((p) => p.forecast));
    svg.dataset.actual = JSON.stringify(points.map((p) => p.actual));
  }

  // ------------------------------------------------------------------ live forecast session

  let weeks = null;
  const live = {
    ws: null, sessionId: null, model: null, week: null,
    index: 0, points: [], run: 0, epoch: 0, inflight: null, waiting: new Map(), nextId: 0,
    playing: false, busy: false,

    fillModels() {
      const select = $('#live-model');
      const current = select.value;
      select.replaceChildren(...models.map((m) => el('option', { value: m.name }, m.name)));
      if (models.some((m) => m.name === current)) select.value = current;
    },

    setStatus(text) { $('#live-status').textContent = text; },

    redraw() {
      const week = this.week || selectedWeek();
      drawChart(week, this.points);
      const n = week ? week.inputs.length : 0;
      $('#live-hour').textContent = `${this.points.length} / ${n}`;
      const rmse = (key) => Math.sqrt(this.points.reduce((s, p) => s + (p[key] - p.actual) ** 2, 0)
        / this.points.length);
      $('#live-rmse').textContent = this.points.length ? `${fmt(rmse('forecast'))} °F` : '–';
      $('#live-persist').textContent = this.points.length ? `${fmt(rmse('persistence'))} °F` : '–';
      $('#live-yesterday').textContent = this.points.length ? `${fmt(rmse('yesterday'))} °F` : '–';
      $('#live-linear').textContent = this.points.length ? `${fmt(rmse('linear'))} °F` : '–';
      $('#live-session').textContent = this.sessionId || 'none';
      $('#live-play').textContent = this.playing ? '❚❚ Pause' : '▶ Play';
      const svg = $('#chart');
      svg.dataset.session = this.sessionId || '';
      svg.dataset.model = this.model || '';
      svg.dataset.city = week ? week.id : '';
    },

    // Opens the WebSocket; resolves once the server's first message names the session.
    open(model) {
      return new Promise((resolve, reject) => {
        const ws = openWebSocket(`/v1/models/${enc(model)}/stream`);
        let hello = false;
        ws.onmessage = (event) => {
          let msg;
          try { msg = JSON.parse(event.data); } catch (_) {
            showError(`stream: the server sent something that is not JSON: ${event.data}`);
            return;
          }
          if (!hello) {
            hello = true;
            if (msg.error) { reject(new Error(`stream for ${model}: ${msg.status || ''} ${msg.error}`)); return; }
            resolve({ ws, sessionId: msg.session_id });
            return;
          }
          const waiter = this.waiting.get(msg.id);
          if (!waiter) {
            if (msg.error) showError(`stream: ${msg.error}`);
            return;
          }
          this.waiting.delete(msg.id);
          if (msg.error) waiter.reject(new Error(`stream step → ${msg.status || 'error'}: ${msg.error}`));
          else waiter.resolve(msg);
        };
        ws.onclose = (event) => {
          const why = `code ${event.code}${event.reason ? `, ${event.reason}` : ''}`;
          if (!hello) {
            reject(new Error(`could not open a stream for ${model} (WebSocket closed, ${why}). ` +
              'If the server requires an API key, check the key; the server log has details.'));
            return;
          }
          for (const waiter of this.waiting.values()) waiter.reject(new Error(`stream closed (${why})`));
          this.waiting.clear();
          if (ws === this.ws && !ws.closedByUs) {
            showError(`The stream closed unexpectedly (${why}); the session was stopped.`);
            this.stop();
          }
        };
      });
    },

    send(inputs) {
      const id = this.nextId++;
      return new Promise((resolve, reject) => {
        if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
          reject(new Error('the stream is not open: press Play to start a new session'));
          return;
        }
        this.waiting.set(id, { resolve, reject });
        this.ws.send(JSON.stringify({ inputs, id }));
      });
    },

    async start() {
      const model = $('#live-model').value;
      const week = selectedWeek();
      if (!model || !week) throw new Error('pick a model and a week first');
      this.points = [];
      this.index = 0;
      this.model = model;
      this.week = week;
      this.setStatus('opening session…');
      const epoch = this.epoch;
      const { ws, sessionId } = await this.open(model);
      if (epoch !== this.epoch) { // stopped while opening: do not keep the session
        ws.closedByUs = true;
        ws.close(1000, 'stopped');
        await api(`/v1/sessions/${enc(sessionId)}`, { method: 'DELETE' }).catch(() => {});
        throw new Error('stopped before the session opened');
      }
      this.ws = ws;
      this.sessionId = sessionId;
      await this.warmUp();
    },

    async warmUp() {
      if (this.week.warmup.length) {
        this.setStatus(`warming up on the ${this.week.warmup.length} h before the week…`);
        await this.send(this.week.warmup);
      }
    },

    async play() {
      if (this.playing || this.busy) return;
      hideError();
      this.busy = true;
      try {
        if (!this.ws) await this.start();
        else if (this.index >= this.week.inputs.length) await this.restart();
      } catch (err) {
        showError(err.message);
        await this.stop();
        return;
      } finally {
        this.busy = false;
      }
      this.playing = true;
      this.redraw();
      this.loop(++this.run);
    },

    pause() {
      this.playing = false;
      this.run++;
      if (this.ws) this.setStatus('paused');
      this.redraw();
    },

    async loop(run) {
      this.setStatus('playing');
      const n = this.week.inputs.length;
      while (run === this.run && this.index < n) {
        const started = performance.now();
        try {
          await this.stepOnce();
        } catch (err) {
          if (run === this.run) { showError(err.message); this.pause(); }
          return;
        }
        const wait = 1000 / Number($('#live-speed').value) - (performance.now() - started);
        if (wait > 0) await sleep(wait);
      }
      if (run === this.run && this.index >= n) {
        this.playing = false;
        this.setStatus('week done: Play runs it again, Stop deletes the session');
        this.redraw();
      }
    },

    // One hour: send it, draw the answer. A reply that arrives after a reset or stop is dropped.
    async stepOnce() {
      const i = this.index;
      const epoch = this.epoch;
      const week = this.week;
      const pending = this.send([week.inputs[i]]);
      this.inflight = pending.catch(() => {});
      const reply = await pending;
      this.inflight = null;
      if (epoch !== this.epoch) return;
      this.points.push({ i, forecast: reply.outputs[0][0], actual: week.target_f[i],
        persistence: week.inputs[i][0], yesterday: week.baselines_f.same_hour_yesterday[i],
        linear: week.baselines_f.linear_ar[i] });
      this.index = i + 1;
      this.redraw();
    },

    // POST /v1/sessions/{id}/reset, then the week again from its first hour.
    async restart() {
      if (this.inflight) await this.inflight;
      await postJSON(`/v1/sessions/${enc(this.sessionId)}/reset`, {});
      this.epoch++;
      this.points = [];
      this.index = 0;
      this.redraw();
      await this.warmUp();
    },

    async reset() {
      if (!this.ws || this.busy) return;
      const wasPlaying = this.playing;
      this.pause();
      this.busy = true;
      try {
        await this.restart();
        this.setStatus('reset');
      } catch (err) {
        showError(err.message);
      } finally {
        this.busy = false;
      }
      if (wasPlaying) this.play();
    },

    // Close the stream and DELETE the session (the session would outlive the connection).
    async stop() {
      this.pause();
      this.epoch++;
      const { ws, sessionId } = this;
      this.ws = null;
      this.sessionId = null;
      if (ws) { ws.closedByUs = true; ws.close(1000, 'stopped'); }
      this.setStatus('stopped');
      this.redraw();
      if (sessionId) {
        try {
          await api(`/v1/sessions/${enc(sessionId)}`, { method: 'DELETE' });
        } catch (err) {
          if (err.status !== 404) showError(err.message); // 404: already expired or deleted
        }
      }
    },

    // Page unload: the DELETE must outlive the page, so fetch with keepalive.
    leave() {
      if (!this.sessionId) return;
      fetch(`/v1/sessions/${enc(this.sessionId)}`, {
        method: 'DELETE', keepalive: true, headers: authHeaders(),
      }).catch(() => {});
      this.sessionId = null;
      if (this.ws) { this.ws.closedByUs = true; this.ws.close(1000, 'page closed'); }
    },

    async changed() {
      // a new model or week needs a new session
      if (this.ws) await this.stop();
      this.points = [];
      this.week = null;
      this.redraw();
    },
  };

  function selectedWeek() {
    if (!weeks) return null;
    return weeks.cities.find((c) => c.id === $('#live-city').value) || null;
  }

  async function loadWeeks() {
    try {
      weeks = await getJSON('/console/weeks.json');
      $('#live-city').replaceChildren(...weeks.cities.map((c) => el('option', { value: c.id },
        `${c.label}, from ${c.timestamps[0].slice(0, 10)} (test week)`)));
      $('#live-source').textContent = weeks.source;
      live.redraw();
    } catch (err) {
      showError(err.message);
    }
  }

  // ------------------------------------------------------------------ server page

  // Prometheus text format → [{name, labels, value}]
  function parseMetrics(text) {
    const samples = [];
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      }
      samples.push({ name: m[1], labels, value: parseNumber(m[3]) });
    }
    return samples;
  }
  function parseNumber(s) {
    if (s === '+Inf') return Infinity;
    if (s === '-Inf') return -Infinity;
    return Number(s);
  }

  // Quantile of a histogram from cumulative buckets [[le, count], ...] sorted by le, with linear
  // interpolation inside a bucket (as Prometheus' histogram_quantile); `floor` is the lower
  // bound of the first bucket.
  function quantile(q, buckets, floor = 0) {
    const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
    if (!total) return NaN;
    const rank = q * total;
    let prevLe = floor, prevCount = 0;
    for (const [le, count] of buckets) {
      if (count >= rank && count > prevCount) {
        if (le === Infinity) return prevLe;
        return prevLe + (le - prevLe) * (rank - prevCount) / (count - prevCount);
      }
      prevLe = le;
      prevCount = count;
    }
    return prevLe;
  }

  const server = {
    timer: null, previous: null, previousAt: 0,

    start() {
      if (this.timer) return;
      this.refresh();
      this.timer = setInterval(() => this.refresh(), 3000);
    },
    stop() { clearInterval(this.timer); this.timer = null; },

    async refresh() {
      let text;
      try {
        text = await (await api('/metrics')).text();
      } catch (err) {
        showError(err.message);
        return;
      }
      const now = performance.now();
      const samples = parseMetrics(text);
      const current = new Map(samples.map((s) => [key(s.name, s.labels), s.value]));
      const previous = this.previous;
      const dt = (now - this.previousAt) / 1000;
      // the change of one series over the interval; null on the first scrape
      const delta = (s) => {
        if (!previous) return null;
        const before = previous.get(key(s.name, s.labels)) ?? 0;
        return s.value >= before ? s.value - before : s.value; // a restart resets counters
      };
      this.previous = current;
      this.previousAt = now;
      renderSessions(samples);
      renderHTTP(samples, delta, dt);
      renderBatches(samples, delta, dt);
      $('#server-updated').textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    },
  };

  function key(name, labels) {
    return name + JSON.stringify(Object.entries(labels).sort());
  }

  function groupBy(samples, name, fields) {
    const groups = new Map();
    for (const s of samples) {
      if (s.name !== name) continue;
      const id = fields.map((f) => s.labels[f] ?? '').join('\u0000');
      if (!groups.has(id)) groups.set(id, { labels: s.labels, samples: [] });
      groups.get(id).samples.push(s);
    }
    return groups;
  }

  // {buckets over the interval or, when it saw none, since the start; stale flag}
  function histogram(samples, name, labels, delta) {
    const mine = samples.filter((s) => s.name === `${name}_bucket` &&
      Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    const merged = new Map();
    const mergedAll = new Map();
    for (const s of mine) {
      const le = parseNumber(s.labels.le);
      mergedAll.set(le, (mergedAll.get(le) || 0) + s.value);
      merged.set(le, (merged.get(le) || 0) + (delta(s) ?? 0));
    }
    const sorted = (m) => [...m.entries()].sort((a, b) => a[0] - b[0]);
    const recent = sorted(merged);
    if (recent.length && recent[recent.length - 1][1] > 0) return { buckets: recent, stale: false };
    return { buckets: sorted(mergedAll), stale: true };
  }

  function cell(text, cls = 'num') { return el('td', { class: cls }, text); }
  const ms = (s) => (Number.isFinite(s) ? `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms` : '–');
  const rate = (d, dt) => (d === null || dt <= 0 ? '–' : (d / dt).toFixed(2));

  function renderSessions(samples) {
    const rows = new Map(); // model -> row data
    const row = (model) => {
      if (!rows.has(model)) rows.set(model, { versions: [], live: 0, created: 0, deleted: 0, gone: 0 });
      return rows.get(model);
    };
    for (const s of samples) {
      if (s.name === 'rnnserve_model_loaded' && s.value === 1) row(s.labels.model).versions.push(s.labels.version);
      if (s.name === 'rnnserve_sessions_live') row(s.labels.model).live += s.value;
      if (s.name === 'rnnserve_sessions_total') {
        const r = row(s.labels.model);
        const event = s.labels.event;
        if (event === 'created') r.created += s.value;
        else if (event === 'deleted') r.deleted += s.value;
        else r.gone += s.value;
      }
    }
    const body = $('#server-sessions tbody');
    body.replaceChildren(...[...rows.entries()].sort().map(([model, r]) => el('tr',
      { 'data-model': model }, cell(model, ''), cell(r.versions.join(', ') || '–', ''),
      el('td', { class: 'num live-count' }, String(r.live)), cell(String(r.created)),
      cell(String(r.deleted)), cell(String(r.gone)))));
  }

  function renderHTTP(samples, delta, dt) {
    const body = $('#server-http tbody');
    const routes = groupBy(samples, 'rnnserve_http_requests_total', ['method', 'route']);
    const rows = [];
    for (const { labels, samples: group } of routes.values()) {
      const total = group.reduce((s, x) => s + x.value, 0);
      const errors = group.filter((x) => Number(x.labels.status) >= 400).reduce((s, x) => s + x.value, 0);
      const changes = group.map(delta);
      const d = changes.includes(null) ? null : changes.reduce((s, x) => s + x, 0);
      const hist = histogram(samples, 'rnnserve_http_request_duration_seconds',
        { method: labels.method, route: labels.route }, delta);
      const latencyClass = hist.stale ? 'num stale' : 'num';
      rows.push([total, el('tr', {}, cell(labels.method, ''), cell(labels.route, ''),
        cell(String(total)), cell(String(errors)), cell(rate(d, dt)),
        cell(ms(quantile(0.5, hist.buckets)), latencyClass),
        cell(ms(quantile(0.99, hist.buckets)), latencyClass))]);
    }
    rows.sort((a, b) => b[0] - a[0]);
    body.replaceChildren(...rows.map((r) => r[1]));
  }

  function renderBatches(samples, delta, dt) {
    const body = $('#server-batches tbody');
    const rows = [];
    const counts = groupBy(samples, 'rnnserve_batch_rows_count', ['model', 'version']);
    for (const { labels, samples: [count] } of counts.values()) {
      const sel = { model: labels.model, version: labels.version };
      const find = (name) => samples.find((s) => s.name === name &&
        s.labels.model === sel.model && s.labels.version === sel.version);
      const sum = find('rnnserve_batch_rows_sum');
      const queued = find('rnnserve_batch_queue_rows');
      const rowsHist = histogram(samples, 'rnnserve_batch_rows', sel, delta);
      const runHist = histogram(samples, 'rnnserve_batch_run_seconds', sel, delta);
      const stale = rowsHist.stale ? 'num stale' : 'num';
      rows.push(el('tr', {}, cell(sel.model, ''), cell(sel.version, ''), cell(String(count.value)),
        cell(rate(delta(count), dt)), cell(sum ? rate(delta(sum), dt) : '–'),
        cell(sum && count.value ? fmt(sum.value / count.value, 2) : '–'),
        cell(fmt(quantile(0.5, rowsHist.buckets, 1), 1), stale),
        cell(fmt(quantile(0.99, rowsHist.buckets, 1), 1), stale),
        cell(ms(quantile(0.99, runHist.buckets)), runHist.stale ? 'num stale' : 'num'),
        cell(queued ? String(queued.value) : '–')));
    }
    body.replaceChildren(...rows);
  }

  // ------------------------------------------------------------------ wiring

  function init() {
    $('#api-key').value = apiKey();
    $('#key-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const value = $('#api-key').value.trim();
      if (value) sessionStorage.setItem(KEY_STORE, value); else sessionStorage.removeItem(KEY_STORE);
      hideError();
      loadModels();
    });
    $('#key-clear').addEventListener('click', () => {
      sessionStorage.removeItem(KEY_STORE);
      $('#api-key').value = '';
    });
    $('#error-close').addEventListener('click', hideError);
    $('#live-play').addEventListener('click', () => (live.playing ? live.pause() : live.play()));
    $('#live-reset').addEventListener('click', () => live.reset());
    $('#live-stop').addEventListener('click', () => live.stop());
    $('#live-model').addEventListener('change', () => live.changed());
    $('#live-city').addEventListener('change', () => live.changed());
    window.addEventListener('hashchange', showPage);
    window.addEventListener('pagehide', () => live.leave());
    window.__console = { live, server, parseMetrics, quantile };
    showPage();
    loadWeeks();
    loadModels();
  }

  init();
})();
