#!/usr/bin/env bash
# idle.sh's large counts inside a QEMU guest. 10,000 / 50,000 / 100,000 idle IMAP
# sessions need two descriptors each in the proxy, more than a host lets a process
# open when its hard limit cannot be raised (a container or sandbox without
# CAP_SYS_RESOURCE). The guest is Debian's stock kernel under TCG (software emulation,
# so it runs where KVM is absent or unusable) with this machine's root file system
# shared read-only over virtio-9p and tmpfs over the places that are written; as root
# in the guest, idle.sh raises its own limits. Bytes per session agree with the host's
# (bench/RESULTS.md: the same binary at 5,000 sessions); time does not (about 25x
# slower, so one run per count takes about 20 minutes for both proxies).
#
# The guest's /tmp is its own tmpfs: the binary goes in through the second, writable
# 9p share (mounted on /mnt in the guest), which also brings idle.sh's table and log
# back. GUEST_THP (madvise, as Debian hosts run) sets the guest's transparent huge
# pages; MIMALLOC_ALLOW_THP is passed on as the host runs set it.
# Usage: bash bench/guest-idle.sh   (COUNTS="10000 50000 100000" RUNS=1 GUEST_MEM=8G
#          GUEST_SECS=5400 GUEST_THP=madvise MIMALLOC_ALLOW_THP=0 KERNEL_PKG=linux-image-…)
set -euo pipefail
RUNS=${RUNS:-1}   # one run per count: each takes minutes under emulation
source "$(dirname "$0")/lib.sh"

COUNTS=${COUNTS:-"10000 50000 100000"}
GUEST_MEM=${GUEST_MEM:-8G}
GUEST_SECS=${GUEST_SECS:-5400}
GUEST_THP=${GUEST_THP:-madvise}

need qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio file:file
build_portico
command -v busybox | xargs file 2>/dev/null | grep -q 'statically linked' \
    || die "busybox is not statically linked (install busybox-static)"

# ------------------------------------------------------------------ kernel
apt-cache show linux-image-amd64 >/dev/null 2>&1 || apt-get update -q >&2
KERNEL_PKG=${KERNEL_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')}
[[ -n $KERNEL_PKG ]] || die "no kernel package found (apt-get update, or set KERNEL_PKG)"
log "kernel: $KERNEL_PKG"
(cd "$TMP" && apt-get download -q "$KERNEL_PKG" >&2) || die "apt-get download $KERNEL_PKG failed"
dpkg-deb -x "$TMP"/"$KERNEL_PKG"_*.deb "$TMP/kernel"
VMLINUZ=$(ls "$TMP"/kernel/boot/vmlinuz-* | head -1)

# ------------------------------------------------------------------ initramfs
# busybox, the virtio and 9p modules in dependency order, and an init that mounts the
# host's root read-only and runs the job in a chroot of it.
INITRD=$TMP/initramfs
mkdir -p "$INITRD"/{bin,dev,proc,sys,newroot,modules}
cp "$(command -v busybox)" "$INITRD/bin/busybox"
mknod "$INITRD/dev/console" c 5 1
mknod "$INITRD/dev/null" c 1 3
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p"
for m in $MODULES; do
    ko=$(find "$TMP/kernel/lib/modules" -name "$m.ko*" | head -1)
    # Built into this kernel rather than a module: nothing to load.
    [[ -n $ko ]] || { log "module $m: built in or absent"; continue; }
    case $ko in
        *.xz) xz -dc "$ko" >"$INITRD/modules/$m.ko" ;;
        *.zst) zstd -qdc "$ko" >"$INITRD/modules/$m.ko" ;;
        *) cp "$ko" "$INITRD/modules/$m.ko" ;;
    esac
done
cat >"$INITRD/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $MODULES; do
    [ -f /modules/\$m.ko ] && { insmod /modules/\$m.ko || echo "init: insmod \$m failed"; }
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 root /newroot \\
    || { echo "init: 9p root mount failed"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /newroot/mnt \\
    || { echo "init: out mount failed"; poweroff -f; }
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=1777 tmpfs /newroot/var/tmp
mount -t tmpfs -o mode=755 tmpfs /newroot/run
mount -t tmpfs -o mode=700 tmpfs /newroot/root
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/shm /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    HOME=/root LANG=C.UTF-8 /bin/bash /mnt/job.sh
sync
umount /newroot/mnt
poweroff -f
EOF
chmod 755 "$INITRD/init"
(cd "$INITRD" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$TMP/initramfs.cpio.gz"

# ------------------------------------------------------------------ the job
OUT=$TMP/out
mkdir -p "$OUT"
cp "$PORTICO" "$OUT/portico"
THP_ENV=""
[[ -n ${MIMALLOC_ALLOW_THP:-} ]] && THP_ENV="MIMALLOC_ALLOW_THP=$MIMALLOC_ALLOW_THP"
cat >"$OUT/job.sh" <<EOF
#!/bin/bash
# Runs in the guest, as root, in a chroot of the host's / (read-only).
sysctl -qw fs.nr_open=1048576 fs.file-max=2000000
ulimit -Hn 300000; ulimit -n 300000
ip link set lo up
cp /mnt/portico /tmp/portico && chmod 755 /tmp/portico
echo "guest: \$(uname -r), THP \$(cat /sys/kernel/mm/transparent_hugepage/enabled), open files \$(ulimit -n)" >/mnt/idle.log
cd "$REPO" && $THP_ENV PORTICO_BIN=/tmp/portico PORTICO_REV="$PORTICO_REV" COUNTS="$COUNTS" RUNS="$RUNS" \\
    CONNECT_SECS=\${CONNECT_SECS:-3600} bash bench/idle.sh >/mnt/table.md 2>>/mnt/idle.log
echo "guest: idle.sh exit \$?" >>/mnt/idle.log
EOF

# ------------------------------------------------------------------ boot
log "booting the guest (TCG, 2 vCPUs, $GUEST_MEM); COUNTS=\"$COUNTS\" RUNS=$RUNS"
timeout "$GUEST_SECS" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu max -smp 2 -m "$GUEST_MEM" \
    -nographic -no-reboot \
    -kernel "$VMLINUZ" -initrd "$TMP/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 quiet transparent_hugepage=$GUEST_THP" \
    -virtfs local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$OUT,mount_tag=out,security_model=none" \
    </dev/null >"$TMP/console.log" 2>&1 || log "qemu: exit $? (console: $TMP/console.log)"
cat "$OUT/idle.log" >&2 2>/dev/null || true
grep -q 'idle.sh exit 0' "$OUT/idle.log" 2>/dev/null \
    || { tail -40 "$TMP/console.log" >&2; die "the guest's run did not finish"; }
echo "(in a QEMU guest: $(basename "$VMLINUZ"), TCG, 2 vCPUs, $GUEST_MEM, THP $GUEST_THP${THP_ENV:+, $THP_ENV})"
cat "$OUT/table.md"
