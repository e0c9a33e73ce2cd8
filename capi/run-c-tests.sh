#!/usr/bin/env bash
# Builds libconvgemm_capi (.so and .a), checks that the header compiles as
# strict C99 and as C++, then builds the C example and the C tests with gcc
# under AddressSanitizer and UndefinedBehaviorSanitizer against both the
# shared and the static library, and runs them. Run from anywhere; CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p convgemm-capi
lib=target/release
out=target/c-tests
mkdir -p "$out"
warn=(-std=c99 -Wall -Wextra -Werror -pedantic)
san=(-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

echo "header: C99 and C++"
echo '#include "convgemm.h"' | gcc "${warn[@]}" -Icapi/include -x c -fsyntax-only -
if command -v g++ >/dev/null; then
    echo '#include "convgemm.h"' | g++ -std=c++11 -Wall -Wextra -Werror -Icapi/include -x c++ -fsyntax-only -
else
    echo "(no g++ here: the C++ check is skipped)"
fi

# What a Rust static library needs from the system (rustc --print native-static-libs).
static_libs=(-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)
for src in capi/examples/lenet.c capi/tests/c/errors.c capi/tests/c/threads.c; do
    name=$(basename "$src" .c)
    gcc "${warn[@]}" "${san[@]}" -Icapi/include "$src" -L"$lib" -lconvgemm_capi -lpthread -lm -o "$out/$name-shared"
    gcc "${warn[@]}" "${san[@]}" -Icapi/include "$src" "$lib/libconvgemm_capi.a" "${static_libs[@]}" -o "$out/$name-static"
    for kind in shared static; do
        echo "== $name ($kind library, ASan + UBSan)"
        LD_LIBRARY_PATH="$lib" ASAN_OPTIONS=detect_leaks=1 "$out/$name-$kind"
    done
done
echo "C tests: all passed"
