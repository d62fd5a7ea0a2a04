#!/bin/sh
# Starts tritonserver on the hybridrec model repository, the way `hybridrec serve` does, for the `serve` image.
#
#   HYBRIDREC_ADMIN_KEY           required: the key of the model-control, shared-memory, trace and logging APIs
#                                 (header `hybridrec-admin-key`; hybridrec/admin.py). Set it from a Secret; without
#                                 it the server does not start, so those APIs are never open.
#   HYBRIDREC_MODEL_REPOSITORY    default /models (the repository baked into the image, or a mounted volume);
#                                 s3://bucket/path, gs://... and as://... are passed to Triton unchecked.
#   HYBRIDREC_CONFIG_SET          optional --model-config-name (cpu, gpu-trt, plan); empty = the default set.
#   HYBRIDREC_METRICS_QUANTILES   quantiles of the latency summaries (default 0.5:0.05,0.9:0.01,0.99:0.001).
#   TRITONSERVER                  the server binary (default: tritonserver on PATH).
#
# Extra arguments are passed on to tritonserver (e.g. --http-port=9000 or --log-verbose=1).
# `entrypoint.sh --check-repository` only checks the repository (the image build runs it) and exits.
set -eu

REPO="${HYBRIDREC_MODEL_REPOSITORY:-/models}"
SERVER="${TRITONSERVER:-tritonserver}"
QUANTILES="${HYBRIDREC_METRICS_QUANTILES:-0.5:0.05,0.9:0.01,0.99:0.001}"
APIS="model-repository,shared-memory,trace,logging"
HEADER="hybridrec-admin-key"

die() {
    echo "hybridrec entrypoint: $*" >&2
    exit 64
}

# A local repository must hold the exported models: a config.pbtxt per model and a model.onnx per non-ensemble
# model (`hybridrec export` writes them; the committed repository holds only the configs).
check_repository() {
    [ -d "$REPO" ] || die "model repository $REPO is not a directory"
    found=0
    for config in "$REPO"/*/config.pbtxt; do
        [ -f "$config" ] || continue
        found=$((found + 1))
        model_dir=$(dirname "$config")
        if ! grep -q 'platform: "ensemble"' "$config" && ! ls "$model_dir"/[0-9]*/model.onnx >/dev/null 2>&1; then
            die "$model_dir has no <version>/model.onnx: run \`hybridrec export\` (or \`make demo\`) before building"
        fi
    done
    [ "$found" -gt 0 ] || die "no model (*/config.pbtxt) in $REPO"
    [ -f "$REPO/artifacts.json" ] || die "$REPO/artifacts.json is missing: run \`hybridrec export\` first"
}

case "$REPO" in
    s3://* | gs://* | as://*) ;;
    *) check_repository ;;
esac
if [ "${1:-}" = "--check-repository" ]; then
    echo "hybridrec entrypoint: model repository $REPO is complete"
    exit 0
fi

KEY="${HYBRIDREC_ADMIN_KEY:-}"
[ -n "$KEY" ] || die "HYBRIDREC_ADMIN_KEY is not set: refusing to start with the model-control APIs open (set it from a Secret)"
case "$KEY" in
    *[[:space:],:=]*) die "HYBRIDREC_ADMIN_KEY must not contain spaces, ',', ':' or '='" ;;
esac
# Not passed on in the environment (the python backend stubs need not see it); the command line holds it, as with
# `hybridrec serve`.
unset HYBRIDREC_ADMIN_KEY

set -- \
    --model-repository="$REPO" \
    --model-control-mode=explicit \
    --load-model='*' \
    --strict-readiness=true \
    --exit-on-error=true \
    --allow-metrics=true \
    --metrics-config=summary_latencies=true \
    --metrics-config=summary_quantiles="$QUANTILES" \
    --http-restricted-api="$APIS:$HEADER=$KEY" \
    --grpc-restricted-protocol="$APIS:$HEADER=$KEY" \
    ${HYBRIDREC_CONFIG_SET:+--model-config-name="$HYBRIDREC_CONFIG_SET"} \
    "$@"
exec "$SERVER" "$@"
