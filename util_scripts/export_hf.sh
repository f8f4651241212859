#!/usr/bin/env bash
# A checkpoint as a Hugging Face model folder (config.json, safetensors, tokenizer, model card): 'midtrain export'.
#   util_scripts/export_hf.sh out/pythia-160m/code-20pct-step6k/final exports/code-20pct [more midtrain export flags]
exec "${MIDTRAIN:-midtrain}" export "${1:?usage: export_hf.sh CHECKPOINT_DIR OUT_DIR}" --out_dir "${2:?usage: export_hf.sh CHECKPOINT_DIR OUT_DIR}" "${@:3}"
