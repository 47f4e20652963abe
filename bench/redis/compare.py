#!/usr/bin/env python3
"""make bench-redis: bulwark against BullMQ and Celery on one redis-server.

Starts a redis-server on a free loopback port (no persistence), then for
each repetition runs every system once in a rotated order (so none always
goes first on a warm or cold machine), each on an emptied Redis:

  bulwark x1   bulwark_redis_bench, 1 worker process (2 workers, prefetch 48)
  bulwark x2   the same with 2 worker processes
  BullMQ       bullmq_bench.mjs: 1 Node worker process, concurrency 50
  Celery       celery_bench.py: 1 worker, prefork -c 2, acks_late
  bulwark x1 TLS   bulwark x1 over TLS (rediss://, a second redis-server
                   with --tls-port and certificates made here with openssl)
  BullMQ TLS       BullMQ over the same TLS Redis (ioredis `tls`), its peer
  bulwark x1 WAIT  bulwark x1 with redis.min_replicas_ack 1, on a third
                   redis-server that has one replica
  bulwark x1 3q    bulwark x1 with three named queues (jobs to each in turn)
  BullMQ 3q        BullMQ with three queues (one Worker each, concurrency 50)
  bulwark x1 3q cluster, BullMQ 3q cluster
                   the same on a Redis Cluster of three masters made here
                   (redis-cli --cluster create), the queues' names chosen so
                   that each queue's hash slot is on another master; Redis
                   CPU is then also reported per master

and a flow ("bulwark x1 flow" against "BullMQ flow"): one parent with
--flow-children no-op children (bulwark: one submit() of a spec with
children; BullMQ: one FlowProducer.add), on the plain Redis, timed from the
submit to the parent's end, with Redis commands and CPU per child;

each with a separate producer process submitting N no-op jobs, one call
per job ("single") or in bulk (bulwark submit_many, BullMQ addBulk, a Celery
group), then N with every 10th failing once. Celery gets N/10 jobs: at its
speed N would take minutes. Redis's own CPU time per job (INFO cpu, before
and after each run) is measured for every system: at scale the Redis
server's one core is the limit. Prints a Markdown table (medians, min-max,
and each system / BullMQ as the median of per-repetition ratios; the TLS
ones against BullMQ TLS) and writes every run to --out.
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


def free_port(bus=False):
    """A free loopback port; with bus, one whose cluster bus port (port + 10000) is free too, so below 55536."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise SystemExit("no free port with a free cluster bus port")


def make_certs(tmp):
    """A CA and a server certificate for localhost, made with openssl."""
    def run(*cmd):
        subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt",
        "-subj", "/CN=bench CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    with open(os.path.join(tmp, "server.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-out", "server.crt", "-extfile", "server.ext")
    return os.path.join(tmp, "ca.crt")


class Redis:
    """A redis-server on a free loopback port: plain, TLS, or the master of a replica."""

    def __init__(self, tmp, name, tls_ca=None, replica=False, cluster=False):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.port = free_port(bus=cluster)
        self.cli = ["redis-cli", "-p", str(self.port)]
        args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "redis.log")]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", os.path.join(self.dir, "nodes.conf")]
        if tls_ca:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", os.path.join(tmp, "server.crt"),
                     "--tls-key-file", os.path.join(tmp, "server.key"), "--tls-ca-cert-file", tls_ca,
                     "--tls-auth-clients", "no"]
            self.cli = ["redis-cli", "--tls", "--cacert", tls_ca, "-h", "localhost", "-p", str(self.port)]
            self.url = f"rediss://localhost:{self.port}/0"
        else:
            args += ["--port", str(self.port)]
            self.url = f"redis://127.0.0.1:{self.port}/0"
        self.procs = [subprocess.Popen(["redis-server"] + args)]
        self.wait(self.cli)
        if replica:
            rport = free_port()
            rdir = self.dir + "-replica"
            os.makedirs(rdir)
            self.procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save",
                                                "", "--dir", rdir, "--replicaof", "127.0.0.1", str(self.port),
                                                "--logfile", os.path.join(rdir, "redis.log")]))
            for _ in range(400):
                if b"state=online" in self.command("INFO", "replication"):
                    break
                time.sleep(0.05)
            else:
                raise SystemExit("the replica did not come online")

    def command(self, *args):
        return subprocess.run(self.cli + list(args), capture_output=True, check=True).stdout

    def wait(self, cli):
        for _ in range(200):
            if subprocess.run(cli + ["PING"], capture_output=True).stdout.strip() == b"PONG":
                return
            time.sleep(0.05)
        log = os.path.join(self.dir, "redis.log")
        tail = open(log).read()[-2000:] if os.path.exists(log) else "(no log)"
        raise SystemExit(f"redis-server on port {self.port} did not start; its log ends:\n{tail}")

    def cpu_seconds(self):
        info = self.command("INFO", "cpu").decode()
        return sum(float(l.split(":")[1]) for l in info.splitlines() if l.startswith(("used_cpu_sys:", "used_cpu_user:")))

    def stop(self):
        for p in self.procs:
            p.terminate()
            p.wait()


class Cluster:
    """A Redis Cluster of three masters (no replicas) made with redis-cli --cluster create."""

    def __init__(self, tmp, started):
        self.nodes = []
        started.append(self)  # stopped with the others if what follows fails
        for i in range(3):
            self.nodes.append(Redis(tmp, f"cluster{i}", cluster=True))
        self.addresses = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        self.url = self.nodes[0].url
        subprocess.run(["redis-cli", "--cluster", "create", *self.addresses.split(","), "--cluster-yes"], check=True,
                       capture_output=True)
        for _ in range(400):
            if all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.nodes):
                break
            time.sleep(0.05)
        else:
            raise SystemExit("the cluster did not come up")
        # slot ranges -> the index of the master that serves them
        self.ranges = []
        for line in self.nodes[0].command("CLUSTER", "NODES").decode().splitlines():
            f = line.split()
            if "master" not in f[2]:
                continue
            port = int(f[1].split("@")[0].split(":")[1])
            index = [n.port for n in self.nodes].index(port)
            for r in f[8:]:
                lo, _, hi = r.partition("-")
                self.ranges.append((int(lo), int(hi or lo), index))

    def master_of(self, key):
        slot = int(self.nodes[0].command("CLUSTER", "KEYSLOT", key).strip())
        return next(i for lo, hi, i in self.ranges if lo <= slot <= hi)

    def spread(self, tag_of):
        """Three names n (from qa, qb, ...) whose tag_of(n) falls on three different masters."""
        names, used = [], set()
        for c in "abcdefghijklmnopqrstuvwxyz":
            name = "q" + c
            m = self.master_of(tag_of(name))
            if m not in used:
                used.add(m)
                names.append(name)
            if len(names) == 3:
                return names
        raise SystemExit("no three names on three masters")

    def command(self, *args):
        return [n.command(*args) for n in self.nodes]

    def cpu_by_node(self):
        return [n.cpu_seconds() for n in self.nodes]

    def cpu_seconds(self):
        return sum(self.cpu_by_node())

    def stop(self):
        for n in self.nodes:
            n.stop()


def systems(bench_binary, plain, tls, replicated, ca, cluster):
    """name -> (the command for n jobs, the Redis it runs on, how many jobs it gets of n)."""
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

    def bulwark(redis, processes, *extra):
        return (lambda n, fail, mode: [bench_binary, "--url", redis.url, "--jobs", str(n), "--fail-every", str(fail),
                                       "--mode", mode, "--processes", str(processes), "--workers", "2",
                                       "--prefetch", "48", *extra], redis, 1)

    def bullmq(redis, *extra):
        return (lambda n, fail, mode: ["node", os.path.join(HERE, "bullmq_bench.mjs"), redis.url, str(n), str(fail),
                                       mode, "50", *extra], redis, 1)

    ns = "benchc"
    spread = ",".join(cluster.spread(lambda q: "{" + ns + ":" + q + "}"))
    bull_spread = ",".join("{" + q + "}" for q in cluster.spread(lambda q: "{" + q + "}"))

    return {
        "bulwark x1": bulwark(plain, 1),
        "bulwark x2": bulwark(plain, 2),
        "BullMQ": bullmq(plain),
        "Celery": (lambda n, fail, mode: [py, os.path.join(HERE, "celery_bench.py"), plain.url, str(max(1, n // 10)),
                                          str(fail), mode], plain, 10),
        "bulwark x1 TLS": bulwark(tls, 1, "--ca-file", ca),
        "BullMQ TLS": bullmq(tls),
        "bulwark x1 WAIT": bulwark(replicated, 1, "--min-replicas-ack", "1"),
        "bulwark x1 3q": bulwark(plain, 1, "--queues", "qa,qb,qc"),
        "BullMQ 3q": bullmq(plain, "{qa},{qb},{qc}"),
        "bulwark x1 3q cluster": bulwark(cluster, 1, "--ns", ns, "--queues", spread, "--cluster", cluster.addresses),
        "BullMQ 3q cluster": bullmq(cluster, bull_spread, cluster.addresses),
    }


def peer_of(name):
    """The BullMQ run a system is compared with."""
    if "cluster" in name:
        return "BullMQ 3q cluster"
    if "3q" in name:
        return "BullMQ 3q"
    return "BullMQ TLS" if name.endswith("TLS") else "BullMQ"


def run_one(cmd, redis, jobs):
    redis.command("FLUSHALL")
    by_node = getattr(redis, "cpu_by_node", None)
    nodes_before = by_node() if by_node else None
    cpu_before = redis.cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(lines[-1])
    r["redis_cpu_us_per_job"] = (redis.cpu_seconds() - cpu_before) * 1e6 / jobs
    if by_node:
        r["redis_cpu_us_per_job_by_master"] = [(a - b) * 1e6 / jobs for a, b in zip(by_node(), nodes_before)]
    return r


def fmt(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True, help="path of bulwark_redis_bench")
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated systems to run (default: all)")
    ap.add_argument("--flow-children", type=int, default=10_000, help="children of the flow runs (0: none)")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "results", "redis-latest.json"))
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bulwark-bench-redis-")
    ca = make_certs(tmp)
    os.environ["BENCH_REDIS_CA"] = ca  # for BullMQ TLS
    servers = []
    scenarios = [("single", 0), ("single", 10), ("bulk", 0), ("bulk", 10)]
    runs = []
    try:
        # Inside the try: a server that fails to start stops the ones before it.
        servers.append(Redis(tmp, "plain"))
        servers.append(Redis(tmp, "tls", tls_ca=ca))
        servers.append(Redis(tmp, "replicated", replica=True))
        Cluster(tmp, servers)
        all_systems = systems(args.bench, *servers[:3], ca, servers[3])
        names = [s for s in all_systems if not args.only or s in args.only.split(",")]
        for rep in range(args.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for mode, fail in scenarios:
                for name in order:
                    command, redis, share = all_systems[name]
                    r = run_one(command(args.jobs, fail, mode), redis, max(1, args.jobs // share))
                    r.update(name=name, rep=rep, scenario=f"{mode}/{fail}")
                    runs.append(r)
                    print(f"rep {rep + 1} {mode:6} fail_every={fail:<2} {name:11} {r['jobs_per_s']:>10,.0f} jobs/s",
                          file=sys.stderr, flush=True)
        # The flow: bulwark x1 and BullMQ, each a parent and its children.
        flows = {"bulwark x1 flow": "bulwark x1", "BullMQ flow": "BullMQ"}
        flows = {k: v for k, v in flows.items() if args.flow_children > 0 and (not args.only or v in args.only.split(","))}
        for rep in range(args.reps):
            for name in (list(flows) if rep % 2 == 0 else list(flows)[::-1]):
                command, redis, _ = all_systems[flows[name]]
                r = run_one(command(args.flow_children, 0, "flow"), redis, args.flow_children)
                r.update(name=name, rep=rep, scenario="flow/0")
                runs.append(r)
                print(f"rep {rep + 1} flow of {args.flow_children:,} {name:16} {r['seconds']:>8.3f} s to the parent's end",
                      file=sys.stderr, flush=True)
    finally:
        for redis in servers:
            redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"jobs": args.jobs, "reps": args.reps, "flow_children": args.flow_children, "runs": runs}, f, indent=1)

    print(f"\n{args.jobs:,} jobs per run (Celery {max(1, args.jobs // 10):,}), {args.reps} repetitions, "
          f"rotated order; medians with min-max\n")
    print("| scenario | system | jobs/s | min-max | x BullMQ (paired) | submit p50 / p99 us | Redis cmds/job "
          "| Redis CPU us/job |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for mode, fail in scenarios:
        scenario = f"{mode}/{fail}"
        for name in names:
            mine = [r for r in runs if r["name"] == name and r["scenario"] == scenario]
            rates = [r["jobs_per_s"] for r in mine]
            ratios = []
            for r in mine:
                peer_name = peer_of(name)
                peer = [p for p in runs if p["name"] == peer_name and p["scenario"] == scenario and p["rep"] == r["rep"]]
                if peer:
                    ratios.append(r["jobs_per_s"] / peer[0]["jobs_per_s"])
            p50 = [r["submit_p50_us"] for r in mine if r.get("submit_p50_us") is not None]
            p99 = [r["submit_p99_us"] for r in mine if r.get("submit_p99_us") is not None]
            cmds = statistics.median(r["redis_commands_per_job"] for r in mine)
            cpu = statistics.median(r["redis_cpu_us_per_job"] for r in mine)
            label = f"{mode}, {'10 % fail once' if fail else 'no-op'}"
            submit = f"{fmt(statistics.median(p50))} / {fmt(statistics.median(p99))}" if p50 else "-"
            print(f"| {label} | {name} | {fmt(statistics.median(rates))} | {fmt(min(rates))}-{fmt(max(rates))} | "
                  f"{fmt(statistics.median(ratios), 2) if ratios else '-'} | {submit} | {cmds:.1f} | {cpu:.1f} |")

    flow_runs = [r for r in runs if r["scenario"] == "flow/0"]
    if flow_runs:
        print(f"\nA flow of {args.flow_children:,} no-op children and one parent: from the submit to the parent's end "
              "(medians with min-max; x BullMQ: BullMQ's time over this one's, paired)\n")
        print("| system | seconds | min-max | x BullMQ (paired) | Redis cmds/child | Redis CPU us/child |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in ("bulwark x1 flow", "BullMQ flow"):
            mine = [r for r in flow_runs if r["name"] == name]
            if not mine:
                continue
            secs = [r["seconds"] for r in mine]
            ratios = []
            for r in mine:
                peer = [p for p in flow_runs if p["name"] == "BullMQ flow" and p["rep"] == r["rep"]]
                if peer:
                    ratios.append(peer[0]["seconds"] / r["seconds"])
            print(f"| {name} | {statistics.median(secs):.3f} | {min(secs):.3f}-{max(secs):.3f} | "
                  f"{fmt(statistics.median(ratios), 2) if ratios else '-'} | "
                  f"{statistics.median(r['redis_commands_per_job'] for r in mine):.1f} | "
                  f"{statistics.median(r['redis_cpu_us_per_job'] for r in mine):.1f} |")

    clustered = [n for n in names if "cluster" in n]
    if clustered:
        print("\nOn the cluster, Redis CPU us per job on each master (medians), and throughput against the same "
              "system on one Redis (paired):\n")
        print("| scenario | system | master 1 | master 2 | master 3 | x one Redis |")
        print("|---|---|---:|---:|---:|---:|")
        for mode, fail in scenarios:
            scenario = f"{mode}/{fail}"
            for name in clustered:
                mine = [r for r in runs if r["name"] == name and r["scenario"] == scenario]
                per = [statistics.median(r["redis_cpu_us_per_job_by_master"][i] for r in mine) for i in range(3)]
                single = name.replace(" cluster", "")
                ratios = []
                for r in mine:
                    one = [p for p in runs if p["name"] == single and p["scenario"] == scenario and p["rep"] == r["rep"]]
                    if one:
                        ratios.append(r["jobs_per_s"] / one[0]["jobs_per_s"])
                label = f"{mode}, {'10 % fail once' if fail else 'no-op'}"
                print(f"| {label} | {name} | {per[0]:.1f} | {per[1]:.1f} | {per[2]:.1f} | "
                      f"{fmt(statistics.median(ratios), 2) if ratios else '-'} |")


if __name__ == "__main__":
    main()
