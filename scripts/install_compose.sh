#!/usr/bin/env bash
# Docker Compose v2 (the `docker compose` CLI plugin), installed when missing. Debian bookworm has no
# Compose v2 package; trixie's docker-compose .deb is a static Go binary, so it is downloaded with a
# private apt state (the system's sources and lists stay as they are) and only its plugin is kept.
# Needs the docker CLI (Debian: docker.io) and root for apt-get; idempotent.
set -euo pipefail

if docker compose version >/dev/null 2>&1; then
    docker compose version
    exit 0
fi
command -v docker >/dev/null || { echo "install_compose: no docker CLI (apt-get install docker.io)" >&2; exit 1; }
apt="$(mktemp -d /tmp/scalesweep-compose.XXXXXX)"
trap 'rm -rf "$apt"' EXIT
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d"
printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    >"$apt/sources.list.d/trixie.sources"
opts=(-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "Dir::Etc::SourceList=/dev/null"
      -o "Dir::Etc::SourceParts=$apt/sources.list.d" -o "APT::Sandbox::User=root")
apt-get "${opts[@]}" update -qq
(cd "$apt" && apt-get "${opts[@]}" download docker-compose >/dev/null)
dpkg -x "$apt"/docker-compose_*.deb "$apt/x"
mkdir -p "$HOME/.docker/cli-plugins"
install -m 755 "$apt/x/usr/libexec/docker/cli-plugins/docker-compose" "$HOME/.docker/cli-plugins/docker-compose"
docker compose version
