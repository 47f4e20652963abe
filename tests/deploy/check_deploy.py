#!/usr/bin/env python3
"""Keeps deploy/ true to the program it deploys.

Renders every kustomize overlay with `kubectl kustomize` and checks the
security invariants (least privilege), the probes against a real
`bulwark serve` started with the rendered ConfigMap, the drain time against
the grace period, the canary's Rollout and AnalysisTemplate, the Argo CD
Application's path, the alert rules (`promtool check rules`), that every
metric the alerts, the analysis and the Grafana dashboard use is in the
real server's /metrics, the systemd unit (`systemd-analyze verify`) and the
Dockerfile.

    check_deploy.py BULWARK_BINARY SOURCE_DIR
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

BINARY, SOURCE = sys.argv[1], sys.argv[2]
DEPLOY = os.path.join(SOURCE, "deploy")
KUBE = os.path.join(DEPLOY, "kubernetes")
failures = 0


def check(name, ok, detail=""):
    global failures
    print(("ok   " if ok else "FAIL ") + name + ("" if ok or not detail else ": " + str(detail)))
    if not ok:
        failures += 1


def render(path):
    """The documents `kubectl kustomize` makes of a kustomization directory."""
    out = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"kubectl kustomize {path} failed: {out.stderr}")
    # commonLabels (deprecated, and it reached every selector) is not used.
    check(f"{os.path.relpath(path, KUBE)}: no commonLabels warning", "commonLabels" not in out.stderr, out.stderr.strip())
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def of_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind):
    found = of_kind(docs, kind)
    if len(found) != 1:
        raise SystemExit(f"expected one {kind}, found {len(found)}")
    return found[0]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


# --- every overlay: least privilege, probes, config -------------------------

overlays = {"base": os.path.join(KUBE, "base")}
for name in sorted(os.listdir(os.path.join(KUBE, "overlays"))):
    overlays[name] = os.path.join(KUBE, "overlays", name)
rendered = {name: render(path) for name, path in overlays.items()}
check("the overlays render: " + ", ".join(rendered), len(rendered) >= 3)

for name, docs in rendered.items():
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (container,) = pod["containers"]
    csc = container.get("securityContext", {})
    psc = pod.get("securityContext", {})
    sa = one(docs, "ServiceAccount")
    check(f"{name}: its own ServiceAccount", pod.get("serviceAccountName") == sa["metadata"]["name"] != "default")
    check(f"{name}: no service account token mounted",
          sa.get("automountServiceAccountToken") is False and pod.get("automountServiceAccountToken") is False)
    rbac = [d["kind"] for d in docs if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    check(f"{name}: no Role or binding (bulwark calls no Kubernetes API)", not rbac, rbac)
    check(f"{name}: runAsNonRoot", psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot", True) is True)
    check(f"{name}: a numeric non-root user", isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0)
    check(f"{name}: readOnlyRootFilesystem", csc.get("readOnlyRootFilesystem") is True)
    check(f"{name}: allowPrivilegeEscalation false", csc.get("allowPrivilegeEscalation") is False)
    check(f"{name}: every capability dropped", csc.get("capabilities", {}).get("drop") == ["ALL"]
          and not csc.get("capabilities", {}).get("add"))
    check(f"{name}: seccomp RuntimeDefault",
          (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault")
    res = container.get("resources", {})
    check(f"{name}: resources requested and limited",
          {"cpu", "memory"} <= set(res.get("requests", {})) and {"cpu", "memory"} <= set(res.get("limits", {})))
    token = [e for e in container.get("env", []) if e["name"] == "BULWARK_SERVER__AUTH_TOKEN"]
    check(f"{name}: the token comes from a Secret through the environment",
          len(token) == 1 and "secretKeyRef" in token[0].get("valueFrom", {}))
    check(f"{name}: a NetworkPolicy selects the pods",
          any(selects(p["spec"]["podSelector"], labels) for p in of_kind(docs, "NetworkPolicy")))
    check(f"{name}: a PodDisruptionBudget selects the pods",
          any(selects(p["spec"]["selector"], labels) for p in of_kind(docs, "PodDisruptionBudget")))
    check(f"{name}: the Service selects the pods",
          any(selects({"matchLabels": s["spec"]["selector"]}, labels) for s in of_kind(docs, "Service")))
    # A client pod labelled bulwark-client=true (and nothing of bulwark's) is let in.
    client_rules = [peer["podSelector"] for p in of_kind(docs, "NetworkPolicy") for rule in p["spec"].get("ingress", [])
                    for peer in rule.get("from", []) if "podSelector" in peer]
    check(f"{name}: the NetworkPolicy lets a pod labelled bulwark-client=true in",
          any(selects(sel, {"bulwark-client": "true"}) for sel in client_rules), client_rules)

    # The configuration the pod reads: the ConfigMap mounted at --config.
    args = container["args"]
    config_path = args[args.index("--config") + 1]
    mount = next(m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = next(c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"])
    config = json.loads(cm["data"][os.path.basename(config_path)])
    listen_port = int(config["server"]["listen"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(f"{name}: the container port is server.listen's", listen_port in ports.values(), (listen_port, ports))
    probes = {kind: container.get(kind) for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    check(f"{name}: startup, liveness and readiness probes", all(probes.values()))
    for kind, probe in probes.items():
        port = probe["httpGet"]["port"]
        check(f"{name}: {kind} port is the server's", ports.get(port, port) == listen_port, port)
    check(f"{name}: liveness on /healthz, readiness on /readyz",
          probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
          and probes["readinessProbe"]["httpGet"]["path"] == "/readyz")
    drain_ms = config["server"].get("drain_timeout_ms", 10000) + config.get("shutdown", {}).get("grace_ms", 2000)
    check(f"{name}: draining ({drain_ms} ms) ends within terminationGracePeriodSeconds",
          drain_ms < pod["terminationGracePeriodSeconds"] * 1000, pod["terminationGracePeriodSeconds"])

# --- the canary and GitOps --------------------------------------------------

prod = rendered["production"]
rollout = one(prod, "Rollout")
canary = rollout["spec"]["strategy"]["canary"]
weights = [s["setWeight"] for s in canary["steps"] if "setWeight" in s]
check("production: the Rollout goes 5 % -> 25 % -> 100 %", weights == [5, 25, 100], weights)
check("production: the Rollout runs the Deployment's pod template",
      rollout["spec"]["workloadRef"]["name"] == one(prod, "Deployment")["metadata"]["name"])
check("production: the Deployment keeps no pods of its own", one(prod, "Deployment")["spec"]["replicas"] == 0)
template = one(prod, "AnalysisTemplate")
check("production: the analysis names the AnalysisTemplate",
      [t["templateName"] for t in canary["analysis"]["templates"]] == [template["metadata"]["name"]])
declared = {a["name"] for a in template["spec"]["args"]}
given = {a["name"] for a in canary["analysis"]["args"]}
check("production: the Rollout gives every argument without a default",
      {a["name"] for a in template["spec"]["args"] if "value" not in a} <= given <= declared, (given, declared))
queries = [m["provider"]["prometheus"]["query"] for m in template["spec"]["metrics"]]
check("production: the analysis judges failures by kind, HTTP 5xx and health",
      any("bulwark_jobs_failed_total" in q and "by (kind)" in q for q in queries)
      and any('code=~"5.."' in q for q in queries) and any("bulwark_health" in q for q in queries))
prod_env = {e["name"] for e in one(prod, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
check("production: the shared Redis queue", {"BULWARK_QUEUE__BACKEND", "BULWARK_REDIS__URL"} <= prod_env, prod_env)

app = yaml.safe_load(open(os.path.join(DEPLOY, "argocd", "application.yaml")))
app_path = os.path.join(SOURCE, app["spec"]["source"]["path"])
check("Argo CD: the Application's path is an overlay here", os.path.realpath(app_path) in
      {os.path.realpath(p) for p in overlays.values()}, app["spec"]["source"]["path"])
check("Argo CD: automated sync with prune and self-heal",
      app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True})

# --- a real server with the rendered configuration ---------------------------

work = tempfile.mkdtemp(prefix="bulwark-deploy-")
base_dep = one(rendered["base"], "Deployment")
base_cm = of_kind(rendered["base"], "ConfigMap")[0]
config_file = os.path.join(work, "bulwark.json")
with open(config_file, "w") as f:
    f.write(base_cm["data"]["bulwark.json"])
env = dict(os.environ)
env.update({
    "BULWARK_SERVER__LISTEN": "127.0.0.1:0",  # the environment layer over the ConfigMap, as in the pod
    "BULWARK_SERVER__AUTH_TOKEN": "deploy-test",
    "BULWARK_WORKERS": "2",
    "BULWARK_HANDLERS__CRASH__ISOLATION": "process",  # so the child-process metrics are there too
    "BULWARK_CIRCUIT_BREAKER__FAILURES": "3",
})
server = subprocess.Popen([BINARY] + base_dep["spec"]["template"]["spec"]["containers"][0]["args"][:1] +
                          ["--config", config_file], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          text=True)
try:
    port = None
    deadline = time.time() + 20
    while port is None and time.time() < deadline:
        line = server.stdout.readline()
        if not line:
            break
        entry = json.loads(line)  # the shipped config logs JSON to standard output
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", entry.get("message", ""))
        if m:
            port = int(m.group(1))
    if port is None:
        raise SystemExit("the server did not start: " + server.stderr.read())
    base = f"http://127.0.0.1:{port}"

    def get(path, token=None):
        req = urllib.request.Request(base + path)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    container = base_dep["spec"]["template"]["spec"]["containers"][0]
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[kind]["httpGet"]["path"]
        status, _ = get(path)
        check(f"server: the {kind} path {path} answers 200 without a token", status == 200, status)
    check("server: reads need the token (server.auth_reads in the shipped config)", get("/v1/jobs")[0] == 401)
    check("server: with it they work", get("/v1/jobs", "deploy-test")[0] == 200)
    for spec in ({"type": "echo"}, {"type": "fail", "max_attempts": 1}):
        req = urllib.request.Request(base + "/v1/jobs", data=json.dumps(spec).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer deploy-test"})
        urllib.request.urlopen(req, timeout=10).read()
    status, metrics = get("/metrics")
    check("server: /metrics answers Prometheus without a token", status == 200)
    exposed = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", metrics, re.M):
        exposed.add(name)
        if kind == "histogram":
            exposed.update({name + "_bucket", name + "_sum", name + "_count"})
finally:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()

metric = re.compile(r"\b((?:bulwark|process)_[a-z0-9_]+)\b")
alerts_file = os.path.join(DEPLOY, "prometheus", "alerts.yml")
alerts = yaml.safe_load(open(alerts_file))
used = {"alerts": {n for g in alerts["groups"] for r in g["rules"] for n in metric.findall(r["expr"])},
        "analysis": {n for q in queries for n in metric.findall(q)}}
dashboard = json.load(open(os.path.join(DEPLOY, "grafana", "bulwark-dashboard.json")))
used["dashboard"] = {n for p in dashboard["panels"] for t in p["targets"] for n in metric.findall(t["expr"])}
used["dashboard"] |= set(metric.findall(json.dumps(dashboard["templating"])))
for where, names in used.items():
    check(f"{where}: uses bulwark's metrics", len(names) >= 3, names)
    missing = sorted(names - exposed)
    check(f"{where}: every metric it names is in a real server's /metrics", not missing, missing)
alert_names = {r["alert"] for g in alerts["groups"] for r in g["rules"]}
check("alerts: unhealthy, failure spike, breaker open, queue near capacity, replacements climbing",
      {"BulwarkUnhealthy", "BulwarkJobFailureRateSpike", "BulwarkCircuitBreakerOpen", "BulwarkQueueNearCapacity",
       "BulwarkWorkerReplacementsClimbing"} <= alert_names, alert_names)
panel_titles = " ".join(p["title"].lower() for p in dashboard["panels"])
check("dashboard: throughput, failures by kind, queue, p99, workers, breakers, health",
      all(w in panel_titles for w in ("throughput", "failures by kind", "queue depth", "p99", "workers", "breaker",
                                      "health")), panel_titles)

promtool = subprocess.run(["promtool", "check", "rules", alerts_file], capture_output=True, text=True)
check("promtool check rules", promtool.returncode == 0, promtool.stdout + promtool.stderr)

# --- systemd ---------------------------------------------------------------

unit_text = open(os.path.join(DEPLOY, "systemd", "bulwark.service")).read()
exec_start = re.search(r"^ExecStart=(\S+)", unit_text, re.M).group(1)
unit = os.path.join(work, "bulwark.service")
with open(unit, "w") as f:  # the binary under test where the unit expects the installed one
    f.write(unit_text.replace(exec_start, os.path.abspath(BINARY)))
verify = subprocess.run(["systemd-analyze", "verify", "--man=no", unit], capture_output=True, text=True)
check("systemd-analyze verify: no error, no warning", verify.returncode == 0 and not verify.stderr.strip(),
      verify.stderr)
settings = dict(re.findall(r"^(\w+)=(.*)$", unit_text, re.M))
for key, value in {"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                   "PrivateTmp": "yes", "CapabilityBoundingSet": "", "KillSignal": "SIGTERM"}.items():
    check(f"systemd: {key}={value}", settings.get(key) == value, settings.get(key))
unit_drain_ms = json.loads(base_cm["data"]["bulwark.json"])["server"]["drain_timeout_ms"]
check("systemd: TimeoutStopSec above the drain", int(settings["TimeoutStopSec"]) * 1000 > unit_drain_ms)

# --- the Dockerfile ----------------------------------------------------------

docker = open(os.path.join(DEPLOY, "Dockerfile")).read()
instructions = [l.split(None, 1) for l in re.sub(r"\\\n", " ", docker).splitlines() if l and not l.startswith("#")]
froms = [i[1].split()[0] for i in instructions if len(i) == 2 and i[0] == "FROM"]
check("Dockerfile: built on debian:12, run on debian:12-slim", froms == ["debian:12", "debian:12-slim"], froms)
ops = {i[0]: i[1].strip() for i in instructions if len(i) == 2}
check("Dockerfile: builds with the project's own make", re.search(r"\bmake build\b", docker) is not None)
check("Dockerfile: a numeric non-root user", re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", ops.get("USER", "")) is not None,
      ops.get("USER"))
check("Dockerfile: STOPSIGNAL SIGTERM", ops.get("STOPSIGNAL") == "SIGTERM")
check("Dockerfile: a healthcheck on /healthz through `bulwark health`",
      "HEALTHCHECK" in ops and '"health"' in ops["HEALTHCHECK"])
check("Dockerfile: logs to standard output as JSON",
      "BULWARK_LOGGING__FILE=-" in ops.get("ENV", "") and "BULWARK_LOGGING__FORMAT=json" in ops.get("ENV", ""))
# Every shared library the binary loads comes from a package the image
# installs, or from debian:12-slim itself (libc, libstdc++, libgcc).
final_stage = docker.split("FROM debian:12-slim", 1)[-1]
installed = set(re.findall(r"\b(lib[\w.+-]+|tzdata)\b", final_stage.split("COPY", 1)[0]))
in_slim = {"libc6", "libstdc++6", "libgcc-s1"}
needed = set()
for line in subprocess.run(["ldd", BINARY], capture_output=True, text=True).stdout.splitlines():
    m = re.search(r"=> (/\S+)", line)
    if not m:
        continue
    owner = subprocess.run(["dpkg", "-S", os.path.realpath(m.group(1))], capture_output=True, text=True).stdout
    if owner:
        needed.add(owner.split(":")[0])
# A sanitizer build's runtimes are not the image's (it is built from the release build).
missing = sorted(p for p in needed - installed - in_slim if not re.match(r"lib(a|ub|t|l)san\d", p))
check("Dockerfile: the image installs the package of every shared library the binary links", not missing, missing)
copied = re.findall(r"^COPY (?:--from=\S+ )?(\S+) ", docker, re.M)
check("Dockerfile: what it copies from the repository exists",
      all(os.path.exists(os.path.join(SOURCE, c)) for c in copied if c not in (".", "/out/bulwark")), copied)

shutil.rmtree(work, ignore_errors=True)
print("deploy: all checks passed" if failures == 0 else f"deploy: {failures} failed")
sys.exit(1 if failures else 0)
