# flowmq-bridge: Debian 12 + Mosquitto 2.0.11 + the plugin and flowmq-link. The image carries the
# plugin lines (/etc/mosquitto/conf.d/flowmq-bridge.conf); mount the bridge's configuration as
# /etc/mosquitto/conf.d/flowmq-bridge.yaml (spool.path under /var/lib/mosquitto, the volume) and a
# listener as another conf.d/*.conf. Secrets may come as read-only mounts (mode 0444 or 0644).
#
#   docker build -t flowmq-bridge .         (podman: podman build --format docker, for the HEALTHCHECK)
#   docker run -v $PWD/flowmq-bridge.yaml:/etc/mosquitto/conf.d/flowmq-bridge.yaml:ro \
#       -v $PWD/listener.conf:/etc/mosquitto/conf.d/listener.conf:ro \
#       -v flowmq-spool:/var/lib/mosquitto -p 1883:1883 flowmq-bridge
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev meson ninja-build pkg-config mosquitto-dev libmosquitto-dev librocksdb-dev \
      libcyaml-dev libyaml-dev libssl-dev libcjson-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
# --libdir lib: the same paths on every architecture (no dpkg-architecture needed): the plugin in
# /usr/lib/mosquitto, flowmq-link in /usr/libexec/flowmq-bridge; the installed flowmq-bridge.conf
# names them.
RUN meson setup --prefix=/usr --libdir=lib --sysconfdir=/etc -Dtests=false -Dfuzz=disabled /build /src \
 && meson compile -C /build \
 && meson install -C /build --destdir /out \
 && mkdir -p /out/usr/share/doc/flowmq-bridge/examples \
 && cp /out/etc/mosquitto/conf.d/flowmq-bridge.yaml /out/usr/share/doc/flowmq-bridge/examples/

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      mosquitto libmosquitto1 librocksdb7.8 libcyaml1 libyaml-0-2 libssl3 libcjson1 libmicrohttpd12 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/mosquitto && chown mosquitto:mosquitto /var/lib/mosquitto
# Everything meson installed, whatever the architecture.
COPY --from=build /out/ /
COPY docker/mosquitto.conf /etc/mosquitto/mosquitto.conf
COPY docker/entrypoint.sh /usr/local/bin/flowmq-entrypoint
VOLUME /var/lib/mosquitto
EXPOSE 1883
# Healthy while connected to the cloud or disconnected for less than FLOWMQ_MAX_DISCONNECTED.
ENV FLOWMQ_MAX_DISCONNECTED=5m
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=2 \
  CMD /usr/bin/flowmq-bridge health /etc/mosquitto/conf.d/flowmq-bridge.yaml --max-disconnected "$FLOWMQ_MAX_DISCONNECTED"
# The entrypoint makes the spool volume the mosquitto user's, then runs the command as that user.
ENTRYPOINT ["/usr/local/bin/flowmq-entrypoint"]
CMD ["/usr/sbin/mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"]
