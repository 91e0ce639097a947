#!/bin/sh
# Write rabbitmq.conf from the environment (as the official image does), then run the server.
set -eu
umask 077
{
    echo "loopback_users = none"
    echo "listeners.tcp.default = ${RABBITMQ_NODE_PORT:-5672}"
    echo "log.console = true"
    echo "log.console.level = info"
    echo "log.file = false"
    echo "default_user = ${RABBITMQ_DEFAULT_USER:-guest}"
    echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}"
    echo "default_vhost = ${RABBITMQ_DEFAULT_VHOST:-/}"
} > /etc/rabbitmq/rabbitmq.conf
chown rabbitmq:rabbitmq /etc/rabbitmq/rabbitmq.conf /var/lib/rabbitmq
unset RABBITMQ_DEFAULT_PASS
exec "$@"
