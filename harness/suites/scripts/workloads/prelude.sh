# Shared by the dio and append suites (prepended by the harness). The agent sets
# TEST_DEV (formatted ext4), TEST_DIR, HARNESS_OUT; `workloads` is installed with iomapfs.
# `--env WORKLOADS_FSTYPE=ext4` runs the same workload on the kernel's ext4 as a control;
# `--env WORKLOADS_SEED=0x...` replays a seed (each run prints the one it used).
# Over virtio-fs (`vm-test --virtiofs`: WORKLOADS_FSTYPE=virtiofs, TEST_DEV the tag) the
# server runs on the host, nothing is installed here (`workloads` is copied from the share),
# and the host checks the image after the run (`host/e2fsck`): the guest has no device.
set -euo pipefail
WORKLOADS_FSTYPE=${WORKLOADS_FSTYPE:-fuse.iomapfs}
# A copy, not the share's file: the share may be mounted noexec (virtio-fs, see the agent).
if ! command -v workloads >/dev/null; then
    mkdir -p /tmp/harness-bin && cp "$HARNESS_SHARE/bin/workloads" /tmp/harness-bin/
    PATH=$PATH:/tmp/harness-bin
fi
SEED_ARGS=()
[[ -n ${WORKLOADS_SEED:-} ]] && SEED_ARGS=(--seed "$WORKLOADS_SEED")
REMOUNT="umount $TEST_DIR && mount -t $WORKLOADS_FSTYPE $TEST_DEV $TEST_DIR"
mount -t "$WORKLOADS_FSTYPE" "$TEST_DEV" "$TEST_DIR"
# Leave the disk as found: unmounted and checked.
finish() {
    umount "$TEST_DIR"
    [[ $WORKLOADS_FSTYPE == virtiofs ]] || e2fsck -fn "$TEST_DEV"
}
