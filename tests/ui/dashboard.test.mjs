// The dashboard in a real browser: Debian's chromium, headless, driven by
// puppeteer-core, against a real `bulwark serve` with the built-in workers
// and an API token. Saves screenshots for README (docs/screenshots/).
//
//   node tests/ui/dashboard.test.mjs path/to/bulwark [screenshot-dir]
import {spawn} from 'node:child_process';
import {existsSync, mkdirSync, mkdtempSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import puppeteer from 'puppeteer-core';

const [binary, shots = 'docs/screenshots'] = process.argv.slice(2);
if (!binary) {
  console.error('usage: node dashboard.test.mjs BULWARK_BINARY [SCREENSHOT_DIR]');
  process.exit(2);
}
const TOKEN = 'ui-test-token';
const XSS = '<img src=x onerror=alert(1)>';
let failures = 0;
function checkAll(name, ok, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${ok || !detail ? '' : `: ${detail}`}`);
  if (!ok) failures++;
}

// A server: port 0, its address from the first line it prints.
async function startServer(name, serverConfig) {
  const dir = mkdtempSync(join(tmpdir(), 'bulwark-ui-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({workers: 2, logging: {level: 'critical'}, server: serverConfig}));
  const proc = spawn(binary, ['serve', '--config', join(dir, 'config.json')], {stdio: ['ignore', 'pipe', 'inherit']});
  const url = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) resolve(`http://127.0.0.1:${m[1]}`);
    });
    proc.on('exit', (code) => reject(new Error(`bulwark serve (${name}) exited ${code}`)));
    setTimeout(() => reject(new Error(`bulwark serve (${name}) did not start`)), 20000);
  });
  return {proc, url};
}
const {proc: server, url: base} = await startServer('writes', {listen: '127.0.0.1:0', auth_token: TOKEN});
// server.auth_reads: the dashboard asks for the token before it can show anything.
const {proc: readsServer, url: readsBase} = await startServer('reads', {listen: '127.0.0.1:0', auth_token: TOKEN, auth_reads: true});

async function call(method, path, body) {
  const res = await fetch(base + path, {method, headers: {'Content-Type': 'application/json', Authorization: `Bearer ${TOKEN}`},
                                        body: body === undefined ? undefined : JSON.stringify(body)});
  return {status: res.status, body: await res.json()};
}
const submit = async (spec) => (await call('POST', '/v1/jobs', spec)).body.id;
const ended = async (id) => (await call('GET', `/v1/jobs/${encodeURIComponent(id)}?wait_ms=10000`)).body;

// The first `queued` event of job `id` on the event stream, or null after 15 s.
async function nextQueued(id, ready) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 15000);
  try {
    const res = await fetch(`${base}/v1/events?state=queued`, {signal: controller.signal,
                                                               headers: {Authorization: `Bearer ${TOKEN}`}});
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let pending = '';
    ready();
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return null;
      pending += decoder.decode(value, {stream: true});
      const events = pending.split('\n\n');
      pending = events.pop();
      for (const e of events) {
        const data = e.split('\n').find((l) => l.startsWith('data: '));
        if (data && JSON.parse(data.slice(6)).job_id === id) return JSON.parse(data.slice(6));
      }
    }
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

// Every check in one browser; `shots`: where its screenshots go (null: none).
async function inBrowser(name, launch, shots) {
const browser = await puppeteer.launch(launch);
const consoleErrors = [];
const alerts = [];
const check = (what, ok, detail) => checkAll(`${name}: ${what}`, ok, detail);
const screenshot = async (page, file, options = {}) => {
  if (shots) await page.screenshot({path: join(shots, file), ...options});
};
try {
  const page = await browser.newPage();
  await page.setViewport({width: 1280, height: 800});
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.on('dialog', async (d) => { alerts.push(d.message()); await d.dismiss(); });
  if (shots) mkdirSync(shots, {recursive: true});

  // Overview: its counters follow the jobs submitted.
  await page.goto(`${base}/`, {waitUntil: 'load'});
  await page.waitForSelector('#totals [data-count="submitted"]');
  const before = await page.$eval('#totals [data-count="submitted"]', (n) => n.textContent);
  for (let i = 0; i < 20; ++i) await submit({type: 'echo', payload: {n: i}});
  await submit({type: 'sleep', payload: {ms: 300}});
  await submit({type: 'fail', payload: {throw: 'runtime_error', message: 'overview failure'}, max_attempts: 2});
  await page.waitForFunction((b) => document.querySelector('#totals [data-count="submitted"]')?.textContent !== b,
                             {timeout: 15000}, before);
  const after = await page.$eval('#totals [data-count="submitted"]', (n) => n.textContent);
  check('overview: the submitted count moves after jobs are submitted', after !== before, `${before} -> ${after}`);
  await page.waitForFunction(() => document.querySelectorAll('.events tbody tr').length > 0, {timeout: 15000});
  check('overview: live events arrive', true);
  const recovery = await page.$eval('#recovery-limit', (n) => n.textContent);
  check('overview: the recovery limit and its range', /^\d+ of 1–\d+/.test(recovery), recovery);
  await new Promise((r) => setTimeout(r, 2500));  // a few chart samples
  await screenshot(page, 'overview.png');

  // A failed job's page shows its throw-site trace.
  const failed = await submit({type: 'fail', payload: {throw: 'runtime_error', message: 'boom from the ui test'}, max_attempts: 1});
  check('fail job ends failed', (await ended(failed)).state === 'failed');
  await page.goto(`${base}/#/job/${encodeURIComponent(failed)}`, {waitUntil: 'load'});
  await page.waitForSelector('#error');
  const errorText = await page.$eval('#error', (n) => n.textContent);
  check('job page: the throw-site trace names fail_throw_site', errorText.includes('fail_throw_site'));
  check('job page: the message is shown', errorText.includes('boom from the ui test'));
  await screenshot(page, 'failed-job.png', {fullPage: true});

  // A running job's page shows its progress (the built-in sleep reports it).
  const sleeper = await submit({type: 'sleep', payload: {ms: 4000}});
  await page.goto(`${base}/#/job/${encodeURIComponent(sleeper)}`, {waitUntil: 'load'});
  await page.waitForFunction(() => Number(document.querySelector('#job-progress')?.value) > 0, {timeout: 15000});
  const shown = await page.$eval('#job-progress', (n) => Number(n.value));
  check('job page: a running job shows its progress', shown > 0 && shown <= 1, String(shown));

  // A flow's page: its children as a tree, a nested child opened with a click.
  const flowId = `flow-${Date.now()}`;
  await call('POST', '/v1/jobs', {type: 'collect', id: flowId, on_child_failure: 'ignore', children: [
    {type: 'echo', payload: 1}, {type: 'fail', max_attempts: 1},
    {type: 'collect', children: [{type: 'echo', payload: 'deep'}]}]});
  check('flow: the parent succeeds', (await ended(flowId)).state === 'succeeded');
  await page.goto(`${base}/#/job/${encodeURIComponent(flowId)}`, {waitUntil: 'load'});
  await page.waitForSelector(`#flow li[data-id="${flowId}.c2"] button.open`);
  const flowText = await page.$eval('#flow', (n) => n.textContent);
  check('flow: the page counts its children', flowText.includes('Children: 3 of 3 ended'), flowText);
  check('flow: each child is listed with its state',
        await page.$eval(`#flow li[data-id="${flowId}.c1"]`, (n) => n.querySelector('.badge').textContent) === 'failed');
  await page.click(`#flow li[data-id="${flowId}.c2"] button.open`);
  await page.waitForSelector(`#flow li[data-id="${flowId}.c2.c0"]`);
  check('flow: a child with children opens below it', true);
  await screenshot(page, 'flow.png', {fullPage: true});
  await page.click(`#flow li[data-id="${flowId}.c2.c0"] a`);
  await page.waitForSelector('#job-parent');
  check('flow: a child links back to its parent', (await page.$eval('#job-parent', (n) => n.textContent)) === `${flowId}.c2`);

  // The types page pauses and resumes a type (the token is asked for with the first POST below).
  const pausePage = async () => {
    await page.goto(`${base}/#/types`, {waitUntil: 'load'});
    await page.waitForSelector('tr[data-type="echo"] button');
  };
  // Retry from the dead-letter page: the page asks for the token once.
  await page.goto(`${base}/#/dead`, {waitUntil: 'load'});
  await page.waitForSelector(`input[type=checkbox][value="${failed}"]`);
  await page.click(`input[type=checkbox][value="${failed}"]`);
  let streamReady;
  const requeued = nextQueued(failed, () => {});
  await new Promise((r) => setTimeout(r, 300));  // the stream is open
  await page.click('#retry-selected');
  await page.waitForSelector('#token-dialog[open]');
  await page.type('#token-input', TOKEN);
  await page.click('#token-form button[value=ok]');
  const event = await requeued;
  check('dead letters: retry selected puts the job back in the queue', event !== null && event.state === 'queued');

  // Cancel from a job's page (the token is remembered).
  const waiting = await submit({type: 'sleep', payload: {ms: 10}, delay_ms: 60000});
  await page.goto(`${base}/#/job/${encodeURIComponent(waiting)}`, {waitUntil: 'load'});
  await page.waitForSelector('#btn-cancel:not([disabled])');
  await page.click('#btn-cancel');
  await page.waitForFunction(() => document.querySelector('.badge.s-cancelled') !== null, {timeout: 10000});
  check('job page: cancel works', (await call('GET', `/v1/jobs/${encodeURIComponent(waiting)}`)).body.state === 'cancelled');
  check('the token was asked for once only', await page.$eval('#token-dialog', (d) => !d.open));

  // Types: pause echo, see it paused, resume it.
  await pausePage();
  await page.click('tr[data-type="echo"] button[data-action="pause"]');
  await page.waitForSelector('tr[data-type="echo"] button[data-action="resume"]', {timeout: 10000});
  const pausedNow = (await call('GET', '/v1/types')).body.types.find((t) => t.type === 'echo').paused;
  check('types: the pause button pauses the type', pausedNow === true);
  await page.click('tr[data-type="echo"] button[data-action="resume"]');
  await page.waitForSelector('tr[data-type="echo"] button[data-action="pause"]', {timeout: 10000});
  check('types: the resume button resumes it', (await call('GET', '/v1/types')).body.types.find((t) => t.type === 'echo').paused === false);

  // Queues: the default queue listed with its counts; pause and resume it.
  await page.waitForSelector('tr[data-queue="default"] button[data-action="pause"]', {timeout: 10000});
  await page.click('tr[data-queue="default"] button[data-action="pause"]');
  await page.waitForSelector('tr[data-queue="default"] button[data-action="resume"]', {timeout: 10000});
  check('queues: the pause button pauses the queue', (await call('GET', '/v1/stats')).body.queues.default.paused === true);
  await page.click('tr[data-queue="default"] button[data-action="resume"]');
  await page.waitForSelector('tr[data-queue="default"] button[data-action="pause"]', {timeout: 10000});
  check('queues: the resume button resumes it', (await call('GET', '/v1/stats')).body.queues.default.paused === false);
  // Jobs: the queue column, and the filter by queue.
  await page.goto(`${base}/#/jobs?state=&type=&queue=default`, {waitUntil: 'load'});
  await page.waitForFunction(() => document.querySelectorAll('main table tbody tr td a').length > 0, {timeout: 10000});
  const queueCells = await page.$$eval('main table tbody tr', (rows) => rows.map((r) => r.children[2].textContent));
  check('jobs: the queue column says each job\'s queue', queueCells.length > 0 && queueCells.every((q) => q === 'default'), queueCells.join(','));
  await page.goto(`${base}/#/jobs?state=&type=&queue=nowhere`, {waitUntil: 'load'});
  await page.waitForFunction(() => document.querySelector('main table tbody td.muted') !== null, {timeout: 10000});
  check('jobs: a queue filter with no jobs lists none', (await page.$eval('#f-queue', (n) => n.value)) === 'nowhere');

  // A payload that is markup renders as text.
  const xss = await submit({type: 'echo', payload: {note: XSS}, id: `xss-${Date.now()}`});
  await ended(xss);
  await page.goto(`${base}/#/jobs?state=&type=echo`, {waitUntil: 'load'});
  await page.goto(`${base}/#/job/${encodeURIComponent(xss)}`, {waitUntil: 'load'});
  await page.waitForSelector('#payload');
  const payloadText = await page.$eval('#payload', (n) => n.textContent);
  check('xss: the payload shows as text', payloadText.includes(XSS));
  check('xss: no element was made from it', (await page.$$('main img')).length === 0);
  await new Promise((r) => setTimeout(r, 500));
  check('xss: no script ran', alerts.length === 0, alerts.join('; '));

  // Workers page and a phone-width overview.
  await page.goto(`${base}/#/workers`, {waitUntil: 'load'});
  await page.waitForFunction(() => document.querySelectorAll('main table tbody tr').length >= 2, {timeout: 10000});
  check('workers page lists the workers', true);
  await page.setViewport({width: 390, height: 844});
  await page.goto(`${base}/`, {waitUntil: 'load'});
  await page.waitForSelector('#totals');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check('phone width: nothing wider than the screen', overflow <= 1, `${overflow}px too wide`);
  await screenshot(page, 'overview-phone.png');

  // With server.auth_reads the overview asks for the token first, then
  // shows the counters and the live events (read with the token too).
  const reads = await browser.newPage();
  reads.on('pageerror', (e) => consoleErrors.push(String(e)));
  await reads.setViewport({width: 1280, height: 800});
  await reads.goto(`${readsBase}/`, {waitUntil: 'load'});
  await reads.waitForSelector('#token-dialog[open]');
  check('auth_reads: the overview asks for the token', true);
  await reads.type('#token-input', TOKEN);
  await reads.click('#token-form button[value=ok]');
  await reads.waitForSelector('#totals [data-count="submitted"]', {timeout: 15000});
  await new Promise((r) => setTimeout(r, 500));  // the event stream is open
  const unauthorized = await fetch(`${readsBase}/v1/jobs`);
  check('auth_reads: a read without the token is 401', unauthorized.status === 401);
  await fetch(`${readsBase}/v1/jobs`, {method: 'POST', headers: {'Content-Type': 'application/json', Authorization: `Bearer ${TOKEN}`},
                                       body: JSON.stringify({type: 'echo', payload: {reads: true}})});
  await reads.waitForFunction(() => document.querySelectorAll('.events tbody tr').length > 0, {timeout: 15000});
  check('auth_reads: live events arrive with the token', true);
  await reads.close();

  check('no console errors', consoleErrors.length === 0, consoleErrors.join(' | '));
} catch (e) {
  check('the run finished', false, e.stack || String(e));
} finally {
  await browser.close();
}
}

await inBrowser('chromium', {executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
                             args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu']}, shots);
const firefox = process.env.FIREFOX || '/usr/bin/firefox-esr';
if (existsSync(firefox)) {
  await inBrowser('firefox', {browser: 'firefox', executablePath: firefox, headless: true}, null);
} else {
  checkAll('firefox: installed (scripts/install-deps.sh ui installs firefox-esr)', false, firefox);
}
server.kill('SIGTERM');
readsServer.kill('SIGTERM');
console.log(failures === 0 ? 'dashboard: all checks passed' : `dashboard: ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
