step "mount $TEST_DEV through $SMOKE_FSTYPE"
mount_test
grep " $TEST_DIR " /proc/mounts || die "not in /proc/mounts"
fstype=$(awk -v m="$TEST_DIR" '$2 == m {print $3}' /proc/mounts)
echo "mounted as $fstype"
case "$SMOKE_FSTYPE" in
fuse.*) [[ $fstype == fuse* ]] || die "expected a FUSE mount, got $fstype" ;;
esac
df -h "$TEST_DIR"
step "umount"
umount_test
! grep -q " $TEST_DIR " /proc/mounts || die "still mounted after umount"
