# Shared by every smoke test (prepended by the harness). The agent sets
# TEST_DEV (formatted ext4), TEST_DIR, HARNESS_OUT.
set -euo pipefail
# The filesystem type to mount with: iomapfs by default; `--env SMOKE_FSTYPE=ext4`
# runs the same checks on the kernel's ext4 as a control.
SMOKE_FSTYPE=${SMOKE_FSTYPE:-fuse.iomapfs}
step() { echo "== $*"; }
mount_test() { mount -t "$SMOKE_FSTYPE" "$TEST_DEV" "$TEST_DIR"; }
umount_test() { umount "$TEST_DIR"; }
# Fail with a message.
die() { echo "FAIL: $*" >&2; exit 1; }
