workloads dio "$TEST_DIR" "${SEED_ARGS[@]}" --duration 60 --max-bytes 64m --ops 1000 \
    --remount-cmd "$REMOUNT" --manifest "$HARNESS_OUT/dio-manifest.json" --json "$HARNESS_OUT/dio.json"
finish
