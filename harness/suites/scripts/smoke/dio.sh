mount_test
f="$TEST_DIR/dio"
step "O_DIRECT writes of a known pattern, aligned, in 64 KiB chunks"
xfs_io -f -d -c "pwrite -S 0x5a -b 65536 0 1m" -c "pwrite -S 0xa5 -b 4096 1m 256k" "$f"
[[ $(stat -c %s "$f") == $((1024 * 1024 + 256 * 1024)) ]] || die "size after direct writes"
step "O_DIRECT read back and compare"
expect=$( (head -c 1048576 /dev/zero | tr '\0' '\132'; head -c 262144 /dev/zero | tr '\0' '\245') | md5sum)
got=$(dd if="$f" iflag=direct bs=64k status=none | md5sum)
[[ $got == "$expect" ]] || die "direct read-back differs"
step "buffered read sees the direct writes"
echo 3 > /proc/sys/vm/drop_caches
[[ $(md5sum < "$f") == "$expect" ]] || die "buffered read differs"
step "direct overwrite in the middle, then remount"
xfs_io -d -c "pwrite -S 0x11 -b 4096 8192 4096" "$f"
umount_test
mount_test
# Direct reads must be aligned too (ext4 refuses a 16-byte O_DIRECT read).
# (Captured first: with pipefail, a reader that stops early fails the pipe.)
block() { xfs_io -d -r -c "pread -v $1 4096" "$f"; }
[[ $(block 8192) == *"11 11 11 11"* ]] || die "overwrite lost across remount"
[[ $(block 4096) == *"5a 5a 5a 5a"* && $(block 4096) != *"11 11"* ]] || die "neighbour before changed"
[[ $(block 12288) == *"5a 5a 5a 5a"* && $(block 12288) != *"11 11"* ]] || die "neighbour after changed"
umount_test
