# syntax=docker/dockerfile:1
#
# The mlink engine image: `mlink run PIPELINE`, `mlink serve-rtsp FILE`, `mlink aggregate`.
#
#   docker build -t mlink:latest .
#   docker run --rm -p 9464:9464 -v "$PWD/pipelines:/opt/mlink/pipelines:ro" mlink:latest run pipelines/demo.yaml
#
# Stage 1 builds the binary and runs the project's own set-up (Debian packages, ONNX Runtime
# from PyPI into .venv, footage, models with their sha256 checks), so the image holds exactly
# what the tests run against. Stage 2 is a slim Debian 12 with only the runtime libraries.

ARG RUST_VERSION=1.95
ARG ORT_VERSION=1.31.1

FROM rust:${RUST_VERSION}-bookworm AS build
ARG ORT_VERSION
WORKDIR /src
# set-up first (apt, venv, footage, models) so that a source edit does not redo it
COPY scripts/ scripts/
COPY models/ models/
# (set-up also installs its validation tools, docker-compose and prometheus: harmless here,
# none of it reaches the runtime stage)
RUN scripts/setup.sh \
 && rm -rf /var/lib/apt/lists/*
# The sources (.dockerignore keeps target/, .venv/ and data/ out, so the set-up above stays).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mlink \
 && install -D -m 0755 target/release/mlink /out/bin/mlink
# Stage the pieces the runtime copies, at fixed paths (the venv's python3.X folder varies).
# Models: the top-level files of models/ (ONNX files, manifest), not any conversion venv below it.
RUN mkdir -p /out/onnxruntime /out/footage /out/models \
 && cp .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.${ORT_VERSION} \
       .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime_providers_shared.so \
       /out/onnxruntime/ \
 && cp data/footage/* /out/footage/ \
 && find models -maxdepth 1 -type f -exec cp {} /out/models/ \;

FROM debian:12-slim AS runtime
ARG ORT_VERSION
# GStreamer with the plugins the sources need (libav decodes the DIV3/XviD footage, the RTSP
# server library for `serve-rtsp`), OpenCV imgproc, and curl for the health check.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl tini \
      libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 libgstrtspserver-1.0-0 \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
      gstreamer1.0-plugins-ugly gstreamer1.0-libav \
      libopencv-core406 libopencv-imgproc406 \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 mlink \
 && useradd --system --uid 10001 --gid mlink --home-dir /var/lib/mlink --shell /usr/sbin/nologin mlink \
 && install -d -o mlink -g mlink /var/lib/mlink

COPY --from=build /out/bin/mlink /usr/local/bin/mlink
COPY --from=build /out/onnxruntime/ /opt/onnxruntime/lib/
COPY --from=build /out/models/ /opt/mlink/models/
COPY --from=build /src/pipelines/ /opt/mlink/pipelines/
COPY --from=build /out/footage/ /opt/mlink/data/footage/

# Fail the build, not the first start, when a shared library the binary links is missing.
RUN if ldd /usr/local/bin/mlink | grep 'not found'; then exit 1; fi \
 && mlink --version

ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so.${ORT_VERSION} \
    MLINK_LOG=info \
    GST_REGISTRY=/var/lib/mlink/.gst-registry.bin

WORKDIR /opt/mlink
USER mlink:mlink
# 9464: /metrics and /healthz (a pipeline's metrics.listen must be 0.0.0.0:9464 in a container);
# 8554: RTSP (`serve-rtsp`); 7070: the aggregation server (`aggregate`).
EXPOSE 9464 8554 7070
# The health check targets the engine's metrics endpoint; the camera and aggregator services
# override or disable it (see docker-compose.yml).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/mlink"]
CMD ["run", "pipelines/demo.yaml"]
