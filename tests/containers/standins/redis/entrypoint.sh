#!/bin/sh
# What the official redis image's entrypoint does, as far as the compose stack relies on it:
# arguments that start with "-" are options of redis-server; started as root, it hands /data
# to the redis user and runs the server as that user; and a server started without a
# configuration file gets `--protected-mode no` (a server in a container is reached from other
# containers; Redis' protected mode would refuse them when no password is set).
set -e
case "$1" in
    -*) set -- redis-server "$@" ;;
esac
if [ "$1" = "redis-server" ]; then
    shift
    if [ -n "$1" ] && [ -f "$1" ]; then
        config="$1"
        shift
        if grep -q '^protected-mode' "$config"; then
            set -- "$config" "$@"
        else
            set -- "$config" --protected-mode no "$@"
        fi
    else
        set -- --protected-mode no "$@"
    fi
    set -- redis-server "$@"
    if [ "$(id -u)" = "0" ]; then
        find . \! -user redis -exec chown redis '{}' +
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
