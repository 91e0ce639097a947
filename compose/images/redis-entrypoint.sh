#!/bin/sh
# Run redis-server as the redis user, reachable from other containers (protected mode off unless asked).
set -eu
if [ "${1:-}" = "redis-server" ]; then
    shift
    case " $* " in
        *" --protected-mode "*) ;;
        *) set -- --protected-mode no "$@" ;;
    esac
    chown -R redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$@"
fi
exec "$@"
