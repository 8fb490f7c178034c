workloads append "$TEST_DIR" "${SEED_ARGS[@]}" --direct --fsync-every 16 --ack-log "$HARNESS_OUT/append-direct.acks" \
    --remount-cmd "$REMOUNT" --json "$HARNESS_OUT/append-direct.json"
finish
