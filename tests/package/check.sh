#!/usr/bin/env bash
# The installed package as an outside project sees it: installs this build
# into a fresh prefix, compiles every public header with -Wall -Wextra
# -Wpedantic -Werror, then builds examples/embed against it twice, with
# find_package(bulwark CONFIG) and with pkg-config, and runs both.
#   check.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
source=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" >/dev/null
for f in include/bulwark/runtime.hpp include/bulwark/version.hpp lib/libbulwark.a lib/libbulwark_http.a \
         lib/cmake/bulwark/bulwarkConfig.cmake lib/cmake/bulwark/bulwarkConfigVersion.cmake \
         lib/pkgconfig/bulwark.pc bin/bulwark; do
  [[ -e $work/prefix/$f ]] || { echo "package: $f was not installed" >&2; exit 1; }
done

# The public headers are warning-free in a consumer's strictest usual mode.
for cxx in g++ clang++-14; do
  command -v "$cxx" >/dev/null || continue
  "$cxx" -std=c++20 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$work/prefix/include" \
    "$source/tests/package/all_headers.cpp" || { echo "package: public headers warn under $cxx" >&2; exit 1; }
done

# CMake: the example finds the installed package and builds none of bulwark.
cmake -S "$source/examples/embed" -B "$work/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/prefix" >"$work/cmake.log"
if grep -q "src/facade/runtime.cpp" "$work/cmake/build.ninja"; then
  echo "package: the example built bulwark from source instead of using the installed package" >&2
  exit 1
fi
cmake --build "$work/cmake" >/dev/null
"$work/cmake/embed_example" >"$work/cmake.out"
grep -q "thrown at: check_stock" "$work/cmake.out" || { cat "$work/cmake.out"; exit 1; }

# pkg-config: the same program from one compiler line.
export PKG_CONFIG_PATH=$work/prefix/lib/pkgconfig
[[ $(pkg-config --modversion bulwark) == $("$work/prefix/bin/bulwark" --version | cut -d' ' -f2) ]] ||
  { echo "package: pkg-config and bulwark --version disagree" >&2; exit 1; }
# shellcheck disable=SC2046
g++ -g -o "$work/pc_example" "$source/examples/embed/main.cpp" $(pkg-config --cflags --libs --static bulwark)
"$work/pc_example" >"$work/pc.out"
grep -q "thrown at: check_stock" "$work/pc.out" || { cat "$work/pc.out"; exit 1; }
echo "package: installed, found by CMake and by pkg-config, both programs ran"
