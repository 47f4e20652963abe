// BullMQ's side of make bench-redis: starts one worker process
// (bullmq_worker.mjs), then submits N jobs from this process, one
// `queue.add` awaited at a time ("single") or with addBulk in chunks of
// 1000 ("bulk"), and stops the clock when BullMQ counts all N completed.
// Optional: hash-tag key prefixes ("{b1},{b2},{b3}": one queue each, jobs
// to them in turn) and the nodes of a Redis Cluster (every master; commands
// are then counted on each). Prints one JSON line like bulwark_redis_bench.
// Mode "flow": one FlowProducer.add of a parent with N no-op children on
// the same queue; the clock stops when the parent has completed.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { FlowProducer, Queue } from 'bullmq';
import IORedis from 'ioredis';

const [url, jobsArg, failArg, mode = 'single', concurrency = '50', prefixArg = '', clusterArg = ''] =
  process.argv.slice(2);
const N = Number(jobsArg);
const failEvery = Number(failArg);
const u = new URL(url);
// rediss://: TLS, the server verified against BENCH_REDIS_CA (ioredis's tls option).
const connection = { host: u.hostname, port: Number(u.port) };
if (u.protocol === 'rediss:') {
  connection.tls = { ca: readFileSync(process.env.BENCH_REDIS_CA), servername: u.hostname };
}
const name = `bench-${process.pid}-${Date.now()}`;
const nodes = clusterArg ? clusterArg.split(',').map((n) => ({ host: n.split(':')[0], port: Number(n.split(':')[1]) })) : [];
const prefixes = prefixArg ? prefixArg.split(',') : ['bull'];
const queues = prefixes.map((prefix) => new Queue(name, {
  connection: nodes.length ? new IORedis.Cluster(nodes) : connection, prefix,
}));
const probes = nodes.length ? nodes.map((n) => new IORedis(n)) : [new IORedis(connection)];

async function commandsProcessed() {
  let total = 0;
  for (const probe of probes) {
    const info = await probe.info('commandstats');
    for (const m of info.matchAll(/calls=(\d+)/g)) total += Number(m[1]);
  }
  return total;
}
async function counts() {
  let completed = 0;
  let failed = 0;
  for (const queue of queues) {
    const c = await queue.getJobCounts('completed', 'failed');
    completed += c.completed;
    failed += c.failed;
  }
  return { completed, failed };
}

const worker = spawn(process.execPath, [fileURLToPath(new URL('bullmq_worker.mjs', import.meta.url)), url, name,
  concurrency, prefixArg, clusterArg], { stdio: ['ignore', 'pipe', 'inherit'] });
const lines = createInterface({ input: worker.stdout });
const [first] = await once(lines, 'line');
if (first !== 'ready') throw new Error(`worker said ${first}`);

const opts = { attempts: 2, backoff: { type: 'fixed', delay: 1 } };
const data = (i) => ({ fail: failEvery > 0 && i % failEvery === 0 });
const before = await commandsProcessed();
const latencies = [];
const start = performance.now();
let parent = null;
if (mode === 'flow') {
  const flows = new FlowProducer({ connection: nodes.length ? new IORedis.Cluster(nodes) : connection, prefix: prefixes[0] });
  const children = [];
  for (let i = 0; i < N; i++) children.push({ name: 'noop', queueName: name, data: data(i), opts });
  const tree = await flows.add({ name: 'parent', queueName: name, data: {}, children });
  parent = tree.job;
  await flows.close();
} else if (mode === 'bulk') {
  for (let i = 0; i < N; i += 1000) {
    const chunk = [];
    const chunks = queues.map(() => []);
    for (let j = i; j < Math.min(N, i + 1000); j++) chunks[j % queues.length].push({ name: 'noop', data: data(j), opts });
    await Promise.all(queues.map((queue, q) => (chunks[q].length ? queue.addBulk(chunks[q]) : null)));
  }
} else {
  for (let i = 0; i < N; i++) {
    const t = performance.now();
    await queues[i % queues.length].add('noop', data(i), opts);
    latencies.push(performance.now() - t);
  }
}
let polls = 0;
for (;;) {
  if (parent) {
    polls += 1;
    const state = await queues[0].getJobState(parent.id);
    if (state === 'completed' || state === 'failed') break;
  } else {
    const c = await counts();
    polls += queues.length;
    if (c.completed + c.failed >= N) break;
  }
  await new Promise((r) => setTimeout(r, 1));
}
const seconds = (performance.now() - start) / 1000;
const commands = (await commandsProcessed()) - before;
const { failed } = await counts();
worker.kill('SIGTERM');
await once(worker, 'exit');
latencies.sort((a, b) => a - b);
const pct = (p) => (latencies.length ? latencies[Math.floor(p * (latencies.length - 1))] * 1000 : null);
console.log(JSON.stringify({
  system: 'bullmq', mode, processes: 1, queues: queues.length, cluster_masters: nodes.length, concurrency: Number(concurrency), jobs: N, fail_every: failEvery, seconds,
  jobs_per_s: N / seconds, submit_p50_us: pct(0.5), submit_p99_us: pct(0.99),
  redis_commands_per_job: commands / N, redis_commands_polling: polls, dead: failed,
}));
// A Queue on an ioredis Cluster may keep the process alive after close():
// closed, or given up on after 2 s, then the process ends.
await Promise.race([Promise.all(queues.map((queue) => queue.close())), new Promise((r) => setTimeout(r, 2000))]);
probes.forEach((probe) => probe.disconnect());
process.exit(0);
