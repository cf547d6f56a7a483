#!/usr/bin/env bash
# `pip install` of this project into an environment that already holds torch keeps that torch.
# Usage: .ci/keeps_torch.sh PYTHON   (a Python other than the project's venv, e.g. 3.12)
# The environment gets a stand-in torch 2.9.1+cu128 (metadata only: nothing is imported) and
# pip resolves the project with --dry-run; the check fails if pip would install any torch.
set -euo pipefail
cd "$(dirname "$0")/.."
python="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
site="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
meta="$site/torch-2.9.1+cu128.dist-info"
mkdir -p "$meta"
printf 'Metadata-Version: 2.1\nName: torch\nVersion: 2.9.1+cu128\n' > "$meta/METADATA"
echo pip > "$meta/INSTALLER"
: > "$meta/RECORD"
"$work/venv/bin/pip" install --quiet --dry-run --report "$work/report.json" -e . >/dev/null
"$work/venv/bin/python" - "$work/report.json" <<'PY'
import json, sys
names = {item["metadata"]["name"].lower(): item["metadata"]["version"]
         for item in json.load(open(sys.argv[1]))["install"]}
if "torch" in names:
    sys.exit(f"keeps_torch: pip would replace the environment's torch 2.9.1+cu128 with {names['torch']}")
print(f"keeps_torch: {sys.version.split()[0]}, torch 2.9.1+cu128 kept; pip would add {len(names)} packages")
PY
