# The Midge image: static binaries from scripts/build-dist.sh, nothing else. No base image
# and no shell: build-dist.sh has already produced dist/<TARGETARCH>/ and the CA bundle, so
# `docker build --platform linux/arm64 .` needs neither emulation nor a registry.
#
#   scripts/build-dist.sh && docker build --platform linux/amd64 -t midge .
FROM scratch

ARG TARGETARCH
ARG VERSION=dev
ARG REVISION=unknown

LABEL org.opencontainers.image.title="midge" \
      org.opencontainers.image.description="A NATS-compatible message broker" \
      org.opencontainers.image.source="https://github.com/midge-dev/midge" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

COPY dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY dist/${TARGETARCH}/midge /midge

# The distroless "nonroot" ids: no passwd file is needed for a numeric user.
USER 65532:65532
# Clients, cluster routes, HTTP monitoring.
EXPOSE 4222 6222 8222
ENTRYPOINT ["/midge"]
