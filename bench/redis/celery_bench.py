"""Celery's side of make bench-redis, run with Debian's python3-celery.

As a module it is the Celery app the worker loads (-A celery_bench): one
task, `noop`, that fails once (a retry with no countdown) when asked and
counts its successful end in Redis, since without a result backend Celery
records no ends. As a script it starts one worker process (prefork -c 2,
acks_late), waits until it is ready, submits N tasks one apply_async each
("single") or as one group ("bulk"), and stops the clock when all N have
ended. Prints one JSON line like bulwark_redis_bench.
"""
import json
import os
import subprocess
import sys
import time

import redis
from celery import Celery, group
from celery.signals import worker_ready

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")

app = Celery("celery_bench", broker=URL)
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_counter = None


def counter():
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(URL)
    return _counter


@app.task(bind=True, max_retries=1)
def noop(self, fail):
    if fail and self.request.retries == 0:
        raise self.retry(countdown=0)
    counter().incr(f"{QUEUE}:done")


@worker_ready.connect
def _ready(**_):
    counter().set(f"{QUEUE}:ready", 1)


def commands_processed(r):
    return sum(int(stats["calls"]) for stats in r.info("commandstats").values())


def main():
    url, jobs, fail_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else "single"
    queue = f"bench-{os.getpid()}-{int(time.time() * 1000)}"
    env = dict(os.environ, BENCH_REDIS_URL=url, BENCH_QUEUE=queue,
               PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    os.environ.update(BENCH_REDIS_URL=url, BENCH_QUEUE=queue)
    app.conf.broker_url = url
    app.conf.task_default_queue = queue
    probe = redis.Redis.from_url(url, decode_responses=False)
    env["C_FORCE_ROOT"] = "1"  # CI runs as root; the warning says nothing about speed
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_bench", "worker", "-c", "2", "-P", "prefork", "-Q", queue,
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not probe.get(f"{queue}:ready"):
            if time.time() > deadline or worker.poll() is not None:
                raise SystemExit("celery worker did not start")
            time.sleep(0.05)
        fails = [fail_every > 0 and i % fail_every == 0 for i in range(jobs)]
        before = commands_processed(probe)
        latencies = []
        start = time.perf_counter()
        if mode == "bulk":
            group(noop.s(f) for f in fails).apply_async()
        else:
            for f in fails:
                t = time.perf_counter()
                noop.apply_async((f,))
                latencies.append(time.perf_counter() - t)
        polls = 0
        while int(probe.get(f"{queue}:done") or 0) < jobs:
            polls += 1
            time.sleep(0.001)
        seconds = time.perf_counter() - start
        commands = commands_processed(probe) - before - polls - jobs  # minus our polling and the tasks' own counting
        latencies.sort()

        def pct(p):
            return latencies[int(p * (len(latencies) - 1))] * 1e6 if latencies else None

        print(json.dumps({
            "system": "celery", "mode": mode, "processes": 1, "concurrency": 2, "jobs": jobs, "fail_every": fail_every,
            "seconds": seconds, "jobs_per_s": jobs / seconds, "submit_p50_us": pct(0.5), "submit_p99_us": pct(0.99),
            "redis_commands_per_job": commands / jobs, "dead": 0,
        }), flush=True)
    finally:
        # Celery's warm shutdown can outlast the measurement (prefork children
        # finishing, a broker reconnect): the figure is printed, so kill it then.
        worker.terminate()
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)


if __name__ == "__main__":
    main()
