#!/usr/bin/env bash
# Installs what the shipping scripts need on a fresh Debian machine: the Rust targets and
# Debian's cross linkers with their static glibc (scripts/build-dist.sh), qemu-user
# (scripts/qemu-test.sh), and the local registry daemon plus jq (scripts/image-test.sh).
# Safe to run again; it only installs what is missing. The Docker engine itself is not
# installed here: CI's machine provides it.
set -euo pipefail

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

TARGETS=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

# Debian package -> a command or file it provides. The cross libc6-dev packages (static
# glibc) are only recommended by the gcc packages, so they are named here.
declare -A PROVIDES=(
  [gcc-aarch64-linux-gnu]=aarch64-linux-gnu-gcc
  [libc6-dev-arm64-cross]=/usr/aarch64-linux-gnu/lib/libc.a
  [gcc-arm-linux-gnueabihf]=arm-linux-gnueabihf-gcc
  [libc6-dev-armhf-cross]=/usr/arm-linux-gnueabihf/lib/libc.a
  [libc6-dev]=/usr/lib/x86_64-linux-gnu/libc.a
  [qemu-user-static]=qemu-aarch64-static
  [docker-registry]=docker-registry
  [jq]=jq
  [curl]=curl
  [file]=file
)

missing=()
for pkg in "${!PROVIDES[@]}"; do
  what=${PROVIDES[$pkg]}
  if [[ $what == /* ]]; then [[ -e $what ]] || missing+=("$pkg")
  else command -v "$what" >/dev/null 2>&1 || missing+=("$pkg"); fi
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
