#!/bin/sh
set -e
printf 'default_user = %s\ndefault_pass = %s\nloopback_users = none\n' \
  "${RABBITMQ_DEFAULT_USER:-guest}" "${RABBITMQ_DEFAULT_PASS:-guest}" > /etc/rabbitmq/rabbitmq.conf
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
exec su rabbitmq -s /bin/sh -c "exec rabbitmq-server"
