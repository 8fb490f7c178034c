# Shared by every fstests batch (vm-test --fstests): one `check` run over a list. A
# test that crashes or hangs the guest is blamed; after a reboot the rest runs on.
# The host puts local.config in the share and the built fstests tree on the disk with
# serial "fstests"; results go to $HARNESS_OUT, which the host reads even after a crash.
FSTESTS=/var/lib/xfstests
FSTESTS_DISK=/dev/disk/by-id/virtio-fstests
# No udev in the guest: device-mapper tests need libdevmapper to make /dev/mapper nodes.
export DM_DISABLE_UDEV=1

# Once per boot: mount the tree, install local.config and the helpers the FSTYP needs.
fstests_setup() {
    [ -e /run/fstests.ready ] && return 0
    mkdir -p "$FSTESTS" || return 1
    if ! mountpoint -q "$FSTESTS"; then
        # The disk is a QEMU snapshot: fstests may write into its tree freely.
        mount -t ext4 "$FSTESTS_DISK" "$FSTESTS" || { echo "cannot mount $FSTESTS_DISK"; return 1; }
    fi
    # fstests compares device names with what /proc/mounts shows: use the kernel's names.
    local by_id dev sed_args=()
    for by_id in /dev/disk/by-id/virtio-*; do
        dev=$(readlink -f "$by_id") && sed_args+=(-e "s|$by_id\"|$dev\"|g")
    done
    sed -e "" "${sed_args[@]}" "$HARNESS_SHARE/fstests/local.config" > "$FSTESTS/local.config" || return 1
    # Upstream FSTYP=fuse cannot mkfs: it only empties the scratch filesystem, so there
    # must be one.
    if grep -q '^FSTYP="fuse"$' "$FSTESTS/local.config" && ! blkid -p "$SCRATCH_DEV" >/dev/null 2>&1; then
        mke2fs -t ext4 -F -q -O ^inline_data "$SCRATCH_DEV" || return 1
    fi
    local flavor
    for flavor in fuse fuseblk; do
        # mount -t fuse.ext4 / fuseblk.ext4 runs mount.<type>: iomapfs picks flavor and
        # subtype from that name.
        ln -sf /usr/local/sbin/iomapfs "/sbin/mount.$flavor.ext4"
        # The server on a device holds a lock on it until it has flushed and exited, so
        # mkfs and fsck wait (a minute at most: a read-only remount keeps the lock) for a
        # just-unmounted filesystem to be really let go.
        fstests_tool "/sbin/mkfs.$flavor.ext4" mke2fs -t ext4 -F -q -O ^inline_data
        fstests_tool "/sbin/fsck.$flavor.ext4" e2fsck -f
    done
    [ -n "${FSTESTS_FULL_REPORTS:-}" ] || fstests_report_cache || return 1
    touch /run/fstests.ready
}

# check rewrites its whole xunit report before every test, so that a guest that dies
# leaves the results so far for the host. Each time, the report's properties (machine,
# devices, config: the same for a whole section) cost some 200 processes, seconds under
# TCG. This makes the reports before each test reuse the first report's values and
# encode plain text without processes; the report at the end of check (the one with the
# section's time) computes them as fstests does. The tree is a snapshot: the change
# lasts one boot. `--env FSTESTS_FULL_REPORTS=1` leaves fstests' report as it is.
fstests_report_cache() {
    local report="$FSTESTS/common/report"
    # Trees without these functions (or patched already) stay as they are.
    grep -q '^__generate_report_vars()' "$report" && grep -q '^_xunit_add_property()' "$report" || return 0
    grep -q '^# fuse-iomap-harness:' "$report" && return 0
    cat >> "$report" <<'REPORT'

# fuse-iomap-harness: the properties of the reports before each test (prelude.sh,
# fstests_report_cache).
eval "__harness_orig$(declare -f __generate_report_vars)"
eval "__harness_orig$(declare -f _xunit_add_property)"
declare -gA __HARNESS_REPORT_VARS=()
__HARNESS_REPORT_KEY=
__generate_report_vars() {
	local key="$section|$FSTYP|$TEST_DEV|$SCRATCH_DEV|$MKFS_OPTIONS|$MOUNT_OPTIONS" k
	# $sect_time is _xunit_make_section_report's: set for check's final report only.
	if [ -n "$sect_time" ] || [ "$__HARNESS_REPORT_KEY" != "$key" ]; then
		__harness_orig__generate_report_vars
		__HARNESS_REPORT_VARS=()
		for k in "${!REPORT_VARS[@]}"; do
			__HARNESS_REPORT_VARS[$k]=${REPORT_VARS[$k]}
		done
		__HARNESS_REPORT_KEY=$key
		return
	fi
	for k in "${!__HARNESS_REPORT_VARS[@]}"; do
		REPORT_VARS[$k]=${__HARNESS_REPORT_VARS[$k]}
	done
}
_xunit_add_property() {
	local name="$1" value="$2" LC_ALL=C
	test -z "$value" && return
	# What encode_xml (cat -v, then sed) would not leave alone goes through it.
	if [[ "$name$value" == *[![:print:]]* || "$value" =~ ^-[neE]+$ ]]; then
		__harness_orig_xunit_add_property "$@"
		return
	fi
	local v
	for v in name value; do
		local x=${!v}
		# Quoted: bash 5.2 puts the match where an unquoted & stands.
		x=${x//&/'&amp;'}
		x=${x//>/'&gt;'}
		x=${x//</'&lt;'}
		x=${x//\'/'&apos;'}
		x=${x//\"/'&quot;'}
		printf -v "$v" '%s' "$x"
	done
	echo -e "\t\t<property name=\"$name\" value=\"$value\"/>"
}
REPORT
}

# fstests_tool PATH CMD...: a wrapper that runs CMD with the caller's arguments once the
# device (the last argument) is free.
fstests_tool() {
    local path=$1
    shift
    cat > "$path" <<TOOL
#!/bin/sh
for dev; do :; done
flock -w 60 -E 99 "\$dev" $* "\$@"
rc=\$?
[ \$rc -eq 99 ] && exec $* "\$@"
exit \$rc
TOOL
    chmod 755 "$path"
}

# Unmount what a test left mounted and wait until the servers let go of the disks.
fstests_release() {
    local m dev
    for m in "$TEST_DIR" "$SCRATCH_MNT"; do
        mountpoint -q "$m" && umount "$m" 2>/dev/null
    done
    for dev in "$TEST_DEV" "$SCRATCH_DEV"; do
        [ -b "$dev" ] && timeout 60 flock "$dev" true
    done
}

# fstests_mark WHAT...: a line in the kernel log (the console), timestamped by the kernel.
fstests_mark() {
    echo "harness-fstests: $*" > /dev/kmsg 2>/dev/null || true
}

# fstests_run SECTION LOOPS TEST...: one check run for the tests, then up to LOOPS more
# runs of those that failed (like check -L), each in $HARNESS_OUT/attempt-N.
# Exit status: the first run's.
fstests_run() {
    local section=$1 loops=$2 attempt first=
    shift 2
    local tests=("$@")
    fstests_setup || { echo "fstests setup failed"; return 3; }
    # check mounts the test device with the first section's settings before it switches
    # to the one asked for: put that one first, so a control run on kernel ext4 mounts no
    # iomapfs (every section sets all its keys, so the order changes nothing else).
    awk -v want="[$section]" '
        /^\[/ { cur = ($0 == want) ? "first" : "rest"; $0 = "\n" $0 }
        !cur { head = head $0 "\n"; next }
        /^$/ { next }
        { if (cur == "first") first = first $0 "\n"; else rest = rest $0 "\n" }
        END { printf "%s%s%s", head, first, rest }
    ' "$FSTESTS/local.config" > "$FSTESTS/local.config.new" &&
        mv "$FSTESTS/local.config.new" "$FSTESTS/local.config" || return 3
    # The host's order, so "the tests after the one that crashed" means the same to both
    # (check sorts its list otherwise; trees older than 2021 lack the option).
    local order=()
    grep -q -- '--exact-order' "$FSTESTS/check" && order=(--exact-order)
    for attempt in $(seq 0 "$loops"); do
        local out="$HARNESS_OUT/attempt-$attempt"
        mkdir -p "$out"
        echo "== ${tests[*]}, section $section, attempt $attempt"
        # --env FSTESTS_XTRACE=1: a timestamped trace of check in xtrace.log, to see where
        # the time goes.
        local check=(./check)
        if [ -n "${FSTESTS_XTRACE:-}" ]; then
            # bash takes no PS4 from the environment as root; BASH_ENV sets it.
            echo 'PS4="+ \${EPOCHREALTIME} "' > /run/fstests-ps4
            check=(env BASH_ENV=/run/fstests-ps4 BASH_XTRACEFD=7 bash -x ./check)
        fi
        # Kernel log marks around check (next to its own "run fstests ID" lines): the
        # host splits check's start from the tests' time with their timestamps.
        fstests_mark check_started "$section" "$attempt"
        (cd "$FSTESTS" && RESULT_BASE="$out" "${check[@]}" -s "$section" -R xunit "${order[@]}" "${tests[@]}" 7>"$out/xtrace.log") 2>&1 |
            tee "$out/check.out"
        local rc=${PIPESTATUS[0]}
        fstests_mark check_finished "$section" "$attempt"
        fstests_release
        # check exits 0 when nothing failed (not run counts as not failed).
        [ -z "$first" ] && first=$rc
        [ "$rc" -eq 0 ] && break
        # Rerun only what failed ("Failures: generic/002 generic/005").
        read -r -a tests < <(sed -n 's/^Failures: //p' "$out/check.out" | tail -n 1)
        [ "${#tests[@]}" -eq 0 ] && break
    done
    return "$first"
}
