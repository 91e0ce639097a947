#!/usr/bin/env bash
# Build Cuttlefish's images with no registry: a Debian bookworm base made by mmdebstrap from the host's
# own apt sources, then RabbitMQ, Redis, a Python base and the neuron runtime on top of it.
#
#   bash compose/build-images.sh            # build what is missing
#   bash compose/build-images.sh --force    # rebuild everything
#
# It prints the environment variables that point compose files and tests at these images; the same lines
# are written to compose/local-images.env (git-ignored). Elsewhere the defaults are official images.
set -euo pipefail
cd "$(dirname "$0")/.."

FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

BASE_TAG="${CUTTLEFISH_BASE_IMAGE_TAG:-cuttlefish/bookworm:base}"
PYTHON_TAG="cuttlefish/python:3.11-bookworm"
RABBITMQ_TAG="cuttlefish/rabbitmq:3.10-bookworm"
REDIS_TAG="cuttlefish/redis:7.0-bookworm"
NEURON_TAG="cuttlefish/neuron:dev"

have_image() { [[ $FORCE == 0 ]] && docker image inspect "$1" >/dev/null 2>&1; }
log() { printf 'build-images: %s\n' "$*" >&2; }

command -v docker >/dev/null || { log "docker is not installed"; exit 1; }
docker info >/dev/null 2>&1 || { log "the Docker engine is not reachable"; exit 1; }

if ! have_image "$BASE_TAG"; then
    if ! command -v mmdebstrap >/dev/null; then
        log "installing mmdebstrap"
        sudo=(); [[ $(id -u) == 0 ]] || sudo=(sudo)
        "${sudo[@]}" apt-get install -y -qq mmdebstrap >/dev/null 2>&1 \
            || { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq mmdebstrap >/dev/null; }
    fi
    # The host's apt sources, whatever mirror they name: nothing of it is written into the repository.
    sources=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -s $f ]] && sources+=("$f")
    done
    [[ ${#sources[@]} -gt 0 ]] || { log "no apt sources found under /etc/apt"; exit 1; }
    log "bootstrapping $BASE_TAG from ${sources[*]}"
    mmdebstrap --quiet --variant=minbase --include=ca-certificates \
        --aptopt='Acquire::Retries "3"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        bookworm - "${sources[@]}" | docker import - "$BASE_TAG" >/dev/null
fi

build() {  # build TAG DOCKERFILE [BUILD-ARGS...]
    local tag=$1 file=$2; shift 2
    if have_image "$tag"; then log "$tag is present"; return; fi
    log "building $tag"
    # the legacy builder's deprecation notice is noise here; real errors still reach stderr
    docker build --quiet --tag "$tag" --file "$file" "$@" . 2> >(grep -v -e DEPRECATED -e 'legacy builder' \
        -e 'Install the buildx' -e 'BuildKit' -e 'docs.docker.com/go/buildx' >&2) >/dev/null
}

build "$PYTHON_TAG" compose/images/python.Dockerfile --build-arg BASE_IMAGE="$BASE_TAG"
build "$RABBITMQ_TAG" compose/images/rabbitmq.Dockerfile --build-arg BASE_IMAGE="$BASE_TAG"
build "$REDIS_TAG" compose/images/redis.Dockerfile --build-arg BASE_IMAGE="$BASE_TAG"
# The neuron image is rebuilt whenever asked for, since the code changes; its layers are cached.
FORCE=1 build "$NEURON_TAG" compose/Dockerfile --build-arg PYTHON_IMAGE="$PYTHON_TAG"

cat > compose/local-images.env <<ENV
CUTTLEFISH_PYTHON_IMAGE=$PYTHON_TAG
CUTTLEFISH_RABBITMQ_IMAGE=$RABBITMQ_TAG
CUTTLEFISH_REDIS_IMAGE=$REDIS_TAG
CUTTLEFISH_NEURON_IMAGE=$NEURON_TAG
ENV
sed 's/^/export /' compose/local-images.env
