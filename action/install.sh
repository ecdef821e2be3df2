#!/usr/bin/env bash
# The Action's install step: torch from the CPU index first (a GitHub-hosted runner has no GPU, and pip
# would otherwise pull several GB of CUDA wheels), then the tool from this action's own checkout.
set -euo pipefail
if [ -n "${UA_TORCH_INDEX:-}" ] && ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet torch --index-url "$UA_TORCH_INDEX"
fi
spec="${UA_INSTALL:-$GITHUB_ACTION_PATH}"
if [ -n "${UA_EXTRAS:-}" ]; then
  spec="${spec}[${UA_EXTRAS}]"
fi
python -m pip install --quiet "$spec"
unlearn-audit --version
