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
# finish on the old workers. A failed reload is tried again on the next round.
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

watch() {
    last=$(addresses || echo "unresolved")
    while sleep "$interval"; do
        now=$(addresses) || continue
        if [ "$now" = "$last" ]; then
            continue
        fi
        if nginx -s reload 2>/dev/null; then
            echo "$me: upstream addresses changed, nginx reloaded: $(echo "$now" | tr '\n' ';')" >&2
            last="$now"
        fi
    done
}

echo "$me: watching $(echo "$names" | tr '\n' ' ')every ${interval}s"
# In a subshell whose stdin and stdout are replaced for good (`exec`): a redirection on the
# function call itself would leave the shell a saved copy of the entrypoint's stdout open.
(exec </dev/null >/dev/null; watch) &
