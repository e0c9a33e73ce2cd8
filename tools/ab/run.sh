#!/usr/bin/env bash
# A/B of this checkout against revision REV of the crate (default: HEAD~1),
# timed in one process so that the machine's drift hits both alike:
#   tools/ab/run.sh [REV] [-- quick] [-- only=NAME]
# REV is exported with `git archive` into tools/ab/target/base and built as
# the crate `convgemm_base`; nothing outside tools/ab/target is written.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rev="${1:-HEAD~1}"
shift || true
base="$here/target/base"
rm -rf "$base"
mkdir -p "$base"
root="$(git -C "$here" rev-parse --show-toplevel)"
git -C "$root" archive "$rev" | tar -x -C "$base"
sed -i 's/^name = "convgemm"$/name = "convgemm_base"/' "$base/Cargo.toml"
cd "$here"
echo "# A/B: working tree (new) against $rev = $(git rev-parse --short "$rev") (old)"
cargo run --release --quiet -- "$@"
