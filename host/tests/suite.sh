#!/usr/bin/env bash
# `make test`: sets up what the tests need, builds once, runs every test, and
# ends with where the time went and which tests could not run (skips).
#
#   setup  target/pyenv (pinned Python packages), the npm packages of the JS
#          SDK and of the emulators: in the background, from the start
#   build  the Rust plugins (wasm); then the Python and JavaScript components
#          in the background while the tests are built once and linted on the
#          way (clippy-driver as the workspace's compiler wrapper, as `cargo
#          clippy` runs it, so no second, check-only build of every crate)
#   test   every test binary, with kinesis-mock and dynalite running: the
#          integration tests in two lanes side by side (the tests that build
#          projects and components, and the rest), the other binaries in a
#          third lane; then the doc tests
#
# A test that cannot run here records a line in the skip ledger
# (target/test-skips.txt), listed at the end; under CI=true a skip fails.
# Threads per lane: TEST_THREADS (the rest, default 6), HEAVY_THREADS (3).
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
logs="$root/target/test-logs"
executables="$logs/executables.txt"
# The integration tests that build projects or compile components: CPU-bound,
# so they get a lane of their own with fewer threads.
heavy=(new_project:: languages::)
# The sandbox's tests measure deadlines to within 150 ms: they run first,
# alone, so no other lane's load can delay them.
calm=(sandbox::)

# Runs one test binary (its package folder, its path) with libtest's timing
# report (`-Z unstable-options` is accepted when RUSTC_BOOTSTRAP is set in the
# test process; nothing is compiled with it), its output in $logs/LABEL.log.
run_binary() {
    local label="$1" dir="$2" exe="$3" status
    shift 3
    (cd "$dir" && RUSTC_BOOTSTRAP=1 CARGO_MANIFEST_DIR="$dir" "$exe" -Z unstable-options --report-time "$@") \
        >"$logs/$label.log" 2>&1
    status=$?
    # The heavy lane's tests by name: the Python and JavaScript processors
    # and new projects must be seen to have run, not only counted.
    if [ "$label" = it-heavy ]; then
        grep -E '^test .* \.\.\. ' "$logs/$label.log" | sed "s/^/[$label] /" >&2
    fi
    grep -E '^test result:' "$logs/$label.log" | sed "s/^/[$label] /" >&2
    if [ "$status" -ne 0 ]; then
        echo "[$label] FAILED; its output:" >&2
        if grep -q '^failures:$' "$logs/$label.log"; then
            sed -n '/^failures:$/,$p' "$logs/$label.log" >&2
        else
            tail -40 "$logs/$label.log" >&2
        fi
    fi
    return "$status"
}

# `suite.sh lanes`: the test binaries, run by the main script inside
# with-emulators.sh (which exports the emulators' URLs).
if [ "${1:-}" = lanes ]; then
    it=$(awk '$2 ~ /\/it-[0-9a-f]+$/ { print $1, $2 }' "$executables")
    [ -n "$it" ] || { echo "no integration-test binary among the tests built" >&2; exit 1; }
    read -r it_dir it_exe <<<"$it"
    run_binary it-calm "$it_dir" "$it_exe" --test-threads 2 "${calm[@]}" || calm_failed=1
    pids=()
    # The heavy lane first compiles each Python and JavaScript component once
    # into the tests' compiled cache (2 at a time): its tests start together
    # and would otherwise each compile the same 10-20 MB component.
    warm() {
        local host="$root/target/debug/host" start=$(date +%s%N)
        find "$root/target/wasm32-wasip2/plugin" -maxdepth 1 \( -name 'py_*.wasm' -o -name 'js_*.wasm' \) -print0 |
            HOST_CACHE_DIR="$root/target/test-plugin-cache" xargs -0 -r -P 2 -I{} \
                "$host" test --plugin {} --input /dev/null >"$logs/warm.log" 2>&1
        echo "[it-heavy] components compiled into the tests' cache in $((($(date +%s%N) - start) / 1000000000)) s" >&2
    }
    # The lanes that only need CPU run niced: the other lane's tests time
    # lease expiries and deadlines, and its workers and emulators come first.
    (renice -n 10 -p $BASHPID >/dev/null 2>&1 || true; warm; run_binary it-heavy "$it_dir" "$it_exe" --test-threads "${HEAVY_THREADS:-3}" "${heavy[@]}") &
    pids+=($!)
    run_binary it "$it_dir" "$it_exe" --test-threads "${TEST_THREADS:-6}" $(printf -- '--skip %s ' "${heavy[@]}" "${calm[@]}") &
    pids+=($!)
    (
        renice -n 10 -p $BASHPID >/dev/null 2>&1 || true
        status=0
        while read -r dir exe; do
            [ "$exe" = "$it_exe" ] && continue
            run_binary "$(basename "$exe")" "$dir" "$exe" --test-threads 2 || status=1
        done <"$executables"
        exit "$status"
    ) &
    pids+=($!)
    # Progress while the lanes run.
    running() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
    ticks=0
    while running; do
        sleep 1
        ticks=$((ticks + 1))
        if [ $((ticks % 30)) -eq 0 ]; then
            printf '  … %s tests done\n' "$(cat "$logs"/*.log 2>/dev/null | grep -c '^test .* \.\.\. ')" >&2
        fi
    done
    status="${calm_failed:-0}"
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    exit "$status"
fi

mkdir -p "$logs"
rm -f "$logs"/*
export HOST_TEST_SKIPS="$root/target/test-skips.txt"
: >"$HOST_TEST_SKIPS"
times="$logs/times.tsv"
suite_start=$(date +%s%N)
failed=()

# Runs "$@" as the step NAME, adding its wall time to the breakdown.
step() {
    local name="$1" start status
    shift
    start=$(date +%s%N)
    "$@"
    status=$?
    printf '%s\t%d\t%s\n' "$name" $((($(date +%s%N) - start) / 1000000000)) "$status" >>"$times"
    return "$status"
}

# A step in the background, its output in $logs/NAME.log (shown when
# `finish NAME` waits for it); $logs/NAME.done holds its exit status.
declare -A background
behind() {
    local name="$1"
    shift
    # A process group of its own, so an early exit can stop all of it.
    set -m
    (
        step "$name" "$@"
        status=$?
        echo "$status" >"$logs/$name.done"
        exit "$status"
    ) >"$logs/$name.log" 2>&1 &
    background[$name]=$!
    set +m
}
finish() {
    local name="$1" status
    wait "${background[$name]}"
    status=$?
    cat "$logs/$name.log" >&2
    [ "$status" -eq 0 ] || failed+=("$name")
    return "$status"
}

summary() {
    # Whatever still runs in the background (an early exit) stops with us.
    for pid in "${background[@]}"; do kill -- "-$pid" 2>/dev/null; done
    echo >&2
    printf 'make test: %d s in all. The steps (a step marked + ran beside the others):\n' \
        $((($(date +%s%N) - suite_start) / 1000000000)) >&2
    awk -F'\t' '{ printf "  %-26s %5d s%s\n", $1, $2, ($3 == 0 ? "" : "  FAILED") }' "$times" >&2
    if grep -qh -- '^test .* ok <' "$logs"/it.log "$logs"/it-heavy.log 2>/dev/null; then
        echo "The integration tests by module (each test's own time, summed; the lanes run them side by side):" >&2
        grep -h -o '^test .* \.\.\. ok <[0-9.]*s>' "$logs"/it-calm.log "$logs"/it.log "$logs"/it-heavy.log 2>/dev/null |
            sed 's/^test \(.*\) \.\.\. ok <\(.*\)s>$/\2 \1/' >"$logs/test-times.txt"
        awk '{ split($2, p, "::"); s[p[1]] += $1; n[p[1]]++ } END { for (g in s) printf "  %-26s %5.0f s %4d tests\n", g, s[g], n[g] }' \
            "$logs/test-times.txt" | sort -k2 -rn >&2
    fi
    local skips
    skips=$(grep -c . "$HOST_TEST_SKIPS" 2>/dev/null || true)
    if [ "${skips:-0}" -gt 0 ]; then
        echo "Skipped: $skips, which did not run here (under CI=true any skip fails the run):" >&2
        sed 's/^/  /' "$HOST_TEST_SKIPS" >&2
    else
        echo "Skipped: none." >&2
    fi
    if [ ${#failed[@]} -gt 0 ]; then
        echo "make test: FAILED: ${failed[*]}" >&2
        exit 1
    fi
    exit 0
}
trap summary EXIT

echo "== setup (in the background): target/pyenv, npm packages" >&2
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2 || exit 2
for tool in rustfmt clippy; do
    rustup component list --installed | grep -q "^$tool" || rustup component add "$tool" || exit 2
done
behind +setup-python host/tests/pyenv.sh
behind +setup-npm make -s js-sdk-packages
behind +setup-emulators host/tests/with-emulators.sh --install-only

echo "== build: the Rust plugins" >&2
step build-rust-plugins make -s plugins || { failed+=(build-rust-plugins); exit 1; }

echo "== build: the Python and JavaScript components (in the background), the tests with clippy" >&2
# Each after its setup (which writes its .done file when it ends).
# (A setup that died without its .done file ends the wait too.)
after() { echo "until [ -e '$logs/$1.done' ] || ! kill -0 ${background[$1]} 2>/dev/null; do sleep 0.5; done"; }
behind +build-python bash -c "$(after +setup-python); make -s python-plugins"
behind +build-js bash -c "$(after +setup-npm); make -s js-plugins"
step lint-fmt cargo fmt --all --check || { failed+=(lint-fmt); exit 1; }
# The workspace's crates compiled by clippy-driver with what `cargo clippy --
# -D warnings` hands it: only on these cargo commands, so no process of the
# tests inherits them.
linted() { RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" "$@"; }
build_tests() {
    # The plugins' libraries as built for use (no test depends on them, so
    # the test build compiles them only with cfg(test); `cargo clippy
    # --all-targets` lints both), then the tests (which build the host's
    # library and binaries as used).
    linted cargo build --lib --quiet -p kinesis-processor-sdk -p echo -p counter -p buffered-counter \
        -p processor-template -p faulty -p counter-v2 || return 1
    linted cargo test --workspace --no-run --message-format=json-render-diagnostics >"$logs/build.json" || return 1
    # Each test binary, after its package's folder (where cargo runs it).
    sed -n 's/.*"manifest_path":"\([^"]*\)\/Cargo.toml".*"profile":{[^}]*"test":true}.*"executable":"\([^"]*\)".*/\1 \2/p' \
        "$logs/build.json" >"$executables"
    [ -s "$executables" ]
}
step build-tests+clippy build_tests || { failed+=(build-tests+clippy); exit 1; }
for name in +setup-python +setup-npm +setup-emulators +build-python +build-js; do
    finish "$name" || exit 1
done

echo "== test" >&2
step test-binaries host/tests/with-emulators.sh "$root/host/tests/suite.sh" lanes || failed+=(test-binaries)
step test-doc linted cargo test --workspace --doc >"$logs/doc.log" 2>&1 || { failed+=(test-doc); cat "$logs/doc.log" >&2; }
grep -h '^test result:' "$logs/doc.log" | grep -v 'ok. 0 passed' | sed 's/^/[doc] /' >&2 || true
