#!/usr/bin/env bash
# A discovery script that reports GPUs which are not there (SEGREC_FAKE_GPUS, default "0,1"):
# shows that tasks receive GPU addresses and fall back to the CPU cleanly where CUDA is absent.
set -euo pipefail
addresses=$(echo "${SEGREC_FAKE_GPUS:-0,1}" | sed 's/,/","/g')
echo "{\"name\": \"gpu\", \"addresses\": [\"${addresses}\"]}"
