#!/usr/bin/env bash
# compare.sh — run the same seed-bench scenarios against Seed and against Debian's Mosquitto,
# side by side, and print a Markdown table with seed/mosquitto ratios.
#
# Each scenario gets a freshly started broker (pinned to core 0) and the load generator runs
# pinned to core 1. Raw summary lines are saved to bench/results/ (git-ignored).
#
# The chat scenarios (chat_max, chat_rate) run Seed as the chat server (store-sqlite + auth-jwt
# + chat, fsync on) under `seed-bench chat`; Seed only, compared in the table with Mosquitto's
# plain QoS 1 `pairs` at the same pair count (pairs_max, pairs_rate; run for Mosquitto if not
# selected). The chat plugin limits each user to 20 msg/s by default, which a benchmark pair
# exceeds, so its config raises `rate_per_second` / `rate_burst` (CHAT_RATE_LIMIT) and otherwise
# names exactly the default plugin set; CHAT_DEFAULT_CONFIG=1 runs `seed` with no --config.
#
# cpu_us_per_msg is the broker's CPU time (user + system, all threads, from /proc/<pid>/stat)
# per delivered message over the send and drain phases. At a fixed rate it is the steadier
# measure of cost: the core-bound maximum is that cost's inverse plus whatever else the shared
# machine does meanwhile. steal_pct is the machine's steal time over the same span (/proc/stat),
# in percent of all CPU time: on a virtual machine, how long the hypervisor held the CPUs back.
# On the project's VMs the chat server's fsyncs make it pause both CPUs for milliseconds at a
# time (none for Mosquitto, which writes nothing); CHAT_DATA=/dev/shm puts the chat server's
# data on tmpfs, where an fsync returns at once, to tell the server's latency from the disk's.
#
# Environment knobs (defaults in parentheses; QUICK=1 shrinks everything to finish in < 1 min):
#   SEED_BIN      path to the seed binary (target/release/seed, built here)
#   BENCH_BIN     path to seed-bench (target/release/seed-bench, built here)
#   PEERS_ONLY=1  benchmark only the peers (mosquitto), skip seed entirely
#   SKIP_BUILD=1  don't run cargo build
#   SCENARIOS     space-separated subset of: pairs_max pairs_rate fanout_q0 fanout_q1 idle offline
#                 chat_max chat_rate
#   CHAT_RATE_LIMIT (1000000 msg/s per user)  CHAT_DEFAULT_CONFIG (0)  CHAT_DURATION (= PAIRS_DURATION)
#   CHAT_DATA (a temporary directory under TMPDIR: where the chat server's data directory goes)
#   PAIRS (16)  PAIRS_DURATION (10)  RATE (5000)  RATE_DURATION (10)
#   FANOUT_GROUPS (10)  FANOUT_MEMBERS (50)  FANOUT_RATE (1000 published msg/s)  FANOUT_DURATION (10)
#   IDLE_CONNECTIONS (10000)  OFFLINE_MESSAGES (20000)  PAYLOAD (64)  MQTT_VERSION (4)
#   MOSQ_NODELAY (1: add `set_tcp_nodelay true` to mosquitto.conf, as seed disables Nagle too)
#   ROUNDS (1)    run the whole selection this many times, brokers alternating within each
#                 round; the table then shows each metric's median and range over the rounds,
#                 the ratio is the median of the rounds' ratios, and the targets use medians.
#                 On a shared machine single runs of the latency scenarios vary by 2x or more.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS="$ROOT/bench/results"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
QUICK="${QUICK:-0}"
PEERS_ONLY="${PEERS_ONLY:-0}"

if [[ "$QUICK" == 1 ]]; then
    d_pairs=4; d_dur=3; d_idle=2000; d_off=5000; d_members=20
else
    d_pairs=16; d_dur=10; d_idle=10000; d_off=20000; d_members=50
fi
PAIRS="${PAIRS:-$d_pairs}"
PAIRS_DURATION="${PAIRS_DURATION:-$d_dur}"
RATE="${RATE:-5000}"
RATE_DURATION="${RATE_DURATION:-$d_dur}"
FANOUT_GROUPS="${FANOUT_GROUPS:-10}"
FANOUT_MEMBERS="${FANOUT_MEMBERS:-$d_members}"
FANOUT_RATE="${FANOUT_RATE:-1000}"
FANOUT_DURATION="${FANOUT_DURATION:-$d_dur}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-$d_idle}"
OFFLINE_MESSAGES="${OFFLINE_MESSAGES:-$d_off}"
PAYLOAD="${PAYLOAD:-64}"
MQTT_VERSION="${MQTT_VERSION:-4}"
MOSQ_NODELAY="${MOSQ_NODELAY:-1}"
CHAT_RATE_LIMIT="${CHAT_RATE_LIMIT:-1000000}"
CHAT_DEFAULT_CONFIG="${CHAT_DEFAULT_CONFIG:-0}"
CHAT_DURATION="${CHAT_DURATION:-$PAIRS_DURATION}"
CHAT_DATA="${CHAT_DATA:-}"
ROUNDS="${ROUNDS:-1}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 1; }
SCENARIOS="${SCENARIOS:-pairs_max pairs_rate fanout_q0 fanout_q1 idle offline chat_max chat_rate}"

log() { printf '[compare] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- prerequisites ---------------------------------------------------------------------------
if ! command -v mosquitto >/dev/null 2>&1 && [[ -x /usr/sbin/mosquitto ]]; then
    PATH="$PATH:/usr/sbin"
fi
if ! command -v mosquitto >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]]; then
        log "installing mosquitto"
        apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto >&2
        PATH="$PATH:/usr/sbin"
    else
        die "mosquitto is not installed (run as root or: apt-get install mosquitto)"
    fi
fi
# Debian's package enables a system-wide mosquitto service on :1883; we never use that port,
# each run below starts its own instance on a free loopback port.

# Raise the fd limit for the brokers and the load generator (idle opens thousands of sockets).
ulimit -n 65535 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "open-file limit: $(ulimit -n)"
if (( $(ulimit -n) < IDLE_CONNECTIONS + 100 )); then
    log "warning: fd limit $(ulimit -n) is below IDLE_CONNECTIONS=$IDLE_CONNECTIONS"
fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    if [[ "$PEERS_ONLY" == 1 || -n "${SEED_BIN:-}" ]]; then
        (cd "$ROOT" && cargo build --release -p seed-bench >&2)
    else
        (cd "$ROOT" && cargo build --release -p seed -p seed-bench >&2)
    fi
fi
BENCH_BIN="${BENCH_BIN:-$TARGET/release/seed-bench}"
SEED_BIN="${SEED_BIN:-$TARGET/release/seed}"
[[ -x "$BENCH_BIN" ]] || die "seed-bench not found at $BENCH_BIN"
BROKERS=(mosquitto)
if [[ "$PEERS_ONLY" != 1 ]]; then
    [[ -x "$SEED_BIN" ]] || die "seed not found at $SEED_BIN (set SEED_BIN or PEERS_ONLY=1)"
    BROKERS=(seed mosquitto)
fi

# Pin the broker to core 0 and the load to core 1 when there are at least two cores.
if command -v taskset >/dev/null 2>&1 && (( $(nproc) >= 2 )); then
    PIN_BROKER=(taskset -c 0)
    PIN_LOAD=(taskset -c 1)
else
    PIN_BROKER=()
    PIN_LOAD=()
fi

WORK=$(mktemp -d -t seed-compare.XXXXXX)
BROKER_PID=""
EXTRA_DATA=""
cleanup() {
    stop_broker
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RESULTS"
STAMP=$(date +%Y%m%d-%H%M%S)
RAW="$RESULTS/compare-$STAMP.txt"
ERRLOG="$RESULTS/compare-$STAMP.log"
: >"$RAW"
: >"$ERRLOG"

# --- broker lifecycle ------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))   # below the ephemeral range (32768+)
        if ! port_open "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

start_broker() { # name -> sets BROKER_PID, PORT (and HTTP_PORT for seed)
    local name=$1 data="$WORK/data-$1" conf
    if [[ "$name" == seed-chat && -n "$CHAT_DATA" ]]; then
        data=$(mktemp -d "$CHAT_DATA/seed-chat.XXXXXX")
        EXTRA_DATA=$data
    fi
    rm -rf "$data"
    mkdir -p "$data"
    PORT=$(free_port)
    case "$name" in
        seed)
            local ws
            ws=$(free_port)
            HTTP_PORT=$(free_port)
            conf="$WORK/seed.toml"
            cp "$ROOT/deploy/plain-broker.toml" "$conf"
            "${PIN_BROKER[@]}" "$SEED_BIN" serve --mqtt "127.0.0.1:$PORT" --ws "127.0.0.1:$ws" \
                --http "127.0.0.1:$HTTP_PORT" --data "$data" --config "$conf" \
                >>"$data/broker.log" 2>&1 &
            ;;
        seed-chat)
            # The chat server: the default plugin set, fsync on (see the header).
            local conf_args=()
            HTTP_PORT=$(free_port)
            if [[ "$CHAT_DEFAULT_CONFIG" != 1 ]]; then
                conf="$WORK/seed-chat.toml"
                {
                    echo "[store]"
                    echo "fsync = true"
                    echo "[plugins.store-sqlite]"
                    echo "[plugins.auth-jwt]"
                    echo "[plugins.chat]"
                    echo "rate_per_second = $CHAT_RATE_LIMIT.0"
                    echo "rate_burst = $CHAT_RATE_LIMIT"
                } >"$conf"
                conf_args=(--config "$conf")
            fi
            "${PIN_BROKER[@]}" "$SEED_BIN" serve --mqtt "127.0.0.1:$PORT" --ws off \
                --http "127.0.0.1:$HTTP_PORT" --data "$data" "${conf_args[@]}" \
                >>"$data/broker.log" 2>&1 &
            ;;
        mosquitto)
            conf="$WORK/mosquitto.conf"
            {
                echo "listener $PORT 127.0.0.1"
                echo "allow_anonymous true"
                echo "max_queued_messages 100000"
                echo "persistence false"
                if [[ "$MOSQ_NODELAY" == 1 ]]; then echo "set_tcp_nodelay true"; fi
            } >"$conf"
            "${PIN_BROKER[@]}" mosquitto -c "$conf" >>"$data/broker.log" 2>&1 &
            ;;
    esac
    BROKER_PID=$!
    local i
    for i in $(seq 1 100); do
        if port_open "$PORT"; then
            sleep 0.2
            return 0
        fi
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    log "$name failed to start on port $PORT:"
    tail -n 20 "$data/broker.log" >&2 || true
    stop_broker
    return 1
}

stop_broker() {
    if [[ -n "$BROKER_PID" ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
    rm -rf "$WORK"/data-*
    if [[ -n "${EXTRA_DATA:-}" ]]; then
        rm -rf "$EXTRA_DATA"
        EXTRA_DATA=""
    fi
}

# --- scenarios -------------------------------------------------------------------------------
scenario_args() {
    local common=(--payload "$PAYLOAD" --mqtt-version "$MQTT_VERSION" --broker-pid "$BROKER_PID")
    case "$1" in
        pairs_max) echo pairs --qos 1 --pairs "$PAIRS" --duration "$PAIRS_DURATION" "${common[@]}" ;;
        pairs_rate) echo pairs --qos 1 --pairs "$PAIRS" --rate "$RATE" --duration "$RATE_DURATION" "${common[@]}" ;;
        fanout_q0) echo fanout --qos 0 --groups "$FANOUT_GROUPS" --members "$FANOUT_MEMBERS" --rate "$FANOUT_RATE" --duration "$FANOUT_DURATION" "${common[@]}" ;;
        fanout_q1) echo fanout --qos 1 --groups "$FANOUT_GROUPS" --members "$FANOUT_MEMBERS" --rate "$FANOUT_RATE" --duration "$FANOUT_DURATION" "${common[@]}" ;;
        idle) echo idle --connections "$IDLE_CONNECTIONS" --broker-pid "$BROKER_PID" --mqtt-version "$MQTT_VERSION" ;;
        offline) echo offline --messages "$OFFLINE_MESSAGES" "${common[@]}" ;;
        chat_max) echo chat --pairs "$PAIRS" --duration "$CHAT_DURATION" --http-port "$HTTP_PORT" "${common[@]}" ;;
        chat_rate) echo chat --pairs "$PAIRS" --rate "$RATE" --duration "$CHAT_DURATION" --http-port "$HTTP_PORT" "${common[@]}" ;;
        *) die "unknown scenario $1" ;;
    esac
}

# Metrics shown in the table per scenario.
scenario_metrics() {
    case "$1" in
        pairs_max) echo msg_per_s p50_us p99_us lost duplicated cpu_us_per_msg steal_pct ;;
        pairs_rate) echo msg_per_s p50_us p99_us max_us lost duplicated cpu_us_per_msg steal_pct ;;
        fanout_q0) echo msg_per_s p50_us p99_us lost cpu_us_per_msg ;;
        fanout_q1) echo msg_per_s p50_us p99_us lost duplicated cpu_us_per_msg ;;
        idle) echo bytes_per_conn errors ;;
        offline) echo msg_per_s lost duplicated ;;
        chat_max) echo msg_per_s p50_us p99_us lost duplicated receipts wire_bytes_per_msg cpu_us_per_msg steal_pct ;;
        chat_rate) echo msg_per_s p50_us p99_us max_us lost duplicated receipts wire_bytes_per_msg cpu_us_per_msg steal_pct ;;
    esac
}

# The chat scenarios run on Seed's chat server and compare with Mosquitto's plain pairs.
counterpart() {
    case "$1" in
        chat_max) echo pairs_max ;;
        chat_rate) echo pairs_rate ;;
        *) echo "$1" ;;
    esac
}

declare -A RES=()

run_one() { # broker scenario round
    local broker=$1 sc=$2 round=$3 line rc args process=$1
    if [[ "$broker" == seed && "$sc" == chat_* ]]; then
        process=seed-chat
    fi
    if ! start_broker "$process"; then
        RES["$broker:$sc:$round"]="FAILED"
        return
    fi
    # shellcheck disable=SC2207
    args=($(scenario_args "$sc"))
    log "round $round/$ROUNDS, $broker: $sc (${args[*]})"
    set +e
    echo "--- $broker $sc" >>"$ERRLOG"
    line=$(timeout 900 "${PIN_LOAD[@]}" "$BENCH_BIN" "${args[@]}" --host 127.0.0.1 --port "$PORT" \
        --label "$process" 2>>"$ERRLOG")
    rc=$?
    set -e
    stop_broker
    if [[ -z "$line" ]]; then
        log "$broker: $sc failed (exit $rc), see $ERRLOG"
        RES["$broker:$sc:$round"]="FAILED"
        return
    fi
    (( rc == 0 )) || log "$broker: $sc exited $rc (incomplete run)"
    echo "case=$sc round=$round $line" | tee -a "$RAW" >&2
    RES["$broker:$sc:$round"]="$line"
}

field() { # line key
    local kv
    for kv in $1; do
        if [[ "${kv%%=*}" == "$2" ]]; then
            echo "${kv#*=}"
            return
        fi
    done
    echo "-"
}

for ((round = 1; round <= ROUNDS; round++)); do
    for sc in $SCENARIOS; do
        for broker in "${BROKERS[@]}"; do
            if [[ "$sc" == chat_* ]]; then
                if [[ "$broker" == seed ]]; then
                    run_one seed "$sc" "$round"
                elif [[ -z "${RES[$broker:$(counterpart "$sc"):$round]:-}" ]]; then
                    run_one "$broker" "$(counterpart "$sc")" "$round"
                fi
            elif [[ -z "${RES[$broker:$sc:$round]:-}" ]]; then
                run_one "$broker" "$sc" "$round"
            fi
        done
    done
done

values() { # broker scenario metric: the metric of every round, one word each
    local round line
    for ((round = 1; round <= ROUNDS; round++)); do
        line=${RES[$1:$2:$round]:-}
        if [[ "$line" == FAILED ]]; then echo FAILED; else field "$line" "$3"; fi
    done
}

ratios() { # seed-values mosquitto-values: the rounds' ratios, where both are numbers
    paste -d' ' <(tr ' ' '\n' <<<"$1") <(tr ' ' '\n' <<<"$2") | awk '
        $1 ~ /^-?[0-9.]+$/ && $2 ~ /^-?[0-9.]+$/ && $2 + 0 != 0 { printf "%.4f\n", $1 / $2 }'
}

summary() { # words [digits]: one round's word as it is; more rounds: "median (min–max)"
    awk -v rounds="$ROUNDS" -v digits="${2:-}" '
        function show(x) {
            if (digits != "") return sprintf("%." digits "f", x)
            return x == int(x) ? sprintf("%d", x) : sprintf("%.1f", x)
        }
        { for (i = 1; i <= NF; i++) if ($i ~ /^-?[0-9.]+$/) v[++n] = $i + 0; else other = $i }
        END {
            if (rounds == 1 && n == 1 && digits == "") { print $1; exit }
            if (n == 0) { print (other == "" ? "-" : other); exit }
            for (i = 2; i <= n; i++)    # insertion sort: mawk has no asort
                for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
            m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
            if (v[1] == v[n]) print show(m); else printf "%s (%s–%s)\n", show(m), show(v[1]), show(v[n])
        }' <<<"$1"
}

median() { # words: the median of the numbers among them, or "-"
    summary "$1" | awk '{ print $1 }'
}

# --- report ----------------------------------------------------------------------------------
echo
echo "| scenario | metric | seed | mosquitto | ratio |"
echo "|---|---|---:|---:|---:|"
for sc in $SCENARIOS; do
    for m in $(scenario_metrics "$sc"); do
        qsc=$(counterpart "$sc")
        sv=$(values seed "$sc" "$m" | xargs)
        qv=$(values mosquitto "$qsc" "$m" | xargs)
        s=$(summary "$sv")
        q=$(summary "$qv")
        ratio=$(summary "$(ratios "$sv" "$qv" | xargs)" 2)
        label=$sc
        [[ "$sc" != "$qsc" ]] && label="$sc (mosquitto: $qsc)"
        echo "| $label | $m | $s | $q | $ratio |"
    done
done
echo

# Targets for the chat server, checked against this run's figures (medians over the rounds).
target() { # description value op bound
    local verdict
    verdict=$(awk -v a="$2" -v b="$4" -v op="$3" 'BEGIN {
        if (a !~ /^-?[0-9.]+$/ || b !~ /^-?[0-9.]+$/) { print "n/a"; exit }
        ok = (op == ">=") ? (a + 0 >= b + 0) : (a + 0 <= b + 0)
        print ok ? "met" : "NOT met" }')
    echo "- $1: $2 $3 $4: **$verdict**"
}
if [[ " $SCENARIOS " == *" chat_max "* ]]; then
    target "chat_max msg_per_s >= mosquitto pairs_max msg_per_s" \
        "$(median "$(values seed chat_max msg_per_s | xargs)")" ">=" \
        "$(median "$(values mosquitto pairs_max msg_per_s | xargs)")"
fi
if [[ " $SCENARIOS " == *" chat_rate "* ]]; then
    target "chat_rate p99_us at $RATE msg/s <= 2000" \
        "$(median "$(values seed chat_rate p99_us | xargs)")" "<=" 2000
fi
if grep -q "^chat: hook" "$ERRLOG"; then
    echo
    echo "Seed hook time during the chat runs (from /metrics):"
    grep -E "^--- seed chat_|^chat: hook" "$ERRLOG" | sed 's/^/    /'
fi
echo
log "raw summaries: $RAW"
