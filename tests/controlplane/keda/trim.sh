#!/usr/bin/env bash
# trim.sh KEDA_DIR TYPE...: in a writable copy of KEDA's module, keeps only the
# named trigger types. KEDA's operator and adapter compile every scaler it
# has (one Go package, with the cloud SDKs and database clients they
# import); the tests' ScaledObjects use the Prometheus trigger alone, so the
# rest is compile time for nothing. Fails loudly if the source no longer
# has the shape this relies on (a pinned version is expected).
set -euo pipefail
dir=$1; shift
builder="$dir/pkg/scaling/scalers_builder.go"
keep=" $* "
grep -q 'TRIGGERS-START' "$builder" && grep -q 'TRIGGERS-END' "$builder" \
  || { echo "keda/trim.sh: no TRIGGERS-START/END markers in $builder" >&2; exit 1; }
# Each trigger is a `case "type":` line and one `return` line between the markers.
awk -v keep="$keep" '
  /TRIGGERS-START/ { inside = 1 }
  /TRIGGERS-END/   { inside = 0 }
  inside && /^\tcase "[a-z0-9-]+":$/ {
    t = $0; sub(/^\tcase "/, "", t); sub(/":$/, "", t)
    if (index(keep, " " t " ") == 0) { getline; next }
  }
  { print }
' "$builder" > "$builder.new"
mv "$builder.new" "$builder"
for t in "$@"; do
  grep -q "^	case \"$t\":" "$builder" || { echo "keda/trim.sh: trigger $t not found" >&2; exit 1; }
done
# A scaler file stays if the kept cases call one of its constructors. The
# external scaler and its mock also serve KEDA's own push and test paths.
for f in "$dir"/pkg/scalers/*_scaler.go; do
  name=$(basename "$f")
  used=0
  case $name in external_scaler.go|external_mock_scaler.go) used=1 ;; esac
  for c in $(grep -o '^func New[A-Za-z]*' "$f" | sed 's/^func //'); do
    grep -q "scalers\.$c(" "$builder" && used=1
  done
  [ $used = 1 ] || rm "$f"
done
rm -f "$dir"/pkg/scalers/*_test.go
# Shared by the kept scalers, declared in a removed one.
grep -q 'externalMetricType *=' "$dir"/pkg/scalers/*.go \
  || printf 'package scalers\n\nconst externalMetricType = "External"\n' > "$dir/pkg/scalers/trimmed.go"
