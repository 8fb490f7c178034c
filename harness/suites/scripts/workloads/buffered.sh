workloads append "$TEST_DIR" "${SEED_ARGS[@]}" --records 500 --truncate --small-files 1000 \
    --remount-cmd "$REMOUNT" --json "$HARNESS_OUT/append.json"
finish
