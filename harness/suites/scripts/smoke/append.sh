mount_test
f="$TEST_DIR/log"
step "O_APPEND from one writer"
for i in $(seq 1 50); do printf 'rec %04d\n' "$i" >> "$f"; done
[[ $(stat -c %s "$f") == $((50 * 9)) ]] || die "size after single-writer appends"
[[ $(tail -n1 "$f") == "rec 0050" ]] || die "last record"
step "O_APPEND from 4 concurrent writers"
g="$TEST_DIR/log4"
for w in 1 2 3 4; do
    # One process per writer, 100 appends each.
    args=()
    for i in $(seq 1 100); do args+=(-c "pwrite -q -S 0x4$w 0 512"); done
    xfs_io -f -a "${args[@]}" "$g" &
done
wait
[[ $(stat -c %s "$g") == $((4 * 100 * 512)) ]] || die "size after concurrent appends: $(stat -c %s "$g")"
# Every 512-byte record must be one writer's byte repeated (no torn or lost record).
for w in 1 2 3 4; do
    n=$(od -An -v -tx1 -w512 "$g" | awk -v b="4$w" '{ ok = 1; for (i = 1; i <= NF; i++) if ($i != b) ok = 0; if (ok) c++ } END { print c + 0 }')
    [[ $n == 100 ]] || die "writer $w has $n intact records, expected 100"
done
step "O_DIRECT|O_APPEND"
xfs_io -f -d -a -c "pwrite -q -S 0x77 -b 4096 0 4096" -c "pwrite -q -S 0x78 -b 4096 0 4096" "$TEST_DIR/dlog"
[[ $(stat -c %s "$TEST_DIR/dlog") == 8192 ]] || die "direct append size"
step "remount and verify sizes"
umount_test
mount_test
[[ $(stat -c %s "$f") == $((50 * 9)) && $(stat -c %s "$g") == 204800 ]] || die "sizes changed across remount"
umount_test
