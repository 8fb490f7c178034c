#!/bin/sh
# mmdebstrap --customize-hook: $1 is the root directory of the new image.
# Keep the image small and boot-ready without udev or systemd: the harness
# agent is PID 1 and mounts everything itself.
set -eu
root="$1"

mkdir -p "$root/harness" "$root/mnt/test" "$root/mnt/scratch"
echo harness > "$root/etc/hostname"
: > "$root/etc/fstab"
# Root logs in without a password on the console (vm-shell uses the agent's shell anyway).
chroot "$root" passwd -d root >/dev/null 2>&1 || true

# The users fstests' ownership and permission tests switch to.
for u in fsgqa fsgqa2 123456-fsgqa; do
    chroot "$root" useradd --create-home "$u" 2>/dev/null || true
done

# Caches and docs are not needed to run tests.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*

# A manifest of package versions, printed into every run for reproducibility.
chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' > "$root/etc/harness-packages"
