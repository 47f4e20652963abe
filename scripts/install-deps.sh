#!/usr/bin/env bash
# Installs bulwark's build and test dependencies from Debian 12 packages.
# Idempotent and silent when everything is already there.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libboost-dev libboost-stacktrace-dev
  nlohmann-json3-dev libspdlog-dev libfmt-dev doctest-dev libconcurrentqueue-dev libcli11-dev
  python3     # the hostile-input battery (tests/hostile/) speaks raw HTTP from Python
  prometheus  # promtool, to check the /metrics output in the tests
  libhiredis-dev  # the Redis client of the redis backend
  libssl-dev openssl  # TLS to Redis (rediss://); openssl makes the tests' certificates
  libhowardhinnant-date-dev tzdata  # time zones of periodic jobs (the system's tz database)
  redis-server    # started by the tests of the redis backend (never as a system service)
  redis-tools     # redis-cli: the cluster tests and make bench-redis make their cluster with it (redis-cli --cluster create)
  python3-yaml    # tests/deploy/ reads the rendered manifests
  systemd         # systemd-analyze verify on deploy/systemd/bulwark.service
)
# kubectl kustomize renders deploy/kubernetes/ in the tests; a kubectl
# installed another way (a newer one) will do.
command -v kubectl >/dev/null || packages+=(kubernetes-client)
# Extra groups: `install-deps.sh bench` adds the benchmark peers, `fuzz` the
# libFuzzer toolchain (clang 14 and its runtime), `ui` the browser test of
# the dashboard (chromium and firefox-esr; Node and npm for puppeteer-core, whose package
# comes from npm with tests/ui/package-lock.json), `redis-bench` the peers of
# `make bench-redis` (Node for BullMQ, whose package comes from npm with
# bench/redis/package-lock.json; Celery and its Redis client).
for group in "$@"; do
  case "$group" in
    bench) packages+=(libtbb-dev libbenchmark-dev gnuplot-nox golang-go wrk) ;;
    fuzz) packages+=(clang-14 libclang-rt-14-dev) ;;
    ui)
      packages+=(chromium firefox-esr)
      command -v node >/dev/null || packages+=(nodejs)  # a Node installed another way will do
      command -v npm >/dev/null || packages+=(npm)
      ;;
    redis-bench)
      packages+=(python3-celery python3-redis)
      command -v node >/dev/null || packages+=(nodejs)  # a Node installed another way will do
      command -v npm >/dev/null || packages+=(npm)
      ;;
    *) echo "install-deps.sh: unknown group '$group' (known: bench, fuzz, redis-bench, ui)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then sudo=sudo; else
    echo "install-deps.sh: missing packages (${missing[*]}) and not root; run as root" >&2
    exit 1
  fi
else
  sudo=
fi
echo "install-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
