#!/bin/sh
# meson install puts the plugin where the configured plugindir says, the CLI in bindir, flowmq-link
# in LIBEXECDIR/flowmq-bridge (executable, where the plugin looks for it by default) and the two
# documented examples in SYSCONFDIR/mosquitto/conf.d; the installed plugin exports the entry points.
# Arguments: BUILD_DIR PLUGIN_PATH CONF_DIR BIN_PATH LINK_PATH (absolute install paths, without
# DESTDIR).
set -eu
build=$1 plugin=$2 confdir=$3 bin=$4 link=$5
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$dest.log" 2>&1 || { cat "$dest.log"; rm -f "$dest.log"; exit 1; }
rm -f "$dest.log"
fail=0
for f in "$plugin" "$confdir/flowmq-bridge.conf" "$confdir/flowmq-bridge.yaml" "$bin" "$link"; do
	if [ -f "$dest$f" ]; then echo "ok: $f"; else echo "missing: $f"; fail=1; fi
done
[ -x "$dest$link" ] || { echo "installed flowmq-link is not executable: $link"; fail=1; }
# The plugin's compiled-in default is the installed flowmq-link.
grep -qF "$link" "$dest$plugin" || { echo "the installed plugin does not name $link as its flowmq-link"; fail=1; }
nm -D --defined-only "$dest$plugin" | grep -q ' T mosquitto_plugin_init$' || { echo "installed plugin lacks mosquitto_plugin_init"; fail=1; }
# The installed plugin lines name the installed plugin and example configuration (made from the
# configured paths, so they hold on any architecture).
grep -qxF "plugin $plugin" "$dest$confdir/flowmq-bridge.conf" || { echo "flowmq-bridge.conf does not load $plugin"; fail=1; }
grep -qxF "plugin_opt_config_file $confdir/flowmq-bridge.yaml" "$dest$confdir/flowmq-bridge.conf" || { echo "flowmq-bridge.conf lacks plugin_opt_config_file $confdir/flowmq-bridge.yaml"; fail=1; }
if grep -n '@[A-Z_]*@' "$dest$confdir/flowmq-bridge.conf"; then echo "flowmq-bridge.conf has unreplaced placeholders"; fail=1; fi
exit $fail
