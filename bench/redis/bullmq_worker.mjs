// A BullMQ worker process for make bench-redis: one Worker, concurrency
// from argv; a job with data.fail throws on its first attempt. Prints
// "ready" once connected, then runs until SIGTERM.
import { readFileSync } from 'node:fs';
import { Worker } from 'bullmq';

const [url, name, concurrency] = process.argv.slice(2);
const u = new URL(url);
// rediss://: TLS, the server verified against BENCH_REDIS_CA (ioredis's tls option).
const connection = { host: u.hostname, port: Number(u.port) };
if (u.protocol === 'rediss:') {
  connection.tls = { ca: readFileSync(process.env.BENCH_REDIS_CA), servername: u.hostname };
}
const worker = new Worker(name, async (job) => {
  if (job.data.fail && job.attemptsMade === 0) throw new Error('fails once');
  return null;
}, { connection, concurrency: Number(concurrency) });
await worker.waitUntilReady();
console.log('ready');
process.on('SIGTERM', async () => {
  await worker.close();
  process.exit(0);
});
