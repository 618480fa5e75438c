# The add-on image: Home Assistant's Python base (Alpine, s6-overlay v3, bashio) and this package.
# BUILD_FROM comes from build.yaml when the Supervisor builds; the default serves a plain `docker build`.
ARG BUILD_FROM=ghcr.io/home-assistant/base-python:3.13-alpine3.23

# The panel's chart library (uPlot) from the npm registry, as package-lock.json pins it, in a stage of its
# own: node and npm stay out of the add-on's image; only uPlot's two dist files are copied over below.
FROM ${BUILD_FROM} AS panel-vendor
WORKDIR /src
COPY package.json package-lock.json ./
RUN apk add --no-cache npm \
    && npm ci --omit=dev --no-audit --no-fund \
    && test -s node_modules/uplot/dist/uPlot.iife.min.js

FROM ${BUILD_FROM}

ARG BUILD_VERSION=dev
ARG BUILD_ARCH=amd64

# Only what the package needs, pinned by constraints.txt. Every dependency has a musl wheel (the base image
# points pip at Home Assistant's wheel index too): no compiler is installed, none is left behind.
WORKDIR /usr/src/marstek_webasto_addon
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY marstek_webasto_addon ./marstek_webasto_addon
RUN pip install --no-cache-dir -c constraints.txt . \
    && cd / && rm -rf /usr/src/marstek_webasto_addon \
    && python3 -m marstek_webasto_addon --help >/dev/null

# The panel finds uPlot where MWA_VENDOR_DIR points (marstek_webasto_addon/web/server.py, vendor_dir).
COPY --from=panel-vendor /src/node_modules/uplot/dist/uPlot.iife.min.js /src/node_modules/uplot/dist/uPlot.min.css \
    /usr/share/marstek_webasto_addon/vendor/
ENV MWA_VENDOR_DIR=/usr/share/marstek_webasto_addon/vendor

COPY rootfs /

# At a stop the bridge puts the batteries back in Auto and releases Modbus control: a few seconds, up to
# SHUTDOWN_BUDGET_S (addon/runtime.py) when devices are slow. s6 gives a service 3 s by default before it
# kills it; 25 s leaves that time and still ends within the Supervisor's 30 s (`timeout` in config.yaml).
ENV S6_SERVICES_GRACETIME=25000

LABEL \
    io.hass.type="addon" \
    io.hass.name="Marstek & Webasto" \
    io.hass.version="${BUILD_VERSION}" \
    io.hass.arch="${BUILD_ARCH}" \
    org.opencontainers.image.title="Marstek & Webasto" \
    org.opencontainers.image.version="${BUILD_VERSION}" \
    org.opencontainers.image.licenses="MIT"

# Liveness of the process (its HTTP server answers); device and broker trouble show in the panel instead,
# since restarting the add-on would not fix them.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8099/api/health >/dev/null || exit 1
