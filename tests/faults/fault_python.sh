#!/bin/sh
# FAULT-INJECTION stand-in for the vLLM venv's python (tests only; named as such in every test using it).
#
# The real runner runs with the real vLLM venv's interpreter ($SGTUI_FAULT_PY); only the engine server it
# starts (`<python> -m vllm.entrypoints.openai.api_server ARGS`) becomes tests/runner/vllm_fault_server.py,
# which speaks vLLM's HTTP protocol and injects the faults in $SGTUI_FAULT_PLAN (JSON). So the orchestrator,
# the runner, its process groups and the session are all real; the engine starts in a second instead of
# minutes, and can be made slow at a chosen endpoint (kill it during offload/reload on demand).
if [ "$1" = "-m" ] && [ "$2" = "vllm.entrypoints.openai.api_server" ]; then
    shift 2
    exec "${SGTUI_FAULT_PY:?}" "$(dirname "$0")/../runner/vllm_fault_server.py" "$@" \
        --sgtui-plan "${SGTUI_FAULT_PLAN:-{\}}"
fi
exec "${SGTUI_FAULT_PY:?}" "$@"
