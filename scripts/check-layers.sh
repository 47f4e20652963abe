#!/usr/bin/env bash
# Checks that no source includes upward across bulwark's layers (see
# docs/ARCHITECTURE.md). A file under src/<layer>/ may include its own
# layer, any layer below it, support/ (usable by all) and the public
# headers (bulwark/...). Public headers include only public headers.
#
#   support  <  guard  <  core  <  runtime  <  supervision, isolation, redis  <  facade  <  http  <  cli
#
# supervision, isolation and redis are siblings (none includes another); the
# program (cli) uses the HTTP layer's server and client. Exits 1 and names
# each offending line.
set -euo pipefail
cd "$(dirname "$0")/.."

rank() {
  case "$1" in
    support) echo 0 ;; guard) echo 1 ;; core) echo 2 ;; runtime) echo 3 ;;
    supervision | isolation | redis) echo 4 ;; facade) echo 5 ;; http) echo 6 ;; cli) echo 7 ;;
    *) echo -1 ;;
  esac
}

status=0
fail() {
  echo "check-layers: $1" >&2
  status=1
}

for dir in src/*/; do
  layer=$(basename "$dir")
  [ "$(rank "$layer")" -ge 0 ] || fail "src/$layer/ is not a known layer (add it to scripts/check-layers.sh and docs/ARCHITECTURE.md)"
done

while IFS= read -r hit; do
  file=${hit%%:*}
  rest=${hit#*:}
  line=${rest%%:*}
  target=$(sed -E 's/.*#include "([^"]+)".*/\1/' <<<"$rest")
  from=$(cut -d/ -f2 <<<"$file")
  to=${target%%/*}
  [ "$to" = "$target" ] && continue       # a file next to it (workers' headers)
  [ "$to" = bulwark ] && continue         # the public API
  [ "$to" = support ] && continue         # usable by all
  [ "$to" = "$from" ] && continue
  rf=$(rank "$from")
  rt=$(rank "$to")
  if [ "$rt" -lt 0 ]; then
    fail "$file:$line includes \"$target\", which is in no layer"
  elif [ "$rt" -ge "$rf" ]; then
    fail "$file:$line: $from includes \"$target\" ($to is not below $from)"
  fi
done < <(grep -rn '#include "' src --include='*.hpp' --include='*.cpp')

while IFS= read -r hit; do
  fail "$hit: a public header includes a private one"
done < <(grep -rn '#include "' include | grep -v '#include "bulwark/' || true)

[ "$status" -eq 0 ] && echo "check-layers: every include points down or sideways within its layer"
exit "$status"
