// keyproxy's page: reads /_keyproxy/ui/data every few seconds and draws it with DOM calls only
// (textContent, never innerHTML: names come from config files). The token stays in this tab's
// session storage and goes in the authorization header; nothing is fetched from elsewhere.
'use strict';
(() => {
  const STORE = 'keyproxy-token';
  const EVERY_MS = 5000;
  const HISTORY_EVERY_MS = 60000;
  const SVG = 'http://www.w3.org/2000/svg';
  const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
  const $ = (id) => document.getElementById(id);
  const state = { history: null, historyAt: 0, measure: 'cost_usd', split: 'by_client', timer: 0 };

  // Formats: money in dollars with cents, durations as "4 min", counts with separators.
  const money = (v) => (v == null ? '–' : v > 0 && v < 0.005 ? '<$0.01' : '$' + v.toFixed(2));
  const count = (n) => (n == null ? '–' : Number(n).toLocaleString('en-US'));
  function duration(s) {
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.round(s / 60) + ' min';
    if (s < 86400) {
      const h = Math.floor(s / 3600), m = Math.round((s % 3600) / 60);
      return m ? h + ' h ' + m + ' min' : h + ' h';
    }
    const d = Math.floor(s / 86400), h = Math.round((s % 86400) / 3600);
    return h ? d + ' d ' + h + ' h' : d + ' d';
  }
  const ago = (min) => (min == null ? 'never' : min === 0 ? 'this minute' : duration(min * 60) + ' ago');
  const tokens = (c) => (c ? c.prompt_tokens + c.completion_tokens : 0);

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const kid of kids) if (kid != null) e.append(kid);
    return e;
  }
  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const kid of kids) if (kid != null) e.append(kid);
    return e;
  }
  const fill = (id, ...kids) => $(id).replaceChildren(...kids.filter((k) => k != null));
  function table(head, rows) {
    const tr = el('tr', {}, ...head.map((h) => el('th', { text: h[0], class: h[1] || '' })));
    return el('table', {}, el('thead', {}, tr), el('tbody', {}, ...rows));
  }
  const td = (text, attrs) => el('td', Object.assign({ text: String(text) }, attrs || {}));

  async function load() {
    clearTimeout(state.timer);
    const token = sessionStorage.getItem(STORE);
    const headers = token ? { authorization: 'Bearer ' + token } : {};
    const withHistory = Date.now() - state.historyAt > HISTORY_EVERY_MS;
    let data;
    try {
      const resp = await fetch('/_keyproxy/ui/data' + (withHistory ? '?history=1' : ''), {
        headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
      });
      data = await resp.json();
      if (!resp.ok) throw new Error((data.error && data.error.message) || 'status ' + resp.status);
    } catch (e) {
      problem('keyproxy did not answer (' + e.message + '); trying again in a few seconds.');
      state.timer = setTimeout(load, EVERY_MS);
      return;
    }
    problem(null);
    if (data.view === 'login') return login(token ? data.message : null);
    if (data.history) {
      state.history = data.history;
      state.historyAt = Date.now();
    }
    render(data, Boolean(token));
    state.timer = setTimeout(load, EVERY_MS);
  }

  function problem(text) {
    $('problem').hidden = !text;
    $('problem').textContent = text || '';
  }

  function login(message) {
    for (const id of ['keys', 'agents', 'traffic', 'health', 'logout', 'who']) $(id).hidden = true;
    $('refreshed').textContent = '';
    $('login').hidden = false;
    $('login-error').hidden = !message;
    $('login-error').textContent = message || '';
    $('token').focus();
  }

  function render(data, withToken) {
    const admin = data.view === 'admin';
    $('login').hidden = true;
    $('logout').hidden = !withToken;
    const who = $('who');
    who.hidden = false;
    who.textContent = admin ? 'admin view' : 'agent ' + (data.agents[0] ? data.agents[0].client : '');
    $('refreshed').textContent = 'updated ' + new Date().toLocaleTimeString('en-GB');
    for (const id of ['keys', 'traffic', 'health']) $(id).hidden = !admin;
    $('agents').hidden = false;
    if (admin) {
      renderKeys(data.status);
      renderTraffic(data.traffic);
      renderHealth(data.status);
    }
    renderAgents(data.agents, data.usage_counted);
    renderHistory();
  }

  function renderKeys(status) {
    const failing = status.sources.filter((s) => !s.ok);
    fill('failing', failing.length ? el('p', { class: 'error' }, 'Failing sources (the keys they gave last are kept):') : null,
      failing.length ? el('ul', {}, ...failing.map((s) =>
        el('li', { 'data-source': s.path || s.kind, class: 'state failing' }, el('code', { text: s.kind + ' ' + (s.path || '') }), ': ' + s.error))) : null);
    const profiles = Object.entries(status.profiles).map(([name, p]) => {
      const rows = p.keys.map((k) => {
        const resting = k.state === 'resting';
        const state = resting ? 'resting ' + duration(k.resting_for_s) + ' more, after ' + k.rested_after : 'active';
        return el('tr', { 'data-fingerprint': k.fingerprint },
          td(k.fingerprint, { class: 'fp' }), td(k.source),
          td(state, { class: 'state ' + k.state, 'data-field': 'state' }),
          td(ago(k.used_minutes_ago), { 'data-field': 'used' }));
      });
      if (!rows.length) rows.push(el('tr', {}, td('no key: requests get a local 401 missing-key', { class: 'state none', colspan: '4' })));
      return el('div', { class: 'profile', 'data-profile': name }, el('h3', {}, el('code', { text: name })),
        table([['Fingerprint'], ['Source'], ['State'], ['Last used']], rows));
    });
    fill('profiles', ...profiles);
  }

  function limitLine(dd, used, limit, left, resets, unit) {
    dd.append(unit(used) + ' of ' + unit(limit) + ' · ' + unit(left) + ' left · resets in ' + duration(resets));
  }

  function renderAgents(agents, counted) {
    if (!agents.length) {
      fill('agent-list', el('p', { class: 'muted', text: 'No [[clients]] configured: every request counts as one anonymous agent.' }));
      return;
    }
    fill('agent-list', ...agents.map((a) => {
      const items = [];
      const item = (label, field, ...kids) => items.push(el('dt', { text: label }), el('dd', { 'data-field': field }, ...kids));
      const use = a.usage || {};
      for (const [label, key] of [['Today', 'today'], ['This month', 'month']]) {
        const c = use[key];
        if (!counted || !c) continue;
        item(label, key, el('span', { 'data-field': key + '-cost', text: money(c.cost_usd) }), ' · ',
          el('span', { 'data-field': key + '-requests', text: count(c.requests) }), ' requests · ',
          el('span', { 'data-field': key + '-tokens', text: count(tokens(c)) }), ' tokens');
      }
      const l = a.limits || {};
      if (l.budget) {
        const b = l.budget;
        const bar = el('progress', { max: String(b.limit_usd), value: String(Math.min(b.limit_usd, b.used_usd + b.reserved_usd)) });
        item('Budget', 'budget', el('span', { 'data-field': 'budget-used', text: money(b.used_usd) }), ' of ' + money(b.limit_usd) + ' per ' + b.period + ' · ',
          el('span', { 'data-field': 'budget-left', text: money(b.left_usd) }), ' left · resets in ' + duration(b.resets_in_secs), bar);
      } else item('Budget', 'budget', 'none');
      const r = l.requests_per_minute;
      const t = l.tokens_per_day;
      if (r) { const dd = el('dd'); limitLine(dd, r.used, r.limit, r.left, r.resets_in_secs, count); item('Requests/min', 'rpm', dd.textContent); }
      if (t) { const dd = el('dd'); limitLine(dd, t.used, t.limit, t.left, t.resets_in_secs, count); item('Tokens/day', 'tpd', dd.textContent); }
      item('Models', 'models', a.models && a.models.length ? a.models.join(', ') : 'any');
      item('Profiles', 'profiles', a.profiles.join(', '));
      return el('div', { class: 'card', 'data-agent': a.client },
        el('h3', {}, el('span', { text: a.client }), a.admin ? el('span', { class: 'badge', text: 'admin' }) : null),
        el('dl', {}, ...items));
    }));
  }

  // Stacked bars, one per day (or minute), one colour per series; the tooltip is an SVG title.
  function bars(labels, series, format, colorOf) {
    const W = 1000, H = 190, top = 14, bottom = 22, left = 4;
    const n = labels.length, slot = (W - left) / n, w = Math.max(2, slot * 0.72);
    const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
    const max = Math.max(...totals, 0);
    const out = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img' });
    out.append(svg('line', { x1: 0, x2: W, y1: H - bottom, y2: H - bottom, stroke: '#d0d5dd' }));
    out.append(svg('text', { x: left, y: 10 }, 'max ' + format(max)));
    labels.forEach((label, i) => {
      let y = H - bottom;
      const x = left + i * slot + (slot - w) / 2;
      series.forEach((s, j) => {
        const v = s.values[i] || 0;
        if (!v || !max) return;
        const h = Math.max(1, (v / max) * (H - bottom - top));
        y -= h;
        out.append(svg('rect', { x: x.toFixed(1), y: y.toFixed(1), width: w.toFixed(1), height: h.toFixed(1), fill: colorOf(s, j) },
          svg('title', {}, label + ' · ' + s.name + ': ' + format(v))));
      });
      if (i % Math.ceil(n / 10) === 0 || i === n - 1) {
        const anchor = i === 0 ? 'start' : i === n - 1 ? 'end' : 'middle';
        const at = i === 0 ? x : i === n - 1 ? x + w : x + w / 2;
        out.append(svg('text', { x: at.toFixed(1), y: H - 6, 'text-anchor': anchor }, label));
      }
    });
    return out;
  }

  function renderHistory() {
    const h = state.history;
    $('history').hidden = !h;
    if (!h) return;
    const fmt = state.measure === 'cost_usd' ? money : count;
    const series = Object.entries(h[state.split]).map(([name, s]) => ({ name: name || '(no client)', values: s[state.measure] }));
    const labels = h.days.map((d) => d.slice(5));
    const color = (s, j) => COLORS[j % COLORS.length];
    if (!series.some((s) => s.values.some((v) => v))) {
      fill('history-chart', el('p', { class: 'muted', text: 'No usage in the last 30 days.' }));
      fill('history-legend');
      return;
    }
    fill('history-chart', bars(labels, series, fmt, color));
    fill('history-legend', ...series.map((s, j) => {
      const total = s.values.reduce((a, b) => a + b, 0);
      return el('span', { 'data-series': s.name },
        svg('svg', { width: 10, height: 10 }, svg('rect', { width: 10, height: 10, fill: color(s, j) })),
        s.name + ' ' + fmt(total));
    }));
  }

  function renderTraffic(t) {
    const ms = (v) => (v == null ? '–' : v < 1000 ? '≤ ' + v + ' ms' : '≤ ' + v / 1000 + ' s');
    const refused = Object.values(t.local).reduce((a, b) => a + b, 0);
    const figure = (label, field, text) => el('div', { class: 'figure' }, el('b', { 'data-field': field, text }), label);
    fill('traffic-figures',
      figure('requests', 'requests', count(t.requests)),
      figure('upstream 4xx/5xx', 'upstream-errors', count(t.upstream_errors)),
      figure('answered by keyproxy', 'local', count(refused)),
      figure('upstream latency p50', 'p50', ms(t.latency_p50_ms)),
      figure('p99', 'p99', ms(t.latency_p99_ms)));
    const labels = t.minutes.map((m) => new Date(m.at * 1000).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' }));
    const errs = t.minutes.map((m) => m.upstream_errors + Object.values(m.local).reduce((a, b) => a + b, 0));
    const series = [
      { name: 'answered', values: t.minutes.map((m, i) => m.requests - errs[i]) },
      { name: 'errors', values: errs },
    ];
    fill('traffic-chart', bars(labels, series, count, (s) => (s.name === 'errors' ? '#c4312b' : '#1f4e79')));
    const rows = Object.entries(t.local).sort((a, b) => b[1] - a[1])
      .map(([reason, n]) => el('tr', { 'data-reason': reason }, td(reason, { class: 'fp' }), td(count(n), { class: 'num', 'data-field': 'count' })));
    fill('traffic-errors', rows.length
      ? table([['x-keyproxy-error'], ['requests', 'num']], rows)
      : el('p', { class: 'muted', text: 'No request answered by keyproxy itself in the last hour.' }));
  }

  function renderHealth(s) {
    const items = [];
    const item = (label, field, text, cls) => items.push(el('dt', { text: label }), el('dd', { 'data-field': field, text, class: cls || '' }));
    item('Version', 'version', s.version + ', up ' + duration(s.uptime_secs));
    item('Config', 'config', s.config || 'embedded default');
    item('Reloads', 'reloads', String(s.reload.count));
    item('Last good reload', 'last-ok', s.reload.last_ok_at || 'none yet');
    const e = s.reload.last_error;
    item('Last reload error', 'last-error', e ? e.at + ': ' + e.message : 'none', e ? 'error' : '');
    if (s.shared) {
      item('Shared store', 'shared', s.shared.store + (s.shared.reachable ? ', reachable' : ', NOT reachable') + ', ' + s.shared.replicas + ' replica(s)', s.shared.reachable ? '' : 'error');
    }
    const sources = s.sources.map((src) => el('tr', {},
      td(src.kind), td(src.path || '', { class: 'fp' }), td(src.ok ? 'ok' : src.error, { class: 'state ' + (src.ok ? 'active' : 'failing') })));
    fill('health-body', el('dl', {}, ...items), el('h3', { text: 'Sources' }), table([['Kind'], ['Path'], ['State']], sources));
  }

  function toggle(attr, key) {
    for (const b of document.querySelectorAll('[data-' + attr + ']')) {
      b.addEventListener('click', () => {
        state[key] = b.dataset[attr];
        for (const o of document.querySelectorAll('[data-' + attr + ']')) o.classList.toggle('on', o === b);
        renderHistory();
      });
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login').addEventListener('submit', (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(STORE, $('token').value.trim());
      $('token').value = '';
      state.historyAt = 0;
      load();
    });
    $('logout').addEventListener('click', () => {
      clearTimeout(state.timer);
      sessionStorage.removeItem(STORE);
      state.history = null;
      state.historyAt = 0;
      login(null);
    });
    toggle('measure', 'measure');
    toggle('split', 'split');
    load();
  });
})();
