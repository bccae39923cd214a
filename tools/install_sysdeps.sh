#!/usr/bin/env bash
# Installs espeak-ng and sox (speech synthesis and audio tools) when missing.
# As root we install them with apt; otherwise we print the exact command to run.
set -euo pipefail
missing=()
for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "error: ${missing[*]} not found. Install with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
