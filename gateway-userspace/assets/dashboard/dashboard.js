// The gateway dashboard: polls /dashboard/api/state, turns counters into
// rates between polls, draws uPlot charts and tables. No inline script or
// style (the page's CSP forbids them); text is always set with textContent.
'use strict';
(function () {
  const HISTORY = 300; // points kept per chart (5 min at the default 1 s)
  const LATENCY_WINDOW = 10; // polls a latency quantile is computed over
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'gateway-dashboard-token';

  const dash = {
    state: null,
    polls: 0,
    charts: {},
    // Poll history for rates: [{t, state}], newest last.
    history: [],
    // Content-Security-Policy violations seen by this page (tests assert
    // there are none).
    cspViolations: [],
  };
  window.gatewayDashboard = dash;
  document.addEventListener('securitypolicyviolation', (e) => {
    dash.cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || ''));
  });

  // ---- token (sessionStorage: gone when the tab closes) ----
  const tokenInput = $('token');
  tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || '';
  tokenInput.addEventListener('change', () => {
    sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
    poll();
  });
  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    const t = tokenInput.value.trim();
    if (t) h['X-Gateway-Token'] = t;
    return h;
  }

  // ---- helpers ----
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function row(cells, cls) {
    const tr = el('tr', null, cls);
    for (const c of cells) {
      if (c instanceof Node) { const td = el('td'); td.appendChild(c); tr.appendChild(td); }
      else tr.appendChild(el('td', c));
    }
    return tr;
  }
  function fill(tableId, rows, empty) {
    const tbody = $(tableId).querySelector('tbody');
    tbody.replaceChildren(...rows);
    if (!rows.length && empty) {
      const cols = $(tableId).querySelectorAll('thead th').length;
      const td = el('td', empty, 'muted');
      td.colSpan = cols;
      const tr = el('tr', null, 'empty');
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
  }
  function fmtRate(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }
  function fmtMs(s) { return s === null || s === undefined ? '–' : (s * 1000).toFixed(s < 0.01 ? 2 : 1) + ' ms'; }
  function fmtDur(secs) {
    if (secs === null || secs === undefined) return 'permanent';
    if (secs < 60) return secs + 's';
    if (secs < 3600) return Math.floor(secs / 60) + 'm ' + (secs % 60) + 's';
    if (secs < 86400) return Math.floor(secs / 3600) + 'h ' + Math.floor((secs % 3600) / 60) + 'm';
    return Math.floor(secs / 86400) + 'd ' + Math.floor((secs % 86400) / 3600) + 'h';
  }
  function clock(unix) {
    const d = new Date(unix * 1000);
    return d.toTimeString().slice(0, 8);
  }
  // Per-second rate between two polls; a series absent from the previous
  // poll started from 0 (label sets appear with their first request).
  function rate(cur, prev, dt) {
    if (dt <= 0) return 0;
    const d = cur - (prev || 0);
    return d < 0 ? 0 : d / dt; // a counter reset (reload, restart) is not negative traffic
  }

  // ---- charts ----
  const PALETTE = ['#3fb950', '#58a6ff', '#f85149', '#d29922', '#db6d28', '#a371f7', '#8a96a3', '#e5534b'];
  const COLORS = {
    passed: '#3fb950', allowlisted: '#58a6ff', dropped_blocklist: '#f85149', dropped_pps: '#d29922',
    dropped_syn: '#db6d28', parse_pass: '#8a96a3', dropped_fragment: '#a371f7',
    '2xx': '#3fb950', '3xx': '#58a6ff', '4xx': '#d29922', '5xx': '#f85149', '429': '#a371f7',
    p50: '#3fb950', p99: '#58a6ff',
  };
  function makeChart(id, names, yLabel) {
    const box = $(id);
    const opts = {
      width: Math.max(300, box.clientWidth || 600),
      height: 200,
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [
        { stroke: '#8a96a3', grid: { stroke: '#2a3440' }, ticks: { stroke: '#2a3440' } },
        { stroke: '#8a96a3', grid: { stroke: '#2a3440' }, ticks: { stroke: '#2a3440' }, label: yLabel, size: 60 },
      ],
      series: [{}].concat(names.map((n, i) => ({
        label: n, stroke: COLORS[n] || PALETTE[i % PALETTE.length], width: 1.5, points: { show: false },
      }))),
    };
    const data = [[]].concat(names.map(() => []));
    const chart = new uPlot(opts, data, box);
    return { id, names, data, chart };
  }
  function push(c, t, values) {
    c.data[0].push(t);
    c.names.forEach((n, i) => c.data[i + 1].push(values[n] === undefined ? null : values[n]));
    if (c.data[0].length > HISTORY) c.data.forEach((s) => s.shift());
    c.chart.setData(c.data);
    $(c.id).dataset.points = String(c.data[0].length);
  }
  window.addEventListener('resize', () => {
    for (const c of Object.values(dash.charts)) {
      const w = $(c.id).clientWidth;
      if (w > 0) c.chart.setSize({ width: w, height: 200 });
    }
  });

  // ---- sections ----
  function renderHeader(s) {
    const parts = ['v' + s.version, 'up ' + fmtDur(s.uptime_secs)];
    if (s.cluster && s.cluster.configured) parts.push('node ' + s.cluster.node_id);
    parts.push(s.write_enabled ? 'write actions on' : 'read-only');
    $('meta').textContent = parts.join(' · ');
    for (const e of document.querySelectorAll('.write-only')) e.classList.toggle('hidden', !s.write_enabled);
  }

  function renderKernel(s, prev, dt, t) {
    const x = s.xdp;
    const pill = $('xdp-state');
    pill.textContent = x.enabled ? x.state + ' on ' + x.interface + ' (' + x.mode + ')' : 'off';
    pill.className = 'pill ' + (x.enabled ? 'ok' : 'warn');
    const counters = x.counters || [];
    if (!dash.charts.verdicts && counters.length) {
      dash.charts.verdicts = makeChart('verdict-chart', counters.map((c) => c.reason), 'packets/s');
    }
    if (dash.charts.verdicts && prev) {
      const before = {};
      for (const c of (prev.xdp.counters || [])) before[c.reason] = c.packets;
      const values = {};
      for (const c of counters) values[c.reason] = rate(c.packets, before[c.reason], dt);
      push(dash.charts.verdicts, t, values);
    }
    fill('top-dropped', (x.top_dropped || []).map((d) =>
      row([d.source, d.packets, d.last_reason, d.last_drop_secs_ago + 's ago'])),
      x.enabled ? 'nothing dropped' : 'XDP is off in this gateway\'s config');
  }

  function renderBlocks(s) {
    const blocks = (s.blocks || []).filter((b) => !b.expired);
    $('blocks-count').textContent = String(blocks.length);
    fill('blocks', blocks.map((b) => {
      // The block's origin: operator (CLI, page), static ([xdp] block in
      // the config), escalation; cluster-wide ones name their node.
      let origin = b.source === 'config' ? 'static (config)' : b.source;
      if (b.cluster) origin += b.origin ? ' (cluster, ' + b.origin + ')' : ' (cluster)';
      const ttl = el('span', fmtDur(b.ttl_secs_left), 'ttl');
      if (b.ttl_secs_left !== null) ttl.dataset.expires = String(Date.now() / 1000 + b.ttl_secs_left);
      const cells = [b.net, origin, b.reason, b.offences, ttl];
      if (s.write_enabled) {
        const btn = el('button', 'unblock', 'unblock');
        btn.type = 'button';
        btn.addEventListener('click', () => act('unblock', { net: b.net, cluster: b.cluster }));
        cells.push(btn);
      } else {
        cells.push('');
      }
      const tr = row(cells);
      tr.dataset.net = b.net;
      return tr;
    }), s.xdp.enabled ? 'no blocks' : 'XDP is off: no kernel blocklist');
  }
  // TTLs count down between polls.
  setInterval(() => {
    const now = Date.now() / 1000;
    for (const e of document.querySelectorAll('#blocks .ttl[data-expires]')) {
      e.textContent = fmtDur(Math.max(0, Math.round(Number(e.dataset.expires) - now)));
    }
  }, 1000);

  function renderEscalations(s) {
    const e = s.escalations;
    $('esc-summary').textContent = e.total + ' total · ' + e.active + ' active';
    const items = (e.recent || []).slice().reverse().map((r) => {
      const li = el('li');
      li.dataset.source = r.source;
      li.appendChild(el('span', clock(r.at_unix), 'when'));
      li.appendChild(el('span', r.source + ' — ' + r.kind, 'src'));
      li.appendChild(el('span', r.points + ' points (' + r.reason + ') → ' + r.action + ' ' +
        fmtDur(r.ttl_secs) + ', offence #' + r.offences + (r.in_kernel ? ', in the kernel' : ', at L7'), 'detail'));
      return li;
    });
    $('escalations').replaceChildren(...items);
    if (!items.length) $('escalations').appendChild(el('li', 'no escalations yet', 'muted'));
  }

  function latencyQuantile(q, cur, old) {
    // Quantile of the observations between two cumulative histograms.
    const b = cur.buckets.map(([le, n], i) => [le === '+Inf' ? Infinity : le, n - (old ? old.buckets[i][1] : 0)]);
    const total = b.length ? b[b.length - 1][1] : 0;
    if (total <= 0) return null;
    const rank = q * total;
    let lower = 0, below = 0;
    for (const [le, n] of b) {
      if (n >= rank) {
        if (le === Infinity) return lower;
        const inside = n - below;
        return inside <= 0 ? le : lower + (le - lower) * (rank - below) / inside;
      }
      lower = le; below = n;
    }
    return lower;
  }

  function renderTraffic(s, prev, dt, t) {
    const tr = s.traffic;
    const classes = ['2xx', '3xx', '4xx', '5xx'];
    const byRoute = {};
    const prevCount = {};
    if (prev) for (const r of prev.traffic.requests) prevCount[r.route + ' ' + r.status] = r.count;
    const total = {};
    for (const r of tr.requests) {
      const e = byRoute[r.route] || (byRoute[r.route] = { total: 0 });
      const v = rate(r.count, prevCount[r.route + ' ' + r.status], dt);
      e[r.status] = (e[r.status] || 0) + v;
      e.total += v;
      total[r.status] = (total[r.status] || 0) + v;
    }
    let r429 = 0;
    if (prev) {
      const before = {};
      for (const r of prev.traffic.rejections) before[r.reason] = r.count;
      for (const r of tr.rejections) {
        if (r.reason === 'rate_limited' || r.reason === 'quota_exceeded') r429 += rate(r.count, before[r.reason], dt);
      }
    }
    if (!dash.charts.rps) dash.charts.rps = makeChart('rps-chart', classes.concat(['429']), 'req/s');
    if (prev) push(dash.charts.rps, t, Object.assign({ '429': r429 }, total));

    // Latency over the last LATENCY_WINDOW polls, all routes merged.
    const old = dash.history.length > LATENCY_WINDOW ? dash.history[dash.history.length - 1 - LATENCY_WINDOW].state : dash.history[0] && dash.history[0].state;
    const merged = (st) => {
      if (!st || !st.traffic.latency.length) return null;
      const first = st.traffic.latency[0].buckets.map(([le]) => [le, 0]);
      for (const l of st.traffic.latency) l.buckets.forEach(([, n], i) => { first[i][1] += n; });
      return { buckets: first };
    };
    const mc = merged(s), mo = old && old !== s ? merged(old) : null;
    if (!dash.charts.latency) dash.charts.latency = makeChart('latency-chart', ['p50', 'p99'], 'ms');
    if (prev && mc) {
      const p50 = latencyQuantile(0.5, mc, mo), p99 = latencyQuantile(0.99, mc, mo);
      push(dash.charts.latency, t, { p50: p50 === null ? null : p50 * 1000, p99: p99 === null ? null : p99 * 1000 });
    }

    const lat = {};
    for (const l of tr.latency) lat[l.route] = l;
    const oldLat = {};
    if (old && old !== s) for (const l of old.traffic.latency) oldLat[l.route] = l;
    fill('routes', Object.keys(byRoute).sort().map((route) => {
      const e = byRoute[route], l = lat[route];
      const q = (p) => (l ? fmtMs(latencyQuantile(p, l, oldLat[route])) : '–');
      const tr = row([route === '-' ? '(no route)' : route, fmtRate(e.total)].concat(
        classes.map((c) => fmtRate(e[c] || 0)), [q(0.5), q(0.99)]));
      tr.dataset.route = route;
      return tr;
    }), 'no requests yet');
    fill('limits', tr.rate_limit_rejections.map((r) => row([r.route, r.limit, r.count])), 'no 429s');
    fill('auth', tr.auth_failures.map((r) => row([r.policy, r.reason, r.count])), 'no auth failures');
    fill('validation', tr.validation_failures.map((r) => row([r.route, r.count])), 'no refusals');
  }

  function renderUpstreams(s) {
    const rows = [];
    for (const u of s.upstreams) {
      for (const t of u.targets) {
        const name = t.host ? t.host + ' → ' + t.address : t.address;
        const health = el('span', t.available ? 'healthy' : 'unhealthy', t.available ? 'health-ok' : 'health-bad');
        const active = u.active_checks ? (t.active_healthy ? 'passing' : 'failing') : 'off';
        const passive = t.ejected_secs_left !== null ? 'ejected ' + fmtDur(t.ejected_secs_left) : t.consecutive_failures + ' consecutive failures';
        const tr = row([u.name, name, health, active, passive, t.ejections, t.in_flight, t.failures],
          t.available ? '' : (t.ejected_secs_left !== null ? 'ejected unhealthy' : 'unhealthy'));
        tr.dataset.target = t.address;
        tr.dataset.upstream = u.name;
        tr.dataset.health = t.available ? 'healthy' : 'unhealthy';
        rows.push(tr);
      }
      for (const d of u.dns_names) {
        rows.push(row([u.name, d.name + ' (DNS)', '', '', d.lookup_failures + ' failed lookups', '', '', '']));
      }
    }
    fill('upstreams', rows, 'no upstreams configured');
  }

  function renderCluster(s) {
    const c = s.cluster;
    const dl = $('cluster');
    const items = [];
    const add = (k, v, cls) => { items.push(el('dt', k)); items.push(el('dd', v, cls)); };
    if (!c.configured) {
      add('mode', 'standalone (no [cluster] section)');
    } else {
      add('node id', c.node_id);
      add('Redis link', c.connected ? 'connected' : 'disconnected', c.connected ? 'health-ok' : 'health-bad');
      add('Redis', c.redis);
      add('shared blocks', Array.isArray(c.cluster_blocks) ? c.cluster_blocks.length : c.cluster_blocks);
      add('clock skew', c.clock_skew_ms + ' ms');
      if (c.error) add('last error', c.error);
    }
    dl.replaceChildren(...items);
  }

  // ---- actions ----
  async function act(kind, body) {
    const status = $('action-status');
    status.className = '';
    status.textContent = kind + ' ' + body.net + '…';
    try {
      const r = await fetch('api/' + kind, {
        method: 'POST',
        headers: authHeaders({ 'Content-Type': 'application/json' }),
        body: JSON.stringify(body),
        credentials: 'omit',
        cache: 'no-store',
      });
      const j = await r.json().catch(() => ({}));
      if (r.ok) {
        status.className = 'ok';
        status.textContent = kind + ' ' + body.net + ': done';
      } else {
        status.className = 'err';
        status.textContent = kind + ' ' + body.net + ' refused (' + r.status + '): ' + (j.detail || r.statusText);
      }
    } catch (e) {
      status.className = 'err';
      status.textContent = kind + ' failed: ' + e;
    }
    dash.lastAction = status.textContent;
    poll();
  }
  $('block-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const body = { net: $('block-net').value.trim(), ttl_secs: Number($('block-ttl').value) };
    const reason = $('block-reason').value.trim();
    if (reason) body.reason = reason;
    act('block', body);
  });

  // ---- polling ----
  let timer = null, inFlight = false;
  async function poll() {
    if (inFlight) return;
    inFlight = true;
    let next = 1000;
    try {
      const r = await fetch('api/state', { headers: authHeaders(), credentials: 'omit', cache: 'no-store' });
      const banner = $('banner');
      if (!r.ok) {
        const j = await r.json().catch(() => ({}));
        banner.textContent = 'state: ' + r.status + ' ' + (j.detail || r.statusText) +
          (r.status === 401 ? ' — enter the token (top right)' : '');
        banner.classList.remove('hidden');
        $('conn').textContent = 'error';
        $('conn').className = 'pill bad';
      } else {
        banner.classList.add('hidden');
        const s = await r.json();
        const t = s.now_unix + (Date.now() % 1000) / 1000;
        const last = dash.history.length ? dash.history[dash.history.length - 1] : null;
        const prev = last ? last.state : null;
        const dt = last ? t - last.t : 0;
        renderHeader(s);
        renderKernel(s, prev, dt, t);
        renderBlocks(s);
        renderEscalations(s);
        renderTraffic(s, prev, dt, t);
        renderUpstreams(s);
        renderCluster(s);
        dash.history.push({ t, state: s });
        if (dash.history.length > LATENCY_WINDOW + 1) dash.history.shift();
        dash.state = s;
        dash.polls += 1;
        document.body.dataset.polls = String(dash.polls);
        $('conn').textContent = 'live';
        $('conn').className = 'pill ok';
        next = s.refresh_ms || 1000;
      }
    } catch (e) {
      $('conn').textContent = 'offline';
      $('conn').className = 'pill bad';
      next = 3000;
    } finally {
      inFlight = false;
      clearTimeout(timer);
      timer = setTimeout(poll, next);
    }
  }
  poll();
})();
