#!/usr/bin/env bash
# Install the `docker compose` v2 plugin where Debian bookworm only ships docker-compose v1: fetch the
# docker-compose package of Debian trixie through the host's own apt sources (suite swapped to trixie,
# in a private apt state; the host's configuration is not touched) and put its binary in the CLI plugins.
set -euo pipefail
PLUGIN_DIR="${DOCKER_CLI_PLUGINS:-/usr/libexec/docker/cli-plugins}"
if docker compose version >/dev/null 2>&1; then
    docker compose version; exit 0
fi
src=/etc/apt/sources.list.d/debian.sources
[[ -s $src ]] || { echo "install-compose-v2: no $src to derive a trixie source from" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/parts" "$work/lists/partial" "$work/archives/partial"
# the first stanza is the main archive; only its suite changes
awk 'BEGIN{RS=""; ORS="\n\n"} NR==1' "$src" | sed -e 's/^Suites:.*/Suites: trixie/' > "$work/parts/trixie.sources"
apt_opts=(-o APT::Sandbox::User=root -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/parts"
          -o Dir::State::Lists="$work/lists" -o Dir::Cache::Archives="$work/archives"
          -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" -o APT::Get::List-Cleanup=0)
apt-get "${apt_opts[@]}" -qq update
(cd "$work" && apt-get "${apt_opts[@]}" -qq download docker-compose)
dpkg-deb -x "$work"/docker-compose_*.deb "$work/root"
bin=$(find "$work/root" -type f -name docker-compose -perm -u+x | head -1)
[[ -n $bin ]] || { echo "install-compose-v2: no docker-compose binary in the package" >&2; exit 1; }
sudo=(); [[ $(id -u) == 0 ]] || sudo=(sudo)
"${sudo[@]}" install -D -m 0755 "$bin" "$PLUGIN_DIR/docker-compose"
docker compose version
