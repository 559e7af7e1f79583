#!/bin/sh
# Make a local stand-in for python:3.11-slim from Debian's own package mirror, for machines that can reach
# a Debian mirror but no container registry (this project's CI machine). Usage: docker/base.sh [TAG]
#
# The result is Debian bookworm (minbase) with its python3 (3.11) and python3-venv, imported into the
# local container storage as TAG (default localhost/interlock-base:bookworm) and used by the Dockerfile
# through --build-arg BASE=TAG (`make image` does this). Kept once built: an existing TAG is reused, so
# only the first build on a machine pays for it (about 2 minutes; docs/image.md).
# Needs root (debootstrap, container storage), debootstrap and buildah.
set -eu

tag=${1:-localhost/interlock-base:bookworm}
suite=bookworm

if buildah inspect --type image "$tag" >/dev/null 2>&1; then
    echo "base image $tag: present, kept (buildah rmi $tag to rebuild it)"
    exit 0
fi

# The mirror apt already uses here (deb822 or one-line sources), unless DEBIAN_MIRROR says otherwise.
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's|^URIs: *\([^ ]*/debian\)/*$|\1|p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
fi
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's|^deb  *\(\[[^]]*\]  *\)\{0,1\}\([^ ]*/debian\)/* .*|\2|p' /etc/apt/sources.list 2>/dev/null | head -n 1)
fi
mirror=${mirror:-http://deb.debian.org/debian}

for tool in debootstrap buildah; do
    command -v "$tool" >/dev/null 2>&1 || { echo "docker/base.sh: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
done

root=$(mktemp -d /var/tmp/interlock-base.XXXXXX)
trap 'rm -rf "$root" "$root.tar" "$root.log"' EXIT
trap 'exit 1' INT TERM

echo "base image $tag: debootstrap $suite from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$root" "$mirror" \
    >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# What a slim image leaves out: package caches and lists, documentation, manuals, locales.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/log/* "$root"/tmp/*

# Device nodes and mount points stay out of the layer: the runtime provides /dev, /proc and /sys.
tar -C "$root" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$root.tar" .
ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$root.tar" / >/dev/null
rm -f "$root.tar"
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label org.opencontainers.image.description="Debian $suite minbase + python3, from $mirror" \
    "$ctr"
buildah commit --quiet --rm "$ctr" "$tag" >/dev/null
echo "base image $tag: built"
