#!/bin/busybox sh
# /init of the guestd end-to-end initramfs (busybox-static). PID 1 must never exit.
# It loads the virtio modules, starts guestd WITHOUT --listen (it must find the virtio-serial
# port on its own), and runs a shell on the serial console so the host can look inside.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /var/run /root /etc/network
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
         virtio_console failover net_failover virtio_net; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
done
ip link set lo up
# The console is the host's window into the guest: raw, no echo, one shell.
stty -F /dev/ttyS0 raw -echo clocal 2>/dev/null
echo "GUESTD-E2E: init up, uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
( while true; do
    /bin/guestd --log-level debug >>/tmp/guestd.log 2>&1
    echo "guestd exited rc=$?" >>/tmp/guestd.log
    sleep 1
  done ) &
# stdin is a pipe, not the tty: a non-interactive shell (no prompt, no line editing echo).
while true; do
  cat /dev/ttyS0 | /bin/sh >/dev/ttyS0 2>&1
done
