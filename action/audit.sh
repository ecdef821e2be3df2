#!/usr/bin/env bash
# The Action's audit step. It runs `unlearn-audit audit` with the inputs (passed as UA_* variables, never
# spliced into the script), appends the Markdown view to the job summary, sets the verdict, report-dir
# and exit-code outputs, and always exits 0: the gate step after the artifact upload exits with the code,
# so a failing audit still uploads its evidence.
set -uo pipefail
out="${UA_OUT:-unlearn-audit-report}"
args=(audit "$UA_MODEL" --forget "$UA_FORGET" --holdout "$UA_HOLDOUT" --out "$out" --format markdown
      --fail-on "${UA_FAIL_ON:-inconclusive}")
[ -n "${UA_REVISION:-}" ] && args+=(--revision "$UA_REVISION")
[ -n "${UA_ORIGINAL:-}" ] && args+=(--original "$UA_ORIGINAL")
[ -n "${UA_REFERENCE:-}" ] && args+=(--reference "$UA_REFERENCE")
[ -n "${UA_SCHEMES:-}" ] && args+=(--schemes "$UA_SCHEMES")
[ -n "${UA_POLICY:-}" ] && args+=(--policy "$UA_POLICY")
read -r -a extra <<< "${UA_ARGS:-}"  # split on whitespace only: no globbing, no expansion

view="$(mktemp)"
unlearn-audit "${args[@]}" "${extra[@]}" | tee "$view"
code=${PIPESTATUS[0]}

if [ -f "$out/report.json" ] && [ "$code" -ne 2 ] && [ "$code" -ne 3 ]; then
  verdict="$(python -c 'import json, sys; print(json.load(open(sys.argv[1], encoding="utf-8"))["verdict"])' "$out/report.json")"
  report_dir="$out"
  cat "$view" >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
else
  verdict=ERROR
  report_dir=""
  printf '### unlearn-audit: **ERROR** (exit %s)\n\nThe audit did not run to a verdict; the job log has the one-line error.\n' \
    "$code" >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
fi
rm -f "$view"
case "$verdict" in
  FAIL) echo "::error title=unlearn-audit::verdict FAIL (exit $code); report in $out/report.json" ;;
  INCONCLUSIVE) echo "::warning title=unlearn-audit::verdict INCONCLUSIVE (exit $code); report in $out/report.json" ;;
  ERROR) echo "::error title=unlearn-audit::the audit exited $code without a verdict" ;;
esac
{
  echo "verdict=$verdict"
  echo "report-dir=$report_dir"
  echo "exit-code=$code"
} >> "${GITHUB_OUTPUT:-/dev/null}"
exit 0
