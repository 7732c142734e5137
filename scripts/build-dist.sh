#!/usr/bin/env bash
# Builds the shipped static binaries for every image platform and lays them out the way the
# Dockerfile reads them: dist/<arch>/<bin>, arch being Docker's TARGETARCH (amd64, arm64,
# arm), plus dist/ca-certificates.crt from the host for the image.
#
#   scripts/build-dist.sh [--targets amd64,arm64,arm] [--bins midge,midge-bench] [--profile dist]
#
# Defaults: all three architectures; midge, midge-bench and midge-operator (when the
# workspace has it); profile `dist`. Lists may be comma or space separated. Installs
# nothing: a missing target, linker or tool stops it with what to run (scripts/dist-deps.sh).
# Each binary is checked to be statically linked for the right machine before it is copied.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { echo "build-dist.sh: $*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

# Docker arch -> Rust target, linker, what `file` calls the machine. All three link glibc
# statically (see .cargo/config.toml and the commit that chose glibc over musl).
declare -A TRIPLE=([amd64]=x86_64-unknown-linux-gnu [arm64]=aarch64-unknown-linux-gnu
                   [arm]=armv7-unknown-linux-gnueabihf)
declare -A LINKER=([amd64]=cc [arm64]=aarch64-linux-gnu-gcc [arm]=arm-linux-gnueabihf-gcc)
declare -A MACHINE=([amd64]="x86-64" [arm64]="ARM aarch64" [arm]="ARM, EABI5")

targets="amd64 arm64 arm"
bins=""
profile=dist
while (($#)); do
  case $1 in
    --targets) [[ $# -ge 2 ]] || die "--targets needs a value"; targets=${2//,/ }; shift 2 ;;
    --bins) [[ $# -ge 2 ]] || die "--bins needs a value"; bins=${2//,/ }; shift 2 ;;
    --profile) [[ $# -ge 2 ]] || die "--profile needs a value"; profile=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

command -v cargo >/dev/null || die "cargo is not on PATH"
command -v jq >/dev/null || die "jq is missing; run scripts/dist-deps.sh"
command -v file >/dev/null || die "file is missing; run scripts/dist-deps.sh"

# Binaries and the packages that own them, from the workspace itself.
declare -A PKG_OF
while IFS=$'\t' read -r bin pkg; do PKG_OF[$bin]=$pkg; done < <(
  cargo metadata --no-deps --format-version 1 --offline 2>/dev/null |
    jq -r '.packages[] | .name as $p | .targets[] | select(.kind | index("bin")) | [.name, $p] | @tsv')
if [[ -z $bins ]]; then
  for b in midge midge-bench midge-operator; do [[ -n ${PKG_OF[$b]:-} ]] && bins+=" $b"; done
fi

# Check everything first so a missing piece is reported before any long build starts.
problems=()
installed=""
if command -v rustup >/dev/null; then installed=$(rustup target list --installed); fi
sysroot=$(rustc --print sysroot)
for arch in $targets; do
  triple=${TRIPLE[$arch]:-}
  [[ -n $triple ]] || die "unknown arch '$arch' (one of: ${!TRIPLE[*]})"
  if ! grep -qx "$triple" <<<"$installed" && [[ ! -d $sysroot/lib/rustlib/$triple ]]; then
    problems+=("Rust target $triple is not installed (rustup target add $triple)")
  fi
  if ! command -v "${LINKER[$arch]}" >/dev/null; then
    problems+=("${LINKER[$arch]} (for $arch) is not on PATH")
  elif [[ $("${LINKER[$arch]}" -print-file-name=libc.a) != /* ]]; then
    problems+=("${LINKER[$arch]} finds no static glibc (libc.a) for $arch")
  fi
done
for b in $bins; do
  [[ -n ${PKG_OF[$b]:-} ]] || problems+=("no binary '$b' in the workspace (have: ${!PKG_OF[*]})")
done
# They would replace the per-target flags below, and with them crt-static.
[[ -z ${RUSTFLAGS:-}${CARGO_ENCODED_RUSTFLAGS:-} ]] ||
  problems+=("RUSTFLAGS/CARGO_ENCODED_RUSTFLAGS are set and would drop -C target-feature=+crt-static")
[[ -s /etc/ssl/certs/ca-certificates.crt ]] ||
  problems+=("/etc/ssl/certs/ca-certificates.crt is missing (Debian package ca-certificates)")
if ((${#problems[@]})); then
  printf 'build-dist.sh: cannot build:\n' >&2
  printf '  - %s\n' "${problems[@]}" >&2
  printf 'scripts/dist-deps.sh installs the targets, linkers and tools\n' >&2
  exit 1
fi

pkgs=()
for b in $bins; do pkgs+=(-p "${PKG_OF[$b]}"); done
bin_args=()
for b in $bins; do bin_args+=(--bin "$b"); done

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p dist
cp /etc/ssl/certs/ca-certificates.crt dist/ca-certificates.crt

for arch in $targets; do
  triple=${TRIPLE[$arch]}
  echo "==> $arch ($triple): $bins [profile $profile]"
  start=$SECONDS
  flags_var=CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$triple")_RUSTFLAGS
  env "$flags_var=${!flags_var:-} -C target-feature=+crt-static" \
    cargo build --locked --profile "$profile" --target "$triple" "${pkgs[@]}" "${bin_args[@]}"
  mkdir -p "dist/$arch"
  for b in $bins; do
    out=$target_dir/$triple/$profile/$b
    desc=$(file -b "$out")
    [[ $desc == *"${MACHINE[$arch]}"* ]] || die "$out is not a ${MACHINE[$arch]} binary: $desc"
    # static-pie is static too (no interpreter, no shared libraries), and keeps ASLR.
    [[ $desc == *"statically linked"* || $desc == *"static-pie linked"* ]] ||
      die "$out is not statically linked: $desc"
    cp "$out" "dist/$arch/$b"
    printf '    dist/%s/%s  %s KiB  %s\n' "$arch" "$b" "$(($(stat -c %s "$out") / 1024))" "$desc"
  done
  echo "    $arch built in $((SECONDS - start)) s"
done
