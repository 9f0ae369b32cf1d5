# flowmq-bridge: Debian 12 + Mosquitto 2.0.11 + the plugin and flowmq-link. The configuration comes from a mounted
# conf.d (listeners, the plugin lines and flowmq-bridge.yaml); the spool lives in a volume.
#
#   docker build -t flowmq-bridge .
#   docker run -v $PWD/conf.d:/etc/mosquitto/conf.d:ro -v flowmq-spool:/var/lib/mosquitto \
#       -p 1883:1883 flowmq-bridge
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc meson ninja-build pkg-config mosquitto-dev libmosquitto-dev librocksdb-dev \
      libcyaml-dev libyaml-dev libssl-dev libcjson-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN meson setup --prefix=/usr -Dtests=false /build /src \
 && meson compile -C /build \
 && meson install -C /build --destdir /out

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      mosquitto libmosquitto1 librocksdb7.8 libcyaml1 libyaml-0-2 libssl3 libcjson1 libmicrohttpd12 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/mosquitto && chown mosquitto:mosquitto /var/lib/mosquitto
COPY --from=build /out/usr/lib/x86_64-linux-gnu/mosquitto/flowmq_bridge.so /usr/lib/x86_64-linux-gnu/mosquitto/
COPY --from=build /out/usr/bin/flowmq-bridge /usr/bin/
# The link process's program, where the plugin looks for it (meson's prefix/libexecdir).
COPY --from=build /out/usr/libexec/flowmq-bridge/flowmq-link /usr/libexec/flowmq-bridge/
COPY --from=build /out/etc/mosquitto/conf.d/ /usr/share/doc/flowmq-bridge/examples/
COPY docker/mosquitto.conf /etc/mosquitto/mosquitto.conf
VOLUME /var/lib/mosquitto
EXPOSE 1883
CMD ["/usr/sbin/mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"]
