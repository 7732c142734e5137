#!/usr/bin/env bash
# The end-to-end scenarios (crate midge-e2e) with the docker driver: builds the image for
# linux/amd64, linux/arm64 and linux/arm/v7 from dist/ (scripts/build-dist.sh) with the
# repository's Dockerfile, a static `uname -m` helper for each (the image has no shell),
# registers qemu with binfmt_misc if it is not (the ARM containers run under it), runs
# `cargo test -p midge-e2e --test docker` and prints the report. Removes the images and its
# temporary files, also on failure. About 3 minutes once dist/ is built; a minute of it
# waits for ping timeouts to notice a lost edge node, half a minute rolls the servers of
# the token rotation.
#
# Environment: DIST_DIR        where the binaries are: <DIST_DIR>/<arch>/midge [dist/]
#              MIDGE_E2E_ONLY  `rotation`: only the Secret rotation scenarios (7, 8)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { echo "run-docker.sh: $*" >&2; exit 1; }
step() { printf '\n==> %s (%ss)\n' "$*" "$SECONDS"; }

DIST_DIR=$(cd "${DIST_DIR:-$ROOT/dist}" 2>/dev/null && pwd) || die "${DIST_DIR:-dist} does not exist; run scripts/build-dist.sh"
declare -A PLATFORM=([amd64]=linux/amd64 [arm64]=linux/arm64 [arm]=linux/arm/v7)
declare -A CC=([amd64]=cc [arm64]=aarch64-linux-gnu-gcc [arm]=arm-linux-gnueabihf-gcc)
declare -A QEMU=([arm64]=aarch64 [arm]=arm)
ARCHES=(amd64 arm64 arm)

for tool in docker cargo "${CC[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is missing; run scripts/dist-deps.sh"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"
[[ -s $DIST_DIR/ca-certificates.crt ]] || die "$DIST_DIR/ca-certificates.crt is missing; run scripts/build-dist.sh"
for arch in "${ARCHES[@]}"; do
  [[ -x $DIST_DIR/$arch/midge ]] || die "$DIST_DIR/$arch/midge is missing; run scripts/build-dist.sh"
done

SUFFIX=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
WORK=$(mktemp -d /tmp/midge-e2e-docker.XXXXXX)
IMAGES=()
cleanup() {
  local rc=$?
  ((${#IMAGES[@]})) && docker rmi "${IMAGES[@]}" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  ((rc == 0)) || echo "run-docker.sh: FAILED after ${SECONDS} s (cleaned up)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "qemu through binfmt_misc"
# Debian's qemu-user-static handlers carry the F flag: the kernel opens the interpreter
# when the handler is registered, so it works inside containers that do not have it.
binfmt=/proc/sys/fs/binfmt_misc
if [[ ! -e $binfmt/register ]]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null ||
    die "binfmt_misc is not mounted and cannot be mounted here (needs root)"
fi
for arch in arm64 arm; do
  name=qemu-${QEMU[$arch]}
  if [[ ! -e $binfmt/$name ]]; then
    conf=/usr/lib/binfmt.d/$name.conf
    [[ -s $conf ]] || die "$conf is missing; install qemu-user-static (scripts/dist-deps.sh)"
    cat "$conf" >"$binfmt/register" 2>/dev/null || die "cannot register $name (needs root)"
  fi
  grep -q '^flags: .*F' "$binfmt/$name" || die "$name is registered without the F flag"
  echo "$name: $(head -1 "$binfmt/$name"), $(grep '^flags' "$binfmt/$name")"
done

step "uname -m helpers"
UNAME=""
for arch in "${ARCHES[@]}"; do
  out=$WORK/uname-$arch
  "${CC[$arch]}" -static -Os -s -o "$out" e2e/uname/uname.c
  chmod 0755 "$out"
  UNAME+="$arch=$out "
done
chmod 0755 "$WORK"
echo "$UNAME"

IMAGE_LIST=""
for arch in "${ARCHES[@]}"; do
  platform=${PLATFORM[$arch]}
  image=midge-e2e-$SUFFIX:$arch
  step "image $platform -> $image"
  ctx=$WORK/context-$arch
  mkdir -p "$ctx/dist"
  cp Dockerfile "$ctx/"
  cp "$DIST_DIR/ca-certificates.crt" "$ctx/dist/"
  cp -r "$DIST_DIR/$arch" "$ctx/dist/$arch"
  # As image-test.sh: the classic builder, --no-cache (its cache ignores the platform),
  # TARGETARCH passed because only BuildKit sets it.
  if ! DOCKER_BUILDKIT=0 docker build --no-cache --platform "$platform" \
    --build-arg TARGETARCH="$arch" -t "$image" "$ctx" >"$WORK/build-$arch.log" 2>&1; then
    cat "$WORK/build-$arch.log" >&2
    die "docker build for $platform failed"
  fi
  IMAGES+=("$image")
  got=$(docker image inspect "$image" --format '{{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}}')
  [[ $got == "$platform" ]] || die "$image was built for $got, not $platform"
  IMAGE_LIST+="$arch=$image "
done

step "midge-operator (renders the sample)"
cargo build --quiet --locked -p midge-operator
target=${CARGO_TARGET_DIR:-$ROOT/target}
export MIDGE_OPERATOR=$target/debug/midge-operator

step "scenarios (cargo test -p midge-e2e --test docker)"
export MIDGE_E2E_IMAGES=$IMAGE_LIST MIDGE_E2E_UNAME=$UNAME MIDGE_E2E_REPORT=$WORK/report.txt
# The report says what failed; a backtrace of the test's error adds nothing.
export RUST_LIB_BACKTRACE=0
rc=0
cargo test --locked -p midge-e2e --test docker -- --nocapture || rc=$?

echo
if [[ -s $WORK/report.txt ]]; then
  cat "$WORK/report.txt"
else
  echo "run-docker.sh: the suite wrote no report" >&2
fi
((rc == 0)) || die "the scenarios failed"
echo "run-docker.sh: passed in ${SECONDS} s"
