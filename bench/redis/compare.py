#!/usr/bin/env python3
"""make bench-redis: bulwark against BullMQ and Celery on one redis-server.

Starts a redis-server on a free loopback port (no persistence), then for
each repetition runs every system once in a rotated order (so none always
goes first on a warm or cold machine), each on an emptied Redis:

  bulwark x1   bulwark_redis_bench, 1 worker process (2 workers, prefetch 48)
  bulwark x2   the same with 2 worker processes
  BullMQ       bullmq_bench.mjs: 1 Node worker process, concurrency 50
  Celery       celery_bench.py: 1 worker, prefork -c 2, acks_late

each with a separate producer process submitting N no-op jobs, one call
per job ("single") or in bulk (bulwark submit_many, BullMQ addBulk, a Celery
group), then N with every 10th failing once. Celery gets N/10 jobs: at its
speed N would take minutes. Prints a Markdown table (medians, min-max, and
bulwark x1 / BullMQ as the median of per-repetition ratios) and writes every
run to --out.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(tmp):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", tmp, "--logfile", os.path.join(tmp, "redis.log")])
    for _ in range(200):
        if subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True).stdout.strip() == b"PONG":
            return proc, port
        time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def systems(bench_binary, url):
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    return {
        "bulwark x1": lambda n, fail, mode: [bench_binary, "--url", url, "--jobs", str(n), "--fail-every", str(fail),
                                             "--mode", mode, "--processes", "1", "--workers", "2", "--prefetch", "48"],
        "bulwark x2": lambda n, fail, mode: [bench_binary, "--url", url, "--jobs", str(n), "--fail-every", str(fail),
                                             "--mode", mode, "--processes", "2", "--workers", "2", "--prefetch", "48"],
        "BullMQ": lambda n, fail, mode: ["node", os.path.join(HERE, "bullmq_bench.mjs"), url, str(n), str(fail), mode,
                                         "50"],
        "Celery": lambda n, fail, mode: [py, os.path.join(HERE, "celery_bench.py"), url, str(max(1, n // 10)),
                                         str(fail), mode],
    }


def run_one(cmd, port):
    subprocess.run(["redis-cli", "-p", str(port), "FLUSHALL"], check=True, capture_output=True)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1])


def fmt(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True, help="path of bulwark_redis_bench")
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated systems to run (default: all)")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "results", "redis-latest.json"))
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bulwark-bench-redis-")
    redis, port = start_redis(tmp)
    url = f"redis://127.0.0.1:{port}/0"
    all_systems = systems(args.bench, url)
    names = [s for s in all_systems if not args.only or s in args.only.split(",")]
    scenarios = [("single", 0), ("single", 10), ("bulk", 0), ("bulk", 10)]
    runs = []
    try:
        for rep in range(args.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for mode, fail in scenarios:
                for name in order:
                    r = run_one(all_systems[name](args.jobs, fail, mode), port)
                    r.update(name=name, rep=rep, scenario=f"{mode}/{fail}")
                    runs.append(r)
                    print(f"rep {rep + 1} {mode:6} fail_every={fail:<2} {name:11} {r['jobs_per_s']:>10,.0f} jobs/s",
                          file=sys.stderr, flush=True)
    finally:
        redis.terminate()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"jobs": args.jobs, "reps": args.reps, "runs": runs}, f, indent=1)

    print(f"\n{args.jobs:,} jobs per run (Celery {max(1, args.jobs // 10):,}), {args.reps} repetitions, "
          f"rotated order; medians with min-max\n")
    print("| scenario | system | jobs/s | min-max | x BullMQ (paired) | submit p50 / p99 us | Redis cmds/job |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for mode, fail in scenarios:
        scenario = f"{mode}/{fail}"
        for name in names:
            mine = [r for r in runs if r["name"] == name and r["scenario"] == scenario]
            rates = [r["jobs_per_s"] for r in mine]
            ratios = []
            for r in mine:
                peer = [p for p in runs if p["name"] == "BullMQ" and p["scenario"] == scenario and p["rep"] == r["rep"]]
                if peer:
                    ratios.append(r["jobs_per_s"] / peer[0]["jobs_per_s"])
            p50 = [r["submit_p50_us"] for r in mine if r.get("submit_p50_us") is not None]
            p99 = [r["submit_p99_us"] for r in mine if r.get("submit_p99_us") is not None]
            cmds = statistics.median(r["redis_commands_per_job"] for r in mine)
            label = f"{mode}, {'10 % fail once' if fail else 'no-op'}"
            submit = f"{fmt(statistics.median(p50))} / {fmt(statistics.median(p99))}" if p50 else "-"
            print(f"| {label} | {name} | {fmt(statistics.median(rates))} | {fmt(min(rates))}-{fmt(max(rates))} | "
                  f"{fmt(statistics.median(ratios), 2) if ratios else '-'} | {submit} | {cmds:.1f} |")


if __name__ == "__main__":
    main()
