#!/bin/sh
# Re-resolve the rnnserve replicas' host names and reload nginx when an address changes.
#
# nginx resolves the host names of its `upstream` servers once, when it loads its
# configuration. A replica container that is restarted or replaced may come back with another
# address, and nginx would keep sending its share of requests to the old one (504s) until it
# is reloaded. This script, run by the official nginx image's entrypoint before nginx starts
# (docker-compose.yml mounts it into /docker-entrypoint.d/), starts a small background loop:
# every RNNSERVE_WATCH_INTERVAL_S seconds (2 by default) it looks up every host name in
# RNNSERVE_HTTP_SERVERS and RNNSERVE_GRPC_SERVERS (the upstream lines the template is rendered
# with) through the container's resolver (Docker's embedded DNS, or under podman the
# network's DNS server named in /etc/resolv.conf), and runs `nginx -s reload` when the set of
# addresses has changed and every name resolves (a stopped replica's name usually does not;
# nginx then keeps its last configuration, and its own retries skip the dead address). A
# reload starts new workers with the new addresses; requests and WebSocket streams in flight
# finish on the old workers.
#
# `nginx -s reload` returns as soon as the master has the signal, before it has read the new
# configuration: for a while the old workers still take new connections, with the old
# addresses, and a configuration the master refuses (a name it could not resolve at that
# moment) leaves them there for good. So the change counts as done, and is logged as
# "nginx reloaded", only once the master's workers that take connections are all new ones
# (an old worker renames itself "nginx: worker process is shutting down" as it stops
# accepting); until then, up to RNNSERVE_WATCH_RELOAD_WAIT_S seconds (10 by default, whole
# seconds), the reload is not done, and it is sent again the next round. The master's pid is
# read from ${NGINX_STATE_DIR}/nginx.pid, where the template puts it.
#
# nginx 1.27.3 and later can do this themselves (`server NAME:PORT resolve;` in an upstream
# with a `zone` and a `resolver`); this loop works on every version, Debian 12's 1.22 too.
# Set RNNSERVE_WATCH_UPSTREAMS=off to turn it off.
set -eu

me="40-rnnserve-watch-upstreams"
if [ "${RNNSERVE_WATCH_UPSTREAMS:-on}" = "off" ]; then
    echo "$me: off (RNNSERVE_WATCH_UPSTREAMS=off)"
    exit 0
fi
interval="${RNNSERVE_WATCH_INTERVAL_S:-2}"
reload_wait_s="${RNNSERVE_WATCH_RELOAD_WAIT_S:-10}"

# "server rnnserve-1:8000 max_fails=3 ...; server ..." -> the host names, IP literals and
# unix: sockets left out.
names=$(printf '%s\n' "${RNNSERVE_HTTP_SERVERS:-} ${RNNSERVE_GRPC_SERVERS:-}" \
    | tr ';' '\n' \
    | awk '$1 == "server" { print $2 }' \
    | sed -e 's/:[0-9]*$//' \
    | grep -v -e '^unix:' -e '^\[' -e '^[0-9.]*$' \
    | sort -u || true)
if [ -z "$names" ]; then
    echo "$me: no upstream host names to watch"
    exit 0
fi

# One line per name: "name address address ..."; fails when a name does not resolve.
addresses() {
    for name in $names; do
        found=$(getent hosts "$name" | awk '{ print $1 }' | sort -u | tr '\n' ' ')
        if [ -z "$found" ]; then
            return 1
        fi
        printf '%s %s\n' "$name" "$found"
    done
}

pid_file="${NGINX_STATE_DIR:-/var/run}/nginx.pid"

# The pids of the nginx master's workers that take new connections, on one line.
serving_workers() {
    master=$(cat "$pid_file" 2>/dev/null) || return 0
    grep -l "^PPid:[[:space:]]*$master\$" /proc/[0-9]*/status 2>/dev/null \
        | while read -r status; do
            process=${status%/status}
            if [ "$(tr -d '\000' 2>/dev/null < "$process/cmdline")" = "nginx: worker process" ]; then
                printf '%s ' "${process#/proc/}"
            fi
        done
}

# Waits until the master's workers that take connections are none of $1 (those that did
# before the reload); fails after reload_wait_s.
new_workers_serve() {
    waited=0
    while [ "$waited" -lt $((reload_wait_s * 10)) ]; do
        after=$(serving_workers)
        old=""
        for worker in $after; do
            case " $1 " in *" $worker "*) old="$worker" ;; esac
        done
        if [ -n "$after" ] && [ -z "$old" ]; then
            return 0
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    return 1
}

watch() {
    last=$(addresses || echo "unresolved")
    while sleep "$interval"; do
        now=$(addresses) || continue
        if [ "$now" = "$last" ]; then
            continue
        fi
        before=$(serving_workers)
        if ! sent=$(nginx -s reload 2>&1); then
            echo "$me: upstream addresses changed, but nginx -s reload failed (trying again):" \
                "$(echo "$sent" | tail -n 1)" >&2
        elif new_workers_serve "$before"; then
            echo "$me: upstream addresses changed, nginx reloaded: $(echo "$now" | tr '\n' ';')" >&2
            last="$now"
        else
            echo "$me: upstream addresses changed, but nginx still serves from its old workers" \
                "${reload_wait_s}s after a reload (see its error log); trying again" >&2
        fi
    done
}

echo "$me: watching $(echo "$names" | tr '\n' ' ')every ${interval}s"
# In a subshell whose stdin and stdout are replaced for good (`exec`): a redirection on the
# function call itself would leave the shell a saved copy of the entrypoint's stdout open.
(exec </dev/null >/dev/null; watch) &
