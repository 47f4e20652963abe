// BullMQ's side of make bench-redis: starts one worker process
// (bullmq_worker.mjs), then submits N jobs from this process, one
// `queue.add` awaited at a time ("single") or with addBulk in chunks of
// 1000 ("bulk"), and stops the clock when BullMQ counts all N completed.
// Prints one JSON line like bulwark_redis_bench.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import IORedis from 'ioredis';

const [url, jobsArg, failArg, mode = 'single', concurrency = '50'] = process.argv.slice(2);
const N = Number(jobsArg);
const failEvery = Number(failArg);
const u = new URL(url);
// rediss://: TLS, the server verified against BENCH_REDIS_CA (ioredis's tls option).
const connection = { host: u.hostname, port: Number(u.port) };
if (u.protocol === 'rediss:') {
  connection.tls = { ca: readFileSync(process.env.BENCH_REDIS_CA), servername: u.hostname };
}
const name = `bench-${process.pid}-${Date.now()}`;
const queue = new Queue(name, { connection });
const probe = new IORedis(connection);

async function commandsProcessed() {
  const info = await probe.info('commandstats');
  let total = 0;
  for (const m of info.matchAll(/calls=(\d+)/g)) total += Number(m[1]);
  return total;
}

const worker = spawn(process.execPath, [fileURLToPath(new URL('bullmq_worker.mjs', import.meta.url)), url, name,
  concurrency], { stdio: ['ignore', 'pipe', 'inherit'] });
const lines = createInterface({ input: worker.stdout });
const [first] = await once(lines, 'line');
if (first !== 'ready') throw new Error(`worker said ${first}`);

const opts = { attempts: 2, backoff: { type: 'fixed', delay: 1 } };
const data = (i) => ({ fail: failEvery > 0 && i % failEvery === 0 });
const before = await commandsProcessed();
const latencies = [];
const start = performance.now();
if (mode === 'bulk') {
  for (let i = 0; i < N; i += 1000) {
    const chunk = [];
    for (let j = i; j < Math.min(N, i + 1000); j++) chunk.push({ name: 'noop', data: data(j), opts });
    await queue.addBulk(chunk);
  }
} else {
  for (let i = 0; i < N; i++) {
    const t = performance.now();
    await queue.add('noop', data(i), opts);
    latencies.push(performance.now() - t);
  }
}
let polls = 0;
for (;;) {
  const counts = await queue.getJobCounts('completed', 'failed');
  polls += 1;
  if (counts.completed + counts.failed >= N) break;
  await new Promise((r) => setTimeout(r, 1));
}
const seconds = (performance.now() - start) / 1000;
const commands = (await commandsProcessed()) - before;
const failed = (await queue.getJobCounts('failed')).failed;
worker.kill('SIGTERM');
await once(worker, 'exit');
latencies.sort((a, b) => a - b);
const pct = (p) => (latencies.length ? latencies[Math.floor(p * (latencies.length - 1))] * 1000 : null);
console.log(JSON.stringify({
  system: 'bullmq', mode, processes: 1, concurrency: Number(concurrency), jobs: N, fail_every: failEvery, seconds,
  jobs_per_s: N / seconds, submit_p50_us: pct(0.5), submit_p99_us: pct(0.99),
  redis_commands_per_job: commands / N, redis_commands_polling: polls, dead: failed,
}));
await queue.close();
probe.disconnect();
