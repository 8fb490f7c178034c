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
xfs_io -d -r -c "pread -v 8192 16" "$f" | grep -q "11 11 11 11" || die "overwrite lost across remount"
xfs_io -d -r -c "pread -v 4096 16" "$f" | grep -q "5a 5a 5a 5a" || die "neighbour changed"
umount_test
