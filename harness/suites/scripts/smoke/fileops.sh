mount_test
cd "$TEST_DIR"
step "create, write, read back"
mkdir -p d/sub
for i in $(seq 1 20); do printf 'file %d\n' "$i" > "d/f$i"; done
[[ $(cat d/f7) == "file 7" ]] || die "d/f7 content"
head -c 3000000 /dev/urandom > big
sum=$(md5sum < big)
step "rename, link, symlink, chmod, truncate"
mv d/f1 d/sub/moved
ln d/f2 d/hard
ln -s ../big d/sym
[[ $(stat -c %h d/f2) == 2 ]] || die "link count"
[[ $(md5sum < d/sym) == "$sum" ]] || die "symlink target content"
chmod 640 d/f3
[[ $(stat -c %a d/f3) == 640 ]] || die "chmod"
truncate -s 100 d/f4
[[ $(stat -c %s d/f4) == 100 ]] || die "truncate up"
truncate -s 2 d/f4
[[ $(cat d/f4) == "fi" ]] || die "truncate down"
step "xattrs"
setfattr -n user.harness -v smoke d/f5
[[ $(getfattr --only-values -n user.harness d/f5) == smoke ]] || die "xattr"
step "unlink, rmdir"
rm d/f6
mkdir d/empty && rmdir d/empty
[[ ! -e d/f6 && ! -e d/empty ]] || die "unlink/rmdir"
ls -la d
cd /
step "remount and verify"
umount_test
mount_test
cd "$TEST_DIR"
[[ $(md5sum < big) == "$sum" ]] || die "big file changed across remount"
[[ $(cat d/sub/moved) == "file 1" ]] || die "renamed file"
[[ $(cat d/hard) == "file 2" ]] || die "hard link"
[[ $(getfattr --only-values -n user.harness d/f5) == smoke ]] || die "xattr after remount"
cd /
umount_test
