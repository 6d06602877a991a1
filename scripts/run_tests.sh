#!/usr/bin/env bash
# The test suite, in one pytest process per group of test files.
#
#   bash scripts/run_tests.sh            # every group, in order; exit code: the first failing group's
#   bash scripts/run_tests.sh napari     # one group (names below); extra arguments go to pytest
#
# Why groups: a single process for the whole suite once grew to 24 GB RSS on the 2-core CI machine
# and was OOM-killed. Most of that was a leak, since fixed (every model ever run stayed alive); the
# groups keep what remains (napari viewers, FiftyOne, ONNX sessions, training) from adding up, and
# let one group be rerun alone. Every test file belongs to exactly one group: "core" is every file
# the others do not name.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-.venv/bin/python}
export MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2}   # fewer glibc arenas: less memory kept by threads

declare -A GROUPS_=(
    [napari]="tests/test_napari_*.py"
    [fiftyone]="tests/test_fiftyone*.py"
    [export]="tests/test_onnx*.py tests/test_notebook*.py"
    [parity]="tests/test_parity_image.py tests/test_tracking_parity.py tests/test_tracking.py"
    [training]="tests/test_finetune*.py tests/test_lora.py"
)
ORDER=(core parity export napari fiftyone training)

files_of() {  # the test files of group $1, one per line
    local g=$1
    if [ "$g" = core ]; then
        local named; named=$(for k in "${!GROUPS_[@]}"; do ls ${GROUPS_[$k]}; done | sort -u)
        ls tests/test_*.py | sort | comm -23 - <(echo "$named")
    else
        ls ${GROUPS_[$g]}
    fi
}

run_group() {  # run group $1 with pytest args "${@:2}"; returns pytest's exit code
    local g=$1; shift
    local files; mapfile -t files < <(files_of "$g")
    if [ "${#files[@]}" -eq 0 ]; then
        echo "group $g has no test files" >&2; return 5
    fi
    echo "== group $g: ${#files[@]} files, start $(date -u +%FT%TZ)"
    "$PY" -m pytest -q -p no:cacheprovider "$@" "${files[@]}"
    local rc=$?
    echo "== group $g: end $(date -u +%FT%TZ) (pytest exit code $rc)"
    return $rc
}

if [ $# -gt 0 ] && [[ " ${ORDER[*]} " == *" $1 "* ]]; then
    g=$1; shift
    run_group "$g" "$@"
    exit $?
fi

rc=0
for g in "${ORDER[@]}"; do
    run_group "$g" "$@"
    r=$?
    [ "$rc" -eq 0 ] && rc=$r
done
exit "$rc"
