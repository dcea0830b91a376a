#!/usr/bin/env bash
# A team's first hour with mocksync, as commands. Run each block on the machine named in its
# comment; `--home` lets you try all of it on one machine (two devices, one relay, loopback).
#
#   bash examples/team-walkthrough.sh            # runs the whole walk-through locally
#
# Real use: drop the --home/--folder flags, run `mocksync daemon` as a user service
# (systemctl --user enable --now mocksync, see systemd/README.md), and point --relay at your
# relay's https:// URL.
set -euo pipefail
MS=${MOCKSYNC:-mocksync}
command -v "$MS" >/dev/null || MS="$(dirname "$0")/../.venv/bin/mocksync"
W=$(mktemp -d "${TMPDIR:-/tmp}/mocksync-walkthrough-XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RELAY=http://127.0.0.1:$PORT
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
A=(--home "$W/alice"); B=(--home "$W/bob")

echo "== the relay (once, on a server): it stores only ciphertext"
"$MS" relay --host 127.0.0.1 --port "$PORT" --data "$W/relay" --plan team &
pids+=($!)
sleep 1

echo "== Alice's laptop: keys, a team space on the relay, the daemon"
"$MS" "${A[@]}" init --name alice-laptop --member Alice
"$MS" "${A[@]}" space create team --relay "$RELAY"
mkdir -p "$W/alice-envs" "$W/bob-envs"
"$MS" "${A[@]}" daemon --folder "$W/alice-envs" --relay "$RELAY" --no-mdns 2>"$W/alice.log" &
pids+=($!)

echo "== Alice invites Bob (the token is one-time and expires; paste it in chat)"
sleep 1
TOKEN=$("$MS" "${A[@]}" invite team --expires 1h | tail -n 1)

echo "== Bob's laptop: keys, the daemon, then join with the token"
"$MS" "${B[@]}" init --name bob-laptop --member Bob
"$MS" "${B[@]}" daemon --folder "$W/bob-envs" --relay "$RELAY" --no-mdns 2>"$W/bob.log" &
pids+=($!)
sleep 1
"$MS" "${B[@]}" join "$TOKEN" --timeout 30 --bind 127.0.0.1
"$MS" "${A[@]}" members team

echo "== Alice shares an environment; it appears in Bob's folder"
cp "$(dirname "$0")/environments/petstore.json" "$W/alice-envs/"
sleep 0.5
"$MS" "${A[@]}" share "$W/alice-envs/petstore.json" --space team
for _ in $(seq 100); do ls "$W/bob-envs"/*.json >/dev/null 2>&1 && break; sleep 0.1; done
ls -l "$W/bob-envs"

echo "== Both sides, and the change log"
"$MS" "${A[@]}" status
"$MS" "${B[@]}" log "$(ls "$W/bob-envs"/*.json | head -n 1)"
echo "walk-through done (files in $W)"
