#!/usr/bin/env bash
# Fetch ncnn's prebuilt Android package (CPU build, all ABIs) into
# android-demo/third_party/ncnn-<release>-android/, checked against a pinned sha256.
#
# The release must match the ncnn the export tools use (NCNN_VERSION in
# src/mfn_deploy/native/build.py: 1.0.20261020 -> release tag 20261020), so the app runs
# the models with the same ncnn that converted and checked them.
set -euo pipefail

RELEASE=20261020
NAME="ncnn-${RELEASE}-android"
URL="https://github.com/Tencent/ncnn/releases/download/${RELEASE}/${NAME}.zip"
# TO FILL: the sha256 of ${NAME}.zip. It was not known when this script was
# written (no network on the machine that wrote it). Take it from the first
# download after checking the release page, then paste it here and commit.
SHA256="TO_FILL"

here="$(cd "$(dirname "$0")/.." && pwd)"
dest="${here}/third_party"
if [[ -f "${dest}/${NAME}/arm64-v8a/lib/cmake/ncnn/ncnnConfig.cmake" ]]; then
  echo "fetch_ncnn_android: ${dest}/${NAME} already present"
  exit 0
fi
mkdir -p "${dest}"
tmp="$(mktemp -d "${dest}/.fetch.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT

echo "fetch_ncnn_android: downloading ${URL}"
curl -fL --retry 3 -o "${tmp}/${NAME}.zip" "${URL}"
actual="$(sha256sum "${tmp}/${NAME}.zip" | cut -d' ' -f1)"
if [[ "${SHA256}" == "TO_FILL" ]]; then
  if [[ "${ALLOW_UNPINNED:-0}" != "1" ]]; then
    echo "fetch_ncnn_android: no sha256 pinned yet; the download's is ${actual}." >&2
    echo "  Check it, set SHA256=\"${actual}\" in $0, and rerun" >&2
    echo "  (or rerun once with ALLOW_UNPINNED=1)." >&2
    exit 1
  fi
  echo "fetch_ncnn_android: WARNING: unpinned download, sha256 ${actual}" >&2
elif [[ "${actual}" != "${SHA256}" ]]; then
  echo "fetch_ncnn_android: sha256 mismatch: expected ${SHA256}, got ${actual}" >&2
  exit 1
fi

(cd "${tmp}" && unzip -q "${NAME}.zip")
for abi in arm64-v8a armeabi-v7a; do
  if [[ ! -f "${tmp}/${NAME}/${abi}/lib/cmake/ncnn/ncnnConfig.cmake" ]]; then
    echo "fetch_ncnn_android: ${NAME}.zip has no ${abi}/lib/cmake/ncnn" >&2
    exit 1
  fi
done
rm -rf "${dest:?}/${NAME}"
mv "${tmp}/${NAME}" "${dest}/${NAME}"
echo "fetch_ncnn_android: ${dest}/${NAME}"
