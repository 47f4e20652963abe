// The bulwark dashboard: plain ES module, no build step, no dependencies.
// Every string that came from a job (ids, payloads, messages, function
// names) goes into the page as text (textContent), never as HTML.

const main = document.getElementById('main');
const TOKEN_KEY = 'bulwark.token';
let stopPage = () => {};  // undoes the current page's timers and streams
let generation = 0;       // bumped by every route(): a page's late answers check it
const current = (mine) => mine === generation;

// --- small DOM helpers ----------------------------------------------------

// el('td', {class: 'mono'}, 'text', child, ...): children are nodes or text.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'onclick' || k === 'onchange' || k === 'onsubmit') node.addEventListener(k.slice(2), v);
    else if (k === 'style') {  // through the CSSOM: the page's CSP allows no style attributes
      for (const decl of String(v).split(';')) {
        const at = decl.indexOf(':');
        if (at > 0) node.style.setProperty(decl.slice(0, at).trim(), decl.slice(at + 1).trim());
      }
    }
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
const text = (v) => (v === null || v === undefined ? '–' : typeof v === 'string' ? v : JSON.stringify(v));
const badge = (s) => el('span', {class: `badge s-${String(s).replace(/[^a-z_]/g, '')}`}, text(s));
const fmt = (n, digits = 0) => (n === null || n === undefined ? '–' : Number(n).toLocaleString(undefined, {maximumFractionDigits: digits}));
function table(head, rows) {
  return el('table', {}, el('thead', {}, el('tr', {}, head.map((h) => el('th', {}, h)))),
            el('tbody', {}, rows.length ? rows : [el('tr', {}, el('td', {colspan: head.length, class: 'muted'}, 'none'))]));
}
function card(title, ...children) { return el('section', {class: 'card'}, el('h2', {}, title), ...children); }
function kv(pairs) { return el('dl', {class: 'kv'}, pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])); }

// --- the API --------------------------------------------------------------

async function askToken() {
  const dialog = document.getElementById('token-dialog');
  const input = document.getElementById('token-input');
  input.value = '';
  return new Promise((resolve) => {
    const done = (value) => { dialog.close(); resolve(value); };
    document.getElementById('token-cancel').onclick = () => done(null);
    document.getElementById('token-form').onsubmit = (e) => { e.preventDefault(); done(input.value); };
    dialog.showModal();
  });
}

// Before the first POST (or the first read, when the server protects reads
// too: server.auth_reads): whether the server wants a token this tab does not
// have yet (GET /v1/auth answers without a 401), and if so, asks for it once
// however many requests wait for the answer.
const authChecked = {};
async function ensureToken(forReads) {
  const key = forReads ? 'reads' : 'writes';
  if (!authChecked[key]) {
    authChecked[key] = (async () => {
      const headers = {};
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.Authorization = `Bearer ${token}`;
      const auth = await fetch('/v1/auth', {headers}).then((r) => r.json());
      if (auth.required && !auth.authorized && (!forReads || auth.reads)) {
        const t = await askToken();
        if (!t) throw new Error('unauthorized: this server needs its API token');
        sessionStorage.setItem(TOKEN_KEY, t);
      }
    })().catch((e) => { delete authChecked[key]; throw e; });
  }
  return authChecked[key];
}

// fetch() of the API: JSON in and out, the token (if one was given) as a
// Bearer header; a 401 asks for the token once more and tries again.
async function api(method, path, body) {
  await ensureToken(method === 'GET');
  for (let attempt = 0; attempt < 2; ++attempt) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (method !== 'GET') headers['Content-Type'] = 'application/json';  // the server refuses a POST without it
    const res = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
    if (res.status === 401 && attempt === 0) {  // a token that was wrong
      const t = await askToken();
      if (!t) break;
      sessionStorage.setItem(TOKEN_KEY, t);
      continue;
    }
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.error ? `${data.error.code}: ${data.error.message}` : `HTTP ${res.status}`);
    return data;
  }
  throw new Error('unauthorized: no token given');
}

// GET /v1/events read with fetch() rather than EventSource, which cannot send
// the token (server.auth_reads). Calls onEvent(type, data) per event;
// reconnects after 2 s from the last id it saw. Returns a function that stops it.
function eventStream(onEvent) {
  const control = new AbortController();
  let lastId = '';
  async function run() {
    while (!control.signal.aborted) {
      try {
        await ensureToken(true);
        const headers = {Accept: 'text/event-stream'};
        const token = sessionStorage.getItem(TOKEN_KEY);
        if (token) headers.Authorization = `Bearer ${token}`;
        if (lastId) headers['Last-Event-ID'] = lastId;
        const res = await fetch('/v1/events', {headers, signal: control.signal});
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let type = 'message', data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('id:')) lastId = line.slice(3).trim();
              else if (line.startsWith('event:')) type = line.slice(6).trim();
              else if (line.startsWith('data:')) data += line.slice(5).trim();
            }
            if (data) onEvent(type, data);
          }
        }
      } catch (e) {
        if (control.signal.aborted) return;
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  run();
  return () => control.abort();
}

function showError(where, err) {
  where.replaceChildren(el('p', {class: 'error'}, String(err.message || err)));
}

// --- overview ---------------------------------------------------------------

// Throughput over the last minutes on a canvas: one line per series.
const SERIES = [['submitted', '#0969da'], ['succeeded', '#1a7f37'], ['failed', '#cf222e']];
function drawChart(canvas, samples) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * ratio; canvas.height = h * ratio;
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...samples.flatMap((s) => SERIES.map(([k]) => s[k])));
  g.strokeStyle = '#d9dee5'; g.fillStyle = '#5f6b7a'; g.font = '11px system-ui';
  for (let i = 0; i <= 4; ++i) {
    const y = 8 + (h - 24) * (i / 4);
    g.beginPath(); g.moveTo(40, y); g.lineTo(w, y); g.stroke();
    g.fillText(fmt(max * (1 - i / 4)), 0, y + 4);
  }
  g.fillText('jobs/s, last 5 min', 44, h - 4);
  for (const [key, color] of SERIES) {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    samples.forEach((s, i) => {
      const x = 40 + (w - 40) * (samples.length === 1 ? 1 : i / (samples.length - 1));
      const y = 8 + (h - 24) * (1 - s[key] / max);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
}

function overview() {
  main.replaceChildren(el('h1', {}, 'Overview'));
  const grid = el('div', {class: 'grid'});
  const status = el('div'), totals = el('div'), queue = el('div'), latency = el('div'), failures = el('div');
  const workers = el('div'), supervisor = el('div'), breakers = el('div'), processes = el('div');
  const canvas = el('canvas', {id: 'throughput'});
  const legend = el('div', {class: 'legend'}, SERIES.map(([k, c]) => el('span', {}, el('i', {style: `background:${c}`}), k)));
  const events = el('tbody');
  grid.append(
    card('Health', status), card('Jobs', totals),
    el('section', {class: 'card wide'}, el('h2', {}, 'Throughput'), canvas, legend),
    card('Queue depth by priority', queue), card('Latency', latency), card('Failures by kind', failures),
    card('Workers', workers), card('Supervisor', supervisor), card('Circuit breakers', breakers),
    card('Child processes', processes),
    el('section', {class: 'card wide'}, el('h2', {}, 'Live events'),
       el('div', {class: 'events'}, el('table', {}, el('thead', {}, el('tr', {}, ['#', 'at', 'job', 'type', 'what'].map((h) => el('th', {}, h)))), events))));
  main.append(grid);
  const samples = [];
  let alive = true;

  async function refresh() {
    try {
      const [s, w, h] = await Promise.all([api('GET', '/v1/stats'), api('GET', '/v1/workers'), api('GET', '/healthz').catch((e) => ({status: 'unhealthy', reasons: [e.message]}))]);
      if (!alive) return;
      status.replaceChildren(el('p', {}, badge(h.status)),
                             h.reasons && h.reasons.length ? el('ul', {}, h.reasons.map((r) => el('li', {}, r))) : el('p', {class: 'muted'}, 'no reasons: all checks pass'));
      const t = s.totals;
      totals.replaceChildren(el('div', {class: 'nums', id: 'totals'},
        ['submitted', 'succeeded', 'failed', 'cancelled', 'retried', 'rejected'].map((k) =>
          el('div', {}, el('span', {}, k), el('b', {class: 'big', 'data-count': k}, fmt(t[k]))))));
      samples.push(s.rates_per_second);
      if (samples.length > 150) samples.shift();
      drawChart(canvas, samples);
      const ready = s.queue.ready_by_priority || [];
      const most = Math.max(1, ...ready);
      queue.replaceChildren(el('p', {}, `${fmt(s.queue.depth)} waiting of ${fmt(s.queue.capacity)}`),
        table(['priority', 'ready', ''], ready.map((n, p) => [p, n]).reverse().filter(([, n], i) => n > 0 || i < 1 || ready.length <= 10)
          .map(([p, n]) => el('tr', {}, el('td', {}, p), el('td', {}, fmt(n)), el('td', {style: 'width:60%'}, el('div', {class: 'bar', style: `width:${(100 * n) / most}%`}))))));
      const L = s.latency_ms || {};
      latency.replaceChildren(table(['', 'p50 ms', 'p99 ms'], [
        el('tr', {}, el('td', {}, 'run time'), el('td', {}, fmt(L.run_time?.p50, 2)), el('td', {}, fmt(L.run_time?.p99, 2))),
        el('tr', {}, el('td', {}, 'queue wait'), el('td', {}, fmt(L.queue_wait?.p50, 2)), el('td', {}, fmt(L.queue_wait?.p99, 2)))]));
      const kinds = {};
      for (const ty of Object.values(s.by_type)) for (const [k, n] of Object.entries(ty.recovered)) kinds[k] = (kinds[k] || 0) + n;
      failures.replaceChildren(table(['kind', 'failed attempts'], Object.entries(kinds).filter(([, n]) => n > 0)
        .map(([k, n]) => el('tr', {}, el('td', {}, k), el('td', {}, fmt(n))))),
        el('p', {class: 'muted'}, `${fmt(t.retried)} retried, ${fmt(t.failed)} dead-lettered`));
      const byState = {};
      for (const x of w.workers) byState[x.state] = (byState[x.state] || 0) + 1;
      workers.replaceChildren(el('p', {}, Object.entries(byState).map(([k, n]) => el('span', {}, badge(k), ` ${n}  `))),
                              el('p', {class: 'muted'}, `${s.workers.alive} alive, ${s.workers.running} running, ${s.workers.abandoned} abandoned`));
      const sv = s.supervisor;
      const rc = w.recovery || {};
      supervisor.replaceChildren(kv([['soft timeouts', fmt(sv.soft_timeouts)], ['hard timeouts', fmt(sv.hard_timeouts)],
        ['stuck reports', fmt(sv.stuck_reports)], ['replacements', fmt(sv.replacements)], ['breakers opened', fmt(sv.breaker_opened)],
        ['recovery limit', el('span', {id: 'recovery-limit'}, `${fmt(rc.limit)} of ${fmt(rc.min)}–${fmt(rc.max)}${rc.adaptive ? '' : ' (fixed)'}`)]]),
        el('p', {class: 'muted', id: 'recovery-reason'}, rc.reason || 'not adjusted yet'));
      const open = Object.entries(s.by_type).filter(([, ty]) => ty.breaker !== 'closed' && ty.breaker !== 'off');
      breakers.replaceChildren(open.length ? table(['type', 'state'], open.map(([ty, v]) => el('tr', {}, el('td', {}, ty), el('td', {}, badge(v.breaker)))))
                                           : el('p', {class: 'muted'}, 'none open'));
      const procs = w.processes.filter((p) => p.state !== 'not_started');
      processes.replaceChildren(procs.length ? table(['id', 'pid', 'state', 'restarts', 'last exit'], procs.map((p) =>
        el('tr', {}, el('td', {}, p.id), el('td', {}, p.pid), el('td', {}, badge(p.state)), el('td', {}, p.restarts), el('td', {}, text(p.last_exit))))) : el('p', {class: 'muted'}, 'none running'));
    } catch (e) {
      showError(status, e);
    }
  }
  refresh();
  const timer = setInterval(refresh, 2000);
  const onEvent = (type, data) => {
    if (type !== 'job' && type !== 'supervisor') return;
    const d = JSON.parse(data);
    const what = d.kind === 'job' ? [badge(d.state), d.attempt ? ` attempt ${d.attempt}` : '', d.failure ? ` (${d.failure})` : '',
                                     d.progress ? ` ${Math.round(d.progress.fraction * 100)} % ${d.progress.note}` : '']
                                  : [el('b', {}, d.action), ' ', d.message];
    if (d.process) what.push(' · ', el('span', {class: 'mono', title: 'the process it happened in'}, d.process));
    events.prepend(el('tr', {}, el('td', {}, d.id), el('td', {class: 'hide-narrow'}, d.at),
                      el('td', {class: 'mono'}, d.job_id ? el('a', {href: `#/job/${encodeURIComponent(d.job_id)}`}, d.job_id) : ''),
                      el('td', {}, text(d.type)), el('td', {}, what)));
    while (events.childElementCount > 100) events.lastElementChild.remove();
  };
  const stopStream = eventStream(onEvent);
  stopPage = () => { alive = false; clearInterval(timer); stopStream(); };
}

// --- jobs ---------------------------------------------------------------------

const STATES = ['', 'queued', 'scheduled', 'waiting_children', 'running', 'succeeded', 'failed', 'cancelled'];

function jobRow(j, extra = []) {
  return el('tr', {}, ...extra, el('td', {class: 'mono'}, el('a', {href: `#/job/${encodeURIComponent(j.id)}`}, j.id)),
            el('td', {}, j.type), el('td', {}, text(j.queue)), el('td', {}, badge(j.state)), el('td', {}, j.attempts),
            el('td', {class: 'hide-narrow'}, text(j.created_at)),
            el('td', {class: 'mono'}, j.error ? `${j.error.type}: ${j.error.message}` : ''));
}

function jobs(params) {
  const state = params.get('state') || '', type = params.get('type') || '', queue = params.get('queue') || '';
  const stateSel = el('select', {id: 'f-state'}, STATES.map((s) => el('option', {value: s, selected: s === state}, s || 'any state')));
  const typeIn = el('input', {id: 'f-type', placeholder: 'type', value: type});
  const queueIn = el('input', {id: 'f-queue', placeholder: 'queue', value: queue});
  const idIn = el('input', {id: 'f-id', placeholder: 'job id'});
  const body = el('div');
  const apply = () => {
    location.hash = `#/jobs?state=${encodeURIComponent(stateSel.value)}&type=${encodeURIComponent(typeIn.value)}&queue=${encodeURIComponent(queueIn.value)}`;
  };
  main.replaceChildren(el('h1', {}, 'Jobs'),
    el('form', {class: 'filters', onsubmit: (e) => { e.preventDefault(); apply(); }}, stateSel, typeIn, queueIn, el('button', {type: 'submit'}, 'Filter')),
    el('form', {class: 'filters', onsubmit: (e) => { e.preventDefault(); if (idIn.value) location.hash = `#/job/${encodeURIComponent(idIn.value)}`; }},
       idIn, el('button', {type: 'submit'}, 'Open')),
    body);
  stateSel.addEventListener('change', apply);
  const cursors = [''];
  const mine = generation;
  async function load() {
    const q = new URLSearchParams({limit: '50'});
    if (state) q.set('state', state);
    if (type) q.set('type', type);
    if (queue) q.set('queue', queue);
    const cursor = cursors[cursors.length - 1];
    if (cursor) q.set('cursor', cursor);
    try {
      const page = await api('GET', `/v1/jobs?${q}`);
      if (!current(mine)) return;
      const prev = el('button', {disabled: cursors.length === 1, onclick: () => { cursors.pop(); load(); }}, '‹ Newer');
      const next = el('button', {disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); load(); }}, 'Older ›');
      body.replaceChildren(el('div', {class: 'card'}, table(['id', 'type', 'queue', 'state', 'attempts', 'created', 'error'], page.jobs.map((j) => jobRow(j))),
                                el('p', {class: 'filters'}, prev, next)));
    } catch (e) { showError(body, e); }
  }
  load();
}

function frames(trace) {
  return el('table', {class: 'frames'}, el('tbody', {}, (trace || []).map((f, i) =>
    el('tr', {}, el('td', {}, `#${i}`), el('td', {class: 'mono'}, text(f.function)),
       el('td', {class: 'mono'}, f.file ? `${f.file}:${f.line}` : text(f.address))))));
}

// A job's progress (JobContext::progress): a bar, the percentage, the note.
function progressView(p) {
  const percent = Math.round(p.fraction * 100);
  return el('span', {}, el('progress', {id: 'job-progress', max: 1, value: p.fraction}), ` ${percent} %`,
            p.note ? el('span', {class: 'muted'}, ` ${p.note}`) : '');
}

function failureView(e) {
  const parts = [kv([['kind', e.kind], ['type', e.type], ['message', e.message]].concat(e.origin ? [['origin', e.origin]] : []))];
  if (e.trace && e.trace.length) parts.push(el('h2', {}, 'Throw site (innermost first)'), frames(e.trace));
  for (const n of e.nested || []) parts.push(el('h2', {}, 'Nested'), kv([['type', n.type], ['message', n.message]]), frames(n.trace));
  return parts;
}

// A flow's tree: the job's children, one level at a time (GET .../tree); a
// child with children of its own opens below it on a click.
function flowTree(id) {
  const list = el('ul', {class: 'tree'});
  async function load(cursor) {
    const q = new URLSearchParams({limit: '100'});
    if (cursor) q.set('cursor', cursor);
    const page = await api('GET', `/v1/jobs/${encodeURIComponent(id)}/tree?${q}`);
    for (const c of page.children) list.append(treeNode(c));
    if (page.next_cursor) {
      const more = el('li', {}, el('button', {onclick: () => { more.remove(); load(page.next_cursor).catch((e) => showError(list, e)); }},
                                   `${page.total - Number(page.next_cursor)} more`));
      list.append(more);
    }
  }
  load('').catch((e) => showError(list, e));
  return list;
}

function treeNode(c) {
  const counts = c.children ? ` ${c.children.total - c.children.pending}/${c.children.total} ended` : '';
  const item = el('li', {'data-id': c.id}, el('a', {href: `#/job/${encodeURIComponent(c.id)}`, class: 'mono'}, c.id), ` ${c.type} `,
                  badge(c.state), counts, c.error ? el('span', {class: 'muted'}, ` ${c.error.kind}: ${c.error.message}`) : '');
  if (c.children) {
    const open = el('button', {class: 'open', title: 'show its children', onclick: () => { open.remove(); item.append(flowTree(c.id)); }}, '▸');
    item.prepend(open);
  }
  return item;
}

async function job(id) {
  main.replaceChildren(el('h1', {}, 'Job ', el('span', {class: 'mono'}, id)));
  const body = el('div', {class: 'grid'});
  const note = el('div');
  main.append(note, body);
  const mine = generation;
  let j;
  try { j = await api('GET', `/v1/jobs/${encodeURIComponent(id)}`); } catch (e) { return showError(body, e); }
  if (!current(mine)) return;
  const act = (what) => async () => {
    try { await api('POST', `/v1/jobs/${encodeURIComponent(id)}/${what}`); if (current(mine)) route(); }
    catch (e) { note.replaceChildren(el('p', {class: 'notice'}, String(e.message))); }
  };
  const terminal = ['succeeded', 'failed', 'cancelled'].includes(j.state);
  body.append(
    card('Job', kv([['state', badge(j.state)], ['type', j.type], ['attempts', `${j.attempts} of ${j.max_attempts}`],
                    ['priority', j.priority], ['created', text(j.created_at)], ['started', text(j.started_at)],
                    ['finished', text(j.finished_at)], ['last run', `${fmt(j.duration_ms, 3)} ms`]]
                    .concat(j.progress ? [['progress', progressView(j.progress)]] : [])
                    .concat(j.parent ? [['parent', el('a', {id: 'job-parent', href: `#/job/${encodeURIComponent(j.parent)}`, class: 'mono'}, j.parent)]] : [])
                    .concat(j.then ? [['then', el('a', {href: `#/job/${encodeURIComponent(j.then.id)}`, class: 'mono'}, `${j.then.type} ${j.then.id}`)]] : [])
                    .concat(j.unique_key ? [['unique key', el('span', {class: 'mono'}, j.unique_key)]] : [])
                    .concat(j.breaker_deferrals ? [['breaker deferrals', j.breaker_deferrals]] : [])),
         el('p', {class: 'filters'},
            el('button', {id: 'btn-cancel', class: 'danger', disabled: terminal, onclick: act('cancel')}, 'Cancel'),
            el('button', {id: 'btn-retry', class: 'primary', disabled: j.state !== 'failed', onclick: act('retry')}, 'Retry'))),
    card('Payload', el('pre', {id: 'payload'}, JSON.stringify(j.payload, null, 2))),
    card('Result', el('pre', {}, JSON.stringify(j.result, null, 2))));
  if (j.children) {
    const k = j.children;
    body.append(el('section', {class: 'card wide', id: 'flow'},
                   el('h2', {}, `Children: ${k.total - k.pending} of ${k.total} ended`),
                   kv([['succeeded', k.succeeded], ['failed', k.failed], ['cancelled', k.cancelled], ['pending', k.pending]]),
                   flowTree(id)));
  }
  if (j.error) body.append(el('section', {class: 'card wide', id: 'error'}, el('h2', {}, 'Last failure'), failureView(j.error)));
  if (j.stuck_trace) body.append(el('section', {class: 'card wide'}, el('h2', {}, 'Where it was stuck'), frames(j.stuck_trace)));
  for (const c of j.cleanup_errors || []) body.append(el('section', {class: 'card wide'}, el('h2', {}, 'Cleanup error'), failureView(c)));
  // A running job's page follows its progress; a waiting parent's, its children.
  if (j.state === 'running' || j.state === 'waiting_children') setTimeout(() => { if (current(mine)) job(id); }, 1000);
}

async function dead() {
  const mine = generation;
  const body = el('div', {class: 'card'});
  const note = el('div');
  let page;
  try { page = await api('GET', '/v1/jobs?state=failed&limit=200'); } catch (e) { page = null; body.append(el('p', {class: 'error'}, e.message)); }
  if (!current(mine)) return;
  main.replaceChildren(el('h1', {}, 'Dead letters'), note, body);
  if (!page) return;
  const again = () => { if (current(mine)) dead(); };
  const boxes = [];
  const rows = page.jobs.map((j) => {
    const box = el('input', {type: 'checkbox', value: j.id});
    boxes.push(box);
    const one = (what) => async () => { await api('POST', `/v1/jobs/${encodeURIComponent(j.id)}/${what}`).catch((e) => note.replaceChildren(el('p', {class: 'notice'}, e.message))); again(); };
    return jobRow(j, [el('td', {}, box)]).appendChild(el('td', {}, el('button', {class: 'retry-one', onclick: one('retry')}, 'Retry'))).parentNode;
  });
  const bulk = el('button', {id: 'retry-selected', class: 'primary', onclick: async () => {
    const ids = boxes.filter((b) => b.checked).map((b) => b.value);
    const failed = [];
    for (const id of ids) await api('POST', `/v1/jobs/${encodeURIComponent(id)}/retry`).catch((e) => failed.push(`${id}: ${e.message}`));
    if (failed.length) note.replaceChildren(el('p', {class: 'notice'}, failed.join('; ')));
    again();
  }}, 'Retry selected');
  const all = el('input', {type: 'checkbox', onchange: (e) => boxes.forEach((b) => { b.checked = e.target.checked; })});
  body.replaceChildren(el('p', {class: 'filters'}, bulk, el('span', {class: 'muted'}, `${page.jobs.length} shown`)),
                       table([all, 'id', 'type', 'queue', 'state', 'attempts', 'created', 'error', ''], rows));
}

async function workers() {
  const body = el('div', {class: 'grid'});
  main.replaceChildren(el('h1', {}, 'Workers and processes'), body);
  const mine = generation;
  let w;
  try { w = await api('GET', '/v1/workers'); } catch (e) { return showError(body, e); }
  if (!current(mine)) return;
  body.append(
    el('section', {class: 'card wide'}, el('h2', {}, 'Workers'), table(['id', 'state', 'job', 'ms since heartbeat', 'restarts', 'abandoned'],
      w.workers.map((x) => el('tr', {}, el('td', {}, x.id), el('td', {}, badge(x.state)),
        el('td', {class: 'mono'}, x.job ? el('a', {href: `#/job/${encodeURIComponent(x.job)}`}, x.job) : '–'),
        el('td', {}, fmt(x.ms_since_heartbeat)), el('td', {}, x.restarts), el('td', {}, x.abandoned ? 'yes' : 'no'))))),
    el('section', {class: 'card wide'}, el('h2', {}, 'Child processes'), table(['id', 'pid', 'state', 'job', 'restarts', 'last exit'],
      w.processes.filter((p) => p.state !== 'not_started').map((p) => el('tr', {}, el('td', {}, p.id), el('td', {}, p.pid), el('td', {}, badge(p.state)),
        el('td', {class: 'mono'}, text(p.job)), el('td', {}, p.restarts), el('td', {}, text(p.last_exit)))))));
  if (w.cluster) {
    body.append(el('section', {class: 'card wide'}, el('h2', {}, 'Processes on the shared queue'), table(['id', 'verdict', 'workers', 'alive', 'last seen'],
      w.cluster.map((p) => el('tr', {}, el('td', {class: 'mono'}, p.id), el('td', {}, badge(p.verdict || '–')), el('td', {}, text(p.workers)),
        el('td', {}, p.alive ? 'yes' : 'no'), el('td', {}, text(p.last_seen)))))));
  }
}

// Job types and named queues with their controls (pause, resume), and the
// periodic jobs.
async function types() {
  const body = el('div', {class: 'grid'});
  const note = el('div');
  main.replaceChildren(el('h1', {}, 'Job types, queues and schedules'), note, body);
  const mine = generation;
  let t, s, st;
  try {
    [t, s, st] = await Promise.all([api('GET', '/v1/types'), api('GET', '/v1/schedules'), api('GET', '/v1/stats')]);
  } catch (e) { return showError(body, e); }
  if (!current(mine)) return;
  const post = (path) => async () => {
    try { await api('POST', path); if (current(mine)) types(); }
    catch (e) { note.replaceChildren(el('p', {class: 'notice'}, String(e.message))); }
  };
  const act = (type, what) => post(`/v1/types/${encodeURIComponent(type)}/${what}`);
  const queues = Object.entries(st.queues || {});
  const limits = (l) => [l.concurrency != null ? `${l.concurrency} at once` : '', l.rate ? `${l.rate.per_second}/s burst ${l.rate.burst}` : '']
    .filter(Boolean).join(', ') || '–';
  body.append(
    el('section', {class: 'card wide'}, el('h2', {}, 'Types'), table(['type', 'state', 'limits', 'running', 'held', 'succeeded', 'breaker', ''],
      t.types.map((x) => el('tr', {'data-type': x.type}, el('td', {class: 'mono'}, x.type), el('td', {}, badge(x.paused ? 'paused' : 'active')),
        el('td', {}, limits(x.limits)), el('td', {}, x.running), el('td', {}, x.held), el('td', {}, x.counts.succeeded), el('td', {}, badge(x.breaker)),
        el('td', {}, el('button', {class: x.paused ? 'primary' : 'danger', 'data-action': x.paused ? 'resume' : 'pause',
                                   onclick: act(x.type, x.paused ? 'resume' : 'pause')}, x.paused ? 'Resume' : 'Pause')))))),
    el('section', {class: 'card wide'}, el('h2', {}, 'Queues'), table(['queue', 'state', 'ready', 'waiting', 'weight here', 'consumers', ''],
      queues.map(([name, q]) => el('tr', {'data-queue': name},
        el('td', {class: 'mono'}, el('a', {href: `#/jobs?state=&type=&queue=${encodeURIComponent(name)}`}, name)),
        el('td', {}, badge(q.paused ? 'paused' : 'active')), el('td', {}, fmt(q.ready)), el('td', {}, fmt(q.waiting)),
        el('td', {}, q.weight || '–'), el('td', {class: q.consumers === 0 ? 'error' : ''}, q.consumers),
        el('td', {}, el('button', {class: q.paused ? 'primary' : 'danger', 'data-action': q.paused ? 'resume' : 'pause',
                                   onclick: post(`/v1/queues/${encodeURIComponent(name)}/${q.paused ? 'resume' : 'pause'}`)},
                        q.paused ? 'Resume' : 'Pause')))))),
    el('section', {class: 'card wide'}, el('h2', {}, 'Schedules'), s.schedules.length ? table(['name', 'cron', 'time zone', 'job type', 'next run', 'last job', 'source'],
      s.schedules.map((x) => el('tr', {}, el('td', {class: 'mono'}, x.name), el('td', {class: 'mono'}, x.cron), el('td', {}, x.time_zone),
        el('td', {}, text(x.job && x.job.type)), el('td', {}, text(x.next_run)),
        el('td', {class: 'mono'}, x.last_job ? el('a', {href: `#/job/${encodeURIComponent(x.last_job)}`}, x.last_job) : '–'), el('td', {}, x.source))))
      : el('p', {class: 'muted'}, 'none')));
}

// --- routing ------------------------------------------------------------------

async function verdict() {
  const v = document.getElementById('verdict');
  try {
    const h = await fetch('/healthz').then((r) => r.json());
    v.className = `badge s-${h.status}`;
    v.textContent = h.status;
  } catch { v.textContent = 'unreachable'; v.className = 'badge s-unhealthy'; }
}

function route() {
  ++generation;
  stopPage();
  stopPage = () => {};
  const [path, query] = (location.hash.slice(1) || '/').split('?');
  const params = new URLSearchParams(query || '');
  const page = path.startsWith('/job/') ? 'jobs' : path.replace(/^\//, '').split('/')[0] || 'overview';
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.dataset.page === page);
  if (path === '/' || path === '') overview();
  else if (path === '/jobs') jobs(params);
  else if (path.startsWith('/job/')) job(decodeURIComponent(path.slice(5)));
  else if (path === '/dead') dead();
  else if (path === '/workers') workers();
  else if (path === '/types') types();
  else main.replaceChildren(el('p', {}, 'No such page.'));
}

window.addEventListener('hashchange', route);
verdict();
setInterval(verdict, 5000);
route();
