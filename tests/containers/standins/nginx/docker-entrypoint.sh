#!/bin/sh
# What the official nginx image's /docker-entrypoint.sh does: when the command is nginx, run
# each executable /docker-entrypoint.d/*.sh in name order (sourcing *.envsh), then exec the
# command. The image's own 20-envsubst-on-templates.sh renders the templates; a deployment
# adds scripts by mounting single files into that folder.
set -e
if [ "$1" = "nginx" ] || [ "$1" = "nginx-debug" ]; then
    for script in $(find /docker-entrypoint.d/ -follow -type f -print | sort -V); do
        case "$script" in
            *.envsh)
                if [ -x "$script" ]; then
                    echo "$0: sourcing $script"
                    # shellcheck disable=SC1090
                    . "$script"
                fi ;;
            *.sh)
                if [ -x "$script" ]; then
                    echo "$0: launching $script"
                    "$script"
                else
                    echo "$0: ignoring $script, not executable"
                fi ;;
            *) echo "$0: ignoring $script" ;;
        esac
    done
    echo "$0: configuration complete; ready for start up"
fi
exec "$@"
