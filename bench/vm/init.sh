#!/bin/busybox sh
# /init of the benchmark initramfs (bench/lib/serialvm.py): busybox, a static guestd and
# Debian's qemu-ga with its shared libraries. PID 1 must never exit. It loads the virtio
# modules and runs a shell on the serial console; the host starts and stops each agent on the
# virtio-serial port org.qemu.guest_agent.0 through that shell, one agent at a time.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /var/run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
done
stty -F /dev/ttyS0 raw -echo clocal 2>/dev/null
echo "GUESTD-BENCH: init up" > /dev/ttyS0
# stdin is a pipe, not the tty: a non-interactive shell (no prompt, no echo).
while true; do
  cat /dev/ttyS0 | /bin/sh >/dev/ttyS0 2>&1
done
