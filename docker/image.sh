#!/bin/sh
# Build the image with buildah, on a machine with no Docker engine: docker/image.sh [TAG]  (`make image`)
#
# TAG defaults to $IMAGE, else localhost/interlock:latest. The base is $IMAGE_BASE, by default
# localhost/interlock-base:bookworm, which docker/base.sh makes from Debian's mirror on the first build
# (no registry needed); IMAGE_BASE=python:3.11-slim builds on the official image instead (pulled).
#
# Cached by content, not by buildah's layer cache: buildah 1.28 (Debian 12) reuses a cached
# `COPY --from=<stage>` or `RUN --mount=from=<stage>` step when that stage was rebuilt, so `--layers` made
# stale images here (a changed interlock/ kept the old code). Instead the image is labelled with a digest
# of everything it is built from, and a TAG whose label matches is kept as it is (docs/image.md).
set -eu
cd "$(dirname "$0")/.."

tag=${1:-${IMAGE:-localhost/interlock:latest}}
base=${IMAGE_BASE:-localhost/interlock-base:bookworm}

command -v buildah >/dev/null 2>&1 || { echo "docker/image.sh: buildah is not installed (apt-get install buildah)" >&2; exit 1; }
case $base in
    localhost/*) docker/base.sh "$base" ;;
    *) buildah pull --quiet "$base" >/dev/null ;;
esac

# The build context as .dockerignore lets it through, the Dockerfile, and the base image's id.
inputs=$(
    {
        buildah inspect --type image --format '{{.FromImageID}}' "$base"
        find Dockerfile .dockerignore pyproject.toml uv.lock README.md LICENSE tools/uv.requirements.lock docker interlock \
            -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -d' ' -f1
)
old=$(buildah inspect --type image --format '{{.FromImageID}} {{index .OCIv1.Config.Labels "interlock.inputs"}}' "$tag" 2>/dev/null || true)
if [ "${old#* }" = "$inputs" ]; then
    echo "image $tag: up to date (inputs $inputs)"
    exit 0
fi

# This machine's CA bundle, for a build whose HTTPS goes through a proxy with its own CA: a build secret,
# never written to a layer (the Dockerfile's RUN steps export it only for uv and pip).
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
set --
if [ -f "$ca" ]; then
    set -- --secret "id=ca-certificates,src=$ca"
fi

# --isolation chroot: no OCI runtime or cgroup setup needed (crun refuses this machine's hybrid cgroups);
# --format docker: OCI images have no HEALTHCHECK; --force-rm: a failed build leaves no working container.
buildah bud --isolation chroot --format docker --no-cache --force-rm --build-arg "BASE=$base" "$@" \
    --label "interlock.inputs=$inputs" --tag "$tag" .

# The image this one replaces would otherwise stay behind untagged (~550 MB each); one still tagged
# elsewhere or used by a container is kept (rmi refuses it).
old_id=${old%% *}
if [ -n "$old_id" ] && [ "$old_id" != "$(buildah inspect --type image --format '{{.FromImageID}}' "$tag")" ]; then
    buildah rmi "$old_id" >/dev/null 2>&1 || true
fi
echo "image $tag: built on $base (inputs $inputs)"
