#!/bin/sh
# flowmq-bridge image: makes the spool volume (/var/lib/mosquitto) writable for the mosquitto user
# (a fresh named volume or a host folder may belong to root), then runs the command as that user.
set -eu
user=mosquitto
data=/var/lib/mosquitto
if [ "$(id -u)" = 0 ]; then
	mkdir -p "$data"
	# Only what is not the user's yet: a large spool is not walked at every start.
	find "$data" \( ! -user "$user" -o ! -group "$user" \) -exec chown "$user:$user" {} + 2>/dev/null || true
	chmod u+rwx "$data"
	exec setpriv --reuid="$user" --regid="$user" --init-groups --inh-caps=-all -- "$@"
fi
exec "$@"
