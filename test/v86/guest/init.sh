#!/bin/sh
# /init of the v86 test guest (busybox ash). It loads the virtio modules, tests every virtio
# device it finds (or those named by vt.tests=) and reports on the console (ttyS0) in lines the
# host parses (test/v86/support/results.ts):
#
#   VT-RESULT <name> <ok|fail> [key=value ...]   one per test and sub-test
#   VT-INFO <topic> [key=value ...]              facts worth a look (interfaces, modules, MACs)
#   VT-DATA <name> <hex>                         raw bytes the host compares with its own
#   VT-READY <name> [what]                       the guest now waits for the host to act
#   VT-DONE                                      the end; the machine halts after it
#
# Every test runs in the background under a deadline watched here, so a device that never
# answers (a process stuck in uninterruptible sleep ignores SIGKILL) costs its deadline, not the
# boot. Command line knobs (all optional), read from /proc/cmdline:
#   vt.tests=auto|none|rng,blk,console,net,input,balloon   (auto: the devices present)
#   vt.timeout=<s>          per-test deadline (default 30)
#   vt.rng.bytes=<n>        bytes read from /dev/hwrng (default 1024)
#   vt.blk.fs=<KiB>         ext2 made over the first KiB of /dev/vda (default 4096, 0: none)
#   vt.blk.wr=<KiB>         offset of the written pattern (default 8192)
#   vt.blk.seq=<n>          the pattern is the output of `seq 1 n` (default 20000)
#   vt.blk.rounds=<n>       whole-disk direct reads in a row, then the last 4 MiB hashed (default 0)
#   vt.console.port=<name>  named port to echo on (default: the first named port)
#   vt.console.hvc0echo=1   also echo one line on hvc0 (after "VT-READY console hvc0")
#   vt.net.ip=<cidr> vt.net.peer=<ip> vt.net.count=<n>   (192.0.2.15/24, 192.0.2.2, 3)
#   vt.input.events=<n>     events read from the virtio input device (default 4)
#   vt.debug=1              dmesg after a failed test
#   <module>.<param>=<v>    passed to insmod, as modprobe would (virtio_pci.force_legacy=1)

export PATH=/sbin:/bin:/usr/sbin:/usr/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /mnt
mount -t tmpfs tmpfs /tmp

read -r CMDLINE < /proc/cmdline

# The value of vt.<key>= on the command line, or the default $2.
arg() {
  for w in $CMDLINE; do
    case "$w" in "vt.$1="*) echo "${w#*=}"; return ;; esac
  done
  echo "$2"
}

result() { echo "VT-RESULT $*"; }
# Guest uptime in milliseconds, for the VT-INFO time lines (where a slow boot spends its time).
now_ms() {
  read -r up _ < /proc/uptime
  echo $((${up%.*} * 1000 + 1${up#*.} * 10 - 1000))
}
info() { echo "VT-INFO $*"; }
md5() { md5sum "$@" | cut -d' ' -f1; }

# insmod the modules of a group (lists written by initramfs.ts in dependency order), skipping
# loaded ones and passing <module>.<param>= from the command line as modprobe would.
MODFAIL=""
load_group() {
  [ -f "/lib/modules/groups/$1" ] || return 0
  t0=$(now_ms)
  while read -r name file; do
    grep -q "^$name " /proc/modules && continue
    params=""
    for w in $CMDLINE; do
      case "$w" in "$name."*=*) params="$params ${w#"$name".}" ;; esac
    done
    # shellcheck disable=SC2086
    if ! out=$(insmod "/lib/modules/$file" $params 2>&1); then
      info insmod-fail "name=$name" "$out"
      MODFAIL="$MODFAIL $name"
    fi
  done < "/lib/modules/groups/$1"
  info time "modules=$1" "ms=$(($(now_ms) - t0))"
}

# Virtio device IDs (VIRTIO 1.2, 5): the test that covers each.
test_of_id() {
  case "$1" in
    1) echo net ;; 2) echo blk ;; 3) echo console ;; 4) echo rng ;; 5) echo balloon ;;
    18) echo input ;; *) echo "id$1" ;;
  esac
}

# Which interface virtio_pci took for a PCI function: its probe requests the BARs it uses under
# the names virtio-pci-legacy (the I/O BAR) or virtio-pci-modern (the capability BARs).
# The ring format the driver took: bit 34 (VIRTIO_F_RING_PACKED) of the negotiated features,
# which sysfs prints as one character per bit.
ring_of() {
  if [ "$(cut -c35 "$1/features" 2>/dev/null)" = 1 ]; then echo packed; else echo split; fi
}
iface_of() {
  cat /proc/ioports /proc/iomem | grep -A1 ": $1\$" | grep -o 'virtio-pci-[a-z]*' | head -n 1 |
    sed 's/virtio-pci-//'
}

# "<test> <sysfs dir>" for each virtio device bound or not.
virtio_devices() {
  for d in /sys/bus/virtio/devices/virtio*; do
    [ -e "$d/device" ] || continue
    read -r id < "$d/device"
    echo "$(test_of_id $((id))) $d"
  done
}

# The first virtio device of a test's kind, as its sysfs dir.
device_dir() {
  virtio_devices | while read -r t d; do
    [ "$t" = "$1" ] && { echo "$d"; break; }
  done
}

# Runs t_<name> in the background and waits at most vt.timeout seconds for it. Polls the state in
# /proc rather than `wait`ing, because a test stuck in the kernel cannot be killed and `wait`
# would then never return.
run_test() {
  name=$1
  limit=$(arg timeout 30)
  started=$(now_ms)
  "t_$name" &
  pid=$!
  ticks=$((limit * 10))
  while [ $ticks -gt 0 ]; do
    st=Z
    [ -r "/proc/$pid/stat" ] && read -r _ _ st _ < "/proc/$pid/stat"
    [ "$st" = Z ] && break
    sleep 0.1
    ticks=$((ticks - 1))
  done
  if [ $ticks -le 0 ]; then
    kill -9 "$pid" 2>/dev/null
    result "$name" fail "timeout=${limit}s"
    return
  fi
  wait "$pid"
  rc=$?
  info time "test=$name" "ms=$(($(now_ms) - started))"
  if [ $rc -ne 0 ]; then
    info "$name" "exit=$rc"
    [ "$(arg debug 0)" = 1 ] && dmesg | tail -n 30 | sed 's/^/VT-INFO dmesg /'
  fi
}

# --- tests; each prints its VT-RESULT lines and exits non-zero on failure -----------------------

t_rng() {
  n=$(arg rng.bytes 1024)
  read -r cur < /sys/class/misc/hw_random/rng_current
  info rng "current=$cur"
  dd if=/dev/hwrng of=/tmp/rng bs="$n" count=1 iflag=fullblock 2>/dev/null
  got=$(wc -c < /tmp/rng)
  nonzero=$(tr -d '\000' < /tmp/rng | wc -c)
  # All of it, 64 bytes a line, so the host can find each byte in what its device produced
  # (the kernel's hwrng thread may take chunks in between, so the guest's bytes are runs of it).
  hexdump -v -e '"VT-DATA rng " 64/1 "%02x" "\n"' /tmp/rng | sed 's/ *$//'
  first=$(hexdump -v -n 64 -e '64/1 "%02x"' /tmp/rng)
  if [ "$got" -eq "$n" ] && [ "$nonzero" -gt 0 ]; then s=ok; else s=fail; fi
  result rng $s "bytes=$got" "md5=$(md5 /tmp/rng)" "sha256=$(sha256sum /tmp/rng | cut -d' ' -f1)" "first64=$first"
  [ $s = ok ]
}

drop_caches() {
  sync
  echo 3 > /proc/sys/vm/drop_caches
}

t_blk() {
  dev=/dev/vda
  [ -b $dev ] || { result blk fail "reason=no-$dev"; return 1; }
  read -r sectors < /sys/block/vda/size
  bytes=$((sectors * 512))
  fskib=$(arg blk.fs 4096)
  wrkib=$(arg blk.wr 8192)
  seqn=$(arg blk.seq 20000)
  info blk "dev=$dev bytes=$bytes ro=$(cat /sys/block/vda/ro)"
  failed=0

  # 1. The first MiB, as the host wrote it.
  r1=$(dd if=$dev bs=65536 count=16 2>/dev/null | md5)
  result blk.read ok "off=0 len=1048576 md5=$r1"

  # 2. Four readers at once over distinct MiBs (several requests in flight, O_DIRECT so each
  #    one is a device request), then the same MiBs one after the other; both must agree.
  if [ $bytes -ge $((5 * 1048576)) ]; then
    drop_caches
    for i in 1 2 3 4; do
      dd if=$dev bs=65536 skip=$((i * 16)) count=16 iflag=direct 2>/dev/null | md5 > /tmp/par$i &
    done
    wait
    par="" seq=""
    for i in 1 2 3 4; do
      par="$par$(cat /tmp/par$i),"
      seq="$seq$(dd if=$dev bs=65536 skip=$((i * 16)) count=16 iflag=direct 2>/dev/null | md5),"
    done
    if [ "$par" = "$seq" ]; then s=ok; else s=fail; failed=1; fi
    result blk.parallel $s "readers=4 off=1048576 len=1048576 md5=${par%,}" "serial=${seq%,}"
  else
    result blk.parallel fail "reason=too-small bytes=$bytes"
    failed=1
  fi

  # 3. A pattern written at a known offset, synced, and read back from the device (not the
  #    page cache); the host compares the image after the run with the same `seq` output.
  seq 1 "$seqn" > /tmp/pat
  len=$(wc -c < /tmp/pat)
  off=$((wrkib * 1024))
  if [ $((off + len)) -le $bytes ] && [ "$(cat /sys/block/vda/ro)" = 0 ]; then
    wmd5=$(md5 /tmp/pat)
    dd if=/tmp/pat of=$dev bs=1024 seek="$wrkib" conv=notrunc,fsync 2>/dev/null
    drop_caches
    rmd5=$(dd if=$dev bs=65536 skip="$off" count="$len" iflag=skip_bytes,count_bytes,fullblock 2>/dev/null | md5)
    if [ "$wmd5" = "$rmd5" ]; then s=ok; else s=fail; failed=1; fi
    result blk.write $s "off=$off len=$len seq=$seqn md5=$wmd5 readback=$rmd5"
  else
    result blk.write fail "reason=no-room-or-ro off=$off len=$len bytes=$bytes"
    failed=1
  fi

  # 4. A filesystem: ext2 over the first vt.blk.fs KiB, mounted (ext4 driver), a file written,
  #    unmounted, mounted read-only and read back. The host can run e2fsck on that range.
  if [ "$fskib" -gt 0 ] && [ $((fskib * 1024)) -le $off ]; then
    if ! out=$(mke2fs -F -b 1024 -L vtfs $dev "$fskib" 2>&1); then
      result blk.fs fail "step=mke2fs" "$(echo "$out" | tail -n 1)"
      return 1
    fi
    load_group fs
    seq 1 5000 > /tmp/fsfile
    fmd5=$(md5 /tmp/fsfile)
    if mount -t ext2 $dev /mnt; then
      mkdir /mnt/dir && cp /tmp/fsfile /mnt/dir/seq.txt && echo virtio-ts > /mnt/hello
      umount /mnt
      drop_caches
      mount -t ext2 -o ro $dev /mnt
      got=$(md5 /mnt/dir/seq.txt)
      hello=$(cat /mnt/hello)
      umount /mnt
      if [ "$got" = "$fmd5" ] && [ "$hello" = virtio-ts ]; then s=ok; else s=fail; failed=1; fi
      result blk.fs $s "kib=$fskib file=dir/seq.txt md5=$fmd5 readback=$got"
    else
      result blk.fs fail "step=mount kib=$fskib"
      failed=1
    fi
  fi

  # 5. Sustained load: the whole disk read again and again with O_DIRECT (a stream of
  #    completions and interrupts), then the last 4 MiB (never written) hashed for the host.
  rounds=$(arg blk.rounds 0)
  if [ "$rounds" -gt 0 ]; then
    i=0 bad=0
    while [ $i -lt "$rounds" ]; do
      i=$((i + 1))
      dd if=$dev of=/dev/null bs=1048576 iflag=direct 2>/dev/null || bad=$((bad + 1))
    done
    tail=$(dd if=$dev bs=1048576 skip=$((bytes / 1048576 - 4)) count=4 iflag=direct 2>/dev/null | md5)
    if [ $bad = 0 ]; then s=ok; else s=fail; failed=1; fi
    result blk.sustained $s "rounds=$rounds bytes=$((rounds * bytes)) failed=$bad tailmd5=$tail"
  fi
  sync
  if [ $failed = 0 ]; then result blk ok; else result blk fail; fi
  [ $failed = 0 ]
}

t_console() {
  detail=""
  failed=0
  # hvc0 is port 0 when the device offers a console port.
  if [ -c /dev/hvc0 ]; then
    if echo "VT-HVC0 hello from $(uname -r)" > /dev/hvc0; then detail="hvc0=written"; else detail="hvc0=error"; failed=1; fi
    # Optionally the same echo as on the named port below, through the tty (raw, no tty echo).
    if [ "$(arg console.hvc0echo 0)" = 1 ] && [ $failed = 0 ]; then
      {
        stty raw -echo <&3
        echo "VT-READY console hvc0"
        if IFS= read -r -t "$(arg console.wait 15)" line <&3; then
          echo "VT-ECHO $line" >&3
          detail="$detail hvc0echo=$line"
        else
          detail="$detail hvc0echo=timeout"
          failed=1
        fi
      } 3<> /dev/hvc0
    fi
  else
    detail="hvc0=absent"
  fi
  # Without udev nobody makes /dev/virtio-ports/<name>; make the links from sysfs. A port the
  # device made a console (hvc) may carry a name too but refuses open(); debugfs tells them apart.
  want=$(arg console.port "")
  port=""
  mkdir -p /dev/virtio-ports
  [ -d /sys/kernel/debug/virtio-ports ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
  for p in /sys/class/virtio-ports/vport*; do
    [ -e "$p/name" ] || continue
    read -r pname < "$p/name" || continue
    [ -n "$pname" ] || continue
    vp=${p##*/}
    if grep -q '^is_console: yes' "/sys/kernel/debug/virtio-ports/$vp" 2>/dev/null; then
      info console "port=$pname dev=$vp console=yes"
      continue
    fi
    ln -sf "/dev/$vp" "/dev/virtio-ports/$pname"
    info console "port=$pname dev=$vp"
    [ -z "$port" ] && { [ -z "$want" ] || [ "$want" = "$pname" ]; } && port=$pname
  done
  if [ -z "$port" ]; then
    [ -n "$want" ] && { detail="$detail port=$want:absent"; failed=1; }
    if [ $failed = 0 ]; then result console ok $detail; else result console fail $detail; fi
    return $failed
  fi
  # Write a line, tell the host on the serial console, read its answer (one line), echo it.
  # A write blocks until the host side of the port is open (VIRTIO_CONSOLE_PORT_OPEN); a
  # failed open of a plain redirection would end this shell, hence the compound command.
  {
    echo "VT-PORT-READY $port" >&3
    echo "VT-READY console $port"
    if IFS= read -r -t "$(arg console.wait 15)" line <&3; then
      echo "VT-ECHO $line" >&3
      detail="$detail port=$port echoed=$line"
    else
      detail="$detail port=$port read=timeout"
      failed=1
    fi
  } 3<> "/dev/virtio-ports/$port" || { detail="$detail port=$port open=error"; failed=1; }
  if [ $failed = 0 ]; then result console ok $detail; else result console fail $detail; fi
  [ $failed = 0 ]
}

t_net() {
  cidr=$(arg net.ip 192.0.2.15/24)
  peer=$(arg net.peer 192.0.2.2)
  count=$(arg net.count 3)
  ifc=""
  for n in /sys/class/net/*; do
    case "$(readlink -f "$n/device/driver")" in *virtio_net) ifc=${n##*/}; break ;; esac
  done
  [ -n "$ifc" ] || { result net fail "reason=no-virtio-net-interface"; return 1; }
  ip link set "$ifc" up && ip addr add "$cidr" dev "$ifc" || { result net fail "reason=ip-setup"; return 1; }
  read -r mac < "/sys/class/net/$ifc/address"
  info net "if=$ifc mac=$mac ip=$cidr peer=$peer"
  if arping -c 1 -w 5 -I "$ifc" "$peer" > /tmp/arping 2>&1; then arp=ok; else arp=fail; fi
  ping -A -c "$count" -W 3 -w $((count + 5)) "$peer" > /tmp/ping 2>&1
  rx=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/ping)
  rx=${rx:-0}
  if [ "$rx" -ge 1 ]; then s=ok; else s=fail; fi
  # tx/rx counters of the interface, the device's view of the same exchange.
  read -r txp < "/sys/class/net/$ifc/statistics/tx_packets"
  read -r rxp < "/sys/class/net/$ifc/statistics/rx_packets"
  result net $s "if=$ifc mac=$mac arp=$arp sent=$count received=$rx tx_packets=$txp rx_packets=$rxp"
  [ $s = ok ]
}

t_input() {
  n=$(arg input.events 4)
  ev=""
  for e in /sys/class/input/event*; do
    case "$(readlink -f "$e/device")" in *virtio*) ev=${e##*/}; break ;; esac
  done
  [ -n "$ev" ] || { result input fail "reason=no-virtio-event-device"; return 1; }
  read -r name < "/sys/class/input/$ev/device/name"
  info input "dev=$ev name=$(echo "$name" | tr ' ' _)"
  # evdev hands events only to open clients, so open first, then tell the host to inject.
  # struct input_event on i386: timeval (8), type (2), code (2), value (4), little-endian.
  dd if="/dev/input/$ev" of=/tmp/ev bs=16 count="$n" iflag=fullblock 2>/dev/null &
  rd=$!
  sleep 0.5
  echo "VT-READY input $ev"
  wait $rd
  evs=""
  for h in $(hexdump -v -e '16/1 "%02x" "\n"' /tmp/ev); do
    echo "VT-DATA input $h"
    t=$(printf %d "0x${h:18:2}${h:16:2}")
    c=$(printf %d "0x${h:22:2}${h:20:2}")
    v=$(printf %d "0x${h:30:2}${h:28:2}${h:26:2}${h:24:2}")
    [ "$v" -gt 2147483647 ] && v=$((v - 4294967296))
    evs="$evs$t:$c:$v,"
  done
  got=$(($(wc -c < /tmp/ev) / 16))
  if [ "$got" -eq "$n" ]; then s=ok; else s=fail; fi
  result input $s "dev=$ev count=$got events=${evs%,}"
  [ $s = ok ]
}

t_balloon() {
  d=$(device_dir balloon)
  drv=$(readlink -f "$d/driver")
  if [ "${drv##*/}" = virtio_balloon ]; then
    result balloon ok "driver=virtio_balloon features=$(cat "$d/features")"
  else
    result balloon fail "reason=unbound"
    return 1
  fi
}

# --- main --------------------------------------------------------------------------------------

result boot ok "$(uname -r)" "uptime_ms=$(now_ms)"
load_group core
wanted=$(arg tests auto)
present=$(virtio_devices | cut -d' ' -f1 | sort -u | tr '\n' ' ')
[ "$wanted" = auto ] && wanted=$present
wanted=$(echo "$wanted" | tr ',' ' ')
[ "$wanted" = none ] && wanted=""
for t in $present; do
  case " $wanted " in *" $t "*) load_group "$t" ;; esac
done
if [ -z "$MODFAIL" ]; then result modules ok "loaded=$(cut -d' ' -f1 /proc/modules | tr '\n' ',' | sed 's/,$//')"; else result modules fail "failed=$(echo $MODFAIL | tr ' ' ',')"; fi
virtio_devices | while read -r t d; do
  pci=$(readlink -f "$d/..")
  pci=${pci##*/}
  drv=none
  [ -e "$d/driver" ] && drv=$(readlink -f "$d/driver")
  read -r vendor < "/sys/bus/pci/devices/$pci/vendor"
  read -r device < "/sys/bus/pci/devices/$pci/device"
  info virtio "dev=${d##*/} test=$t pci=$pci id=$vendor:$device iface=$(iface_of "$pci") driver=${drv##*/} ring=$(ring_of "$d")"
done
auto=$([ "$(arg tests auto)" = auto ] && echo 1)
for t in $wanted; do
  # A device this program has no test for (9p, gpu, ...) is only listed above, unless asked for.
  if ! command -v "t_$t" > /dev/null; then
    if [ -n "$auto" ]; then info skip "test=$t reason=no-test"; else result "$t" fail reason=no-test; fi
    continue
  fi
  case " $present " in
    *" $t "*) run_test "$t" ;;
    *) result "$t" fail reason=absent ;;
  esac
done
sync
info time "done" "uptime_ms=$(now_ms)"
echo VT-DONE
poweroff -f
# poweroff only halts a machine without ACPI; stay quiet until the host destroys it.
while :; do sleep 3600; done
