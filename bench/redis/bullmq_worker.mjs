// A BullMQ worker process for make bench-redis: one Worker per queue (a
// queue per key prefix: "bull", or the hash-tag prefixes given, which put
// each queue in its own Redis Cluster slot), concurrency from argv; a job
// with data.fail throws on its first attempt. With cluster nodes given it
// connects through ioredis's Cluster. Prints "ready" once connected, then
// runs until SIGTERM.
import { readFileSync } from 'node:fs';
import { Worker } from 'bullmq';
import IORedis from 'ioredis';

const [url, name, concurrency, prefixArg = '', clusterArg = ''] = process.argv.slice(2);
const u = new URL(url);
// rediss://: TLS, the server verified against BENCH_REDIS_CA (ioredis's tls option).
const options = { host: u.hostname, port: Number(u.port) };
if (u.protocol === 'rediss:') {
  options.tls = { ca: readFileSync(process.env.BENCH_REDIS_CA), servername: u.hostname };
}
const nodes = clusterArg ? clusterArg.split(',').map((n) => ({ host: n.split(':')[0], port: Number(n.split(':')[1]) })) : [];
const connect = () => (nodes.length
  ? new IORedis.Cluster(nodes, { redisOptions: { maxRetriesPerRequest: null } })
  : new IORedis({ ...options, maxRetriesPerRequest: null }));
const prefixes = prefixArg ? prefixArg.split(',') : ['bull'];
const workers = prefixes.map((prefix) => new Worker(name, async (job) => {
  if (job.data.fail && job.attemptsMade === 0) throw new Error('fails once');
  return null;
}, { connection: connect(), prefix, concurrency: Number(concurrency) }));
await Promise.all(workers.map((w) => w.waitUntilReady()));
console.log('ready');
process.on('SIGTERM', async () => {
  setTimeout(() => process.exit(0), 2000).unref();  // closing on a Cluster may not end
  await Promise.all(workers.map((w) => w.close()));
  process.exit(0);
});
