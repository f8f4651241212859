#!/usr/bin/env bash
# Export a midtrain checkpoint to Hugging Face format with litgpt's own tools:
#   util_scripts/export_hf.sh out/pythia-160m/code-20pct-step6k/final exports/code-20pct
# Writes <out>/litgpt (a plain litgpt checkpoint: weights only, config and tokenizer files) and <out>/hf
# (model.pth in Hugging Face's parameter names; load it with transformers' from_pretrained(state_dict=...)).
set -euo pipefail
checkpoint="${1:?usage: export_hf.sh CHECKPOINT_DIR OUT_DIR}"
out="${2:?usage: export_hf.sh CHECKPOINT_DIR OUT_DIR}"
litgpt="${LITGPT:-litgpt}"
"$litgpt" convert_pretrained_checkpoint "$checkpoint" "$out/litgpt"
"$litgpt" convert_from_litgpt "$out/litgpt" "$out/hf"
cp "$out/litgpt"/*.json "$out/litgpt"/model_config.yaml "$out/hf"/ 2>/dev/null || true
echo "exported: $out/litgpt (litgpt) and $out/hf (Hugging Face names)"
