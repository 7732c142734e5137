#!/usr/bin/env bash
# Installs what the shipping scripts need on a fresh Debian machine: the Rust musl targets,
# Debian's cross linkers and musl-tools (scripts/build-dist.sh), qemu-user
# (scripts/qemu-test.sh), and the local registry daemon plus jq (scripts/image-test.sh).
# Safe to run again; it only installs what is missing. The Docker engine itself is not
# installed here: CI's machine provides it.
set -euo pipefail

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)

# Debian package -> a command it provides.
declare -A PROVIDES=(
  [musl-tools]=musl-gcc
  [gcc-aarch64-linux-gnu]=aarch64-linux-gnu-gcc
  [gcc-arm-linux-gnueabihf]=arm-linux-gnueabihf-gcc
  [qemu-user-static]=qemu-aarch64-static
  [docker-registry]=docker-registry
  [jq]=jq
  [file]=file
)

missing=()
for pkg in "${!PROVIDES[@]}"; do
  command -v "${PROVIDES[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "dist-deps: installing ${missing[*]} from Debian"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The host needs a CA bundle for the image; ca-certificates is in every Debian base image,
# but a minimal one may lack it.
if [[ ! -s /etc/ssl/certs/ca-certificates.crt ]]; then
  echo "dist-deps: installing ca-certificates from Debian"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ca-certificates
fi

installed=$(rustup target list --installed)
for t in "${TARGETS[@]}"; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
