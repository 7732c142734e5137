# The Midge image: static binaries from scripts/build-dist.sh, nothing else. No base image
# and no shell; dist/<TARGETARCH>/ and the CA bundle are already built, so building for
# another platform needs neither emulation nor a registry (scripts/image-test.sh):
#
#   scripts/build-dist.sh
#   docker build --platform linux/arm64 --build-arg TARGETARCH=arm64 -t midge .
#
# TARGETARCH is set by BuildKit; the classic builder needs it as a build argument.
FROM scratch

# A file must be copied before any other instruction: the classic builder commits an
# instruction that has no files (ARG, LABEL) on top of scratch as an image of the host's
# platform, and the next COPY then fails with "does not match the specified platform".
COPY dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt

ARG TARGETARCH
COPY dist/${TARGETARCH}/midge /midge

ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="midge" \
      org.opencontainers.image.description="A NATS-compatible message broker" \
      org.opencontainers.image.source="https://github.com/midge-dev/midge" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# The distroless "nonroot" ids; a numeric user needs no passwd file.
USER 65532:65532
# Clients, cluster routes, HTTP monitoring.
EXPOSE 4222 6222 8222
ENTRYPOINT ["/midge"]
