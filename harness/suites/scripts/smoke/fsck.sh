step "the test filesystem is consistent (e2fsck -fn)"
! grep -q " $TEST_DIR " /proc/mounts || umount_test
e2fsck -fn "$TEST_DEV"
