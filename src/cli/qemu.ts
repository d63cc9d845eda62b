/**
 * `virtio-ts-qemu` (also `virtio-ts qemu ...`): our reference machine behind QEMU's command line,
 * qtest protocol and QMP, so that a harness written for `qemu-system-x86_64` can start it with
 * the same arguments. Node-only.
 *
 * Lifetime follows QEMU's: the process runs until QMP `quit` (exit 0) or a signal (SIGTERM,
 * SIGINT, SIGHUP: exit 0); closing the qtest connection does not stop it. Start-up errors print
 * `<program>: <message>` and exit 1, and so does an incoming migration that fails to load.
 *
 * Migration: `-incoming defer` + QMP `migrate-incoming`, or `-incoming exec:CMD` (loaded at
 * start-up), and QMP `migrate` with `exec:CMD` (src/cli/migration-channels.ts).
 */
import { readFileSync, openSync, statSync, writeSync } from 'node:fs';
import { openChardev, openDeviceChardev, ChardevError, type PendingChannel } from '../machine/chardev.js';
import type { CharBackend } from '../devices/console/chardev.js';
import { BlockBackendError, type BlockBackend } from '../devices/blk/backend.js';
import { openBlockFiles } from '../devices/blk/backends/node-file.js';
import { fileNodes } from '../machine/block-cmdline.js';
import { CmdlineError, parseQemuCommandLine, SUPPORTED_DEVICES, type ChardevSpec, type QemuCommandLine } from '../machine/cmdline.js';
import { buildMachine, type BuiltMachine } from '../machine/qemu-machine.js';
import { lookupBusChildType, lookupDeviceType, type PropKind } from '../machine/device-types/index.js';
import { QmpServer, QEMU_VERSION } from '../machine/qmp-server.js';
import { MigrationCommandError, MigrationController, savevmEngine, type MigrationEngine } from '../machine/migration.js';
import { createNodeMigrationChannels } from './migration-channels.js';
import { QtestServer } from '../machine/qtest-server.js';
import { validBiosSize } from '../machine/memory-layout.js';
import { netdevHelp } from '../machine/netdev.js';
import { NetdevError, openNetdev, type HostNetdevSpec } from '../devices/net/backends/node.js';
import type { NetBackend } from '../devices/net/net-client.js';

export const VIRTIO_TS_VERSION = '0.1.0';

const HELP = `usage: virtio-ts-qemu [options]

A QEMU 7.2 stand-in for qtest harnesses: the virtio-ts reference machine behind QEMU's command
line, the qtest protocol and QMP.

  -machine/-M pc|microvm[,acpi=on|off][,ioapic2=on|off][,accel=qtest|tcg]
  -accel qtest|tcg      -bios FILE      -m SIZE      -nodefaults      -no-user-config
  -display none         -nographic      -S           -incoming defer|exec:CMD
  -qtest unix:PATH[,server=on,wait=off] | tcp:HOST:PORT | stdio | chardev:ID
  -qtest-log none|FILE  -qmp unix:PATH[,server=on,wait=off] | chardev:ID
  -mon chardev=ID,mode=control
  -chardev null|stdio|socket,id=ID[,path=PATH|host=H,port=P][,server=on][,wait=off]
  -chardev file,id=ID,path=PATH[,append=on]
  -drive if=none,id=ID,file=FILE|null-co://,format=raw[,readonly=on][,cache=MODE][,discard=unmap][,file.*=]
  -blockdev driver=file|raw|null-co,node-name=NAME,...
  -device ${SUPPORTED_DEVICES.join('|')}[,prop=value...]
  -global DRIVER.PROP=VALUE
  -version  -help`;

const MACHINE_HELP = `Supported machines are:
microvm              microvm (i386)
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)`;

/** QEMU's PropertyInfo names, as `-device X,help` prints them (size32 and blocksize are both "size"). */
const KIND_NAMES: Record<PropKind, string> = {
  bool: 'bool', u16: 'uint16', u32: 'uint32', u64: 'uint64', i32: 'int32', size32: 'size', blocksize: 'size', onoffauto: 'OnOffAuto', str: 'str', addr: 'int32',
};

function deviceHelp(driver: string | undefined): string {
  if (driver === undefined) {
    return SUPPORTED_DEVICES.map((d) => `name "${d}", bus ${lookupBusChildType(d)?.busType ?? (d.endsWith('-device') ? 'virtio-bus' : 'PCI')}`).join('\n');
  }
  const child = lookupBusChildType(driver);
  const found = lookupDeviceType(driver);
  const own: Record<string, PropKind> = child ? child.props : { ...found?.type.props, ...(found?.pci ? found.type.pciProps : {}) };
  const common = child ? [] : ['any_layout=<bool>', 'event_idx=<bool>', 'indirect_desc=<bool>', 'notify_on_empty=<bool>', 'queue_reset=<bool>'];
  const pci = found?.pci ? ['addr=<int32>', 'disable-legacy=<OnOffAuto>', 'disable-modern=<bool>', 'ioeventfd=<bool>', 'multifunction=<bool>', 'page-per-vq=<bool>', 'vectors=<uint32>'] : [];
  const props = [...pci, ...common, ...Object.entries(own).map(([k, kind]) => `${k}=<${KIND_NAMES[kind]}>`)];
  return `${driver} options:\n${props.sort().map((p) => `  ${p}`).join('\n')}`;
}

/** Resolve -bios: a readable file of a multiple of 64 KiB, or QEMU's default names (zeros). */
function loadBios(cl: QemuCommandLine): Uint8Array | undefined {
  const name = cl.bios;
  if (name === undefined) return undefined;
  let data: Uint8Array | undefined;
  try {
    if (statSync(name).isFile()) data = readFileSync(name);
  } catch {
    data = undefined;
  }
  if (data === undefined && !name.includes('/') && ['bios-256k.bin', 'bios.bin', 'bios-microvm.bin', 'qboot.rom'].includes(name)) {
    // QEMU's own firmware names, looked up in its data directory: we stand in with zeros.
    return undefined;
  }
  // QEMU prints this one with a literal "qemu: " prefix (x86_bios_rom_init).
  if (data === undefined || !validBiosSize(data.length)) throw new CmdlineError(`qemu: could not load PC BIOS '${name}'`);
  return data;
}

/**
 * The files of -drive and -blockdev are opened at start-up, before the devices, as QEMU does;
 * the machine gets them as backends.
 */
async function openDrives(cl: QemuCommandLine): Promise<Map<string, BlockBackend>> {
  try {
    return await openBlockFiles(fileNodes(cl.drives, cl.blockdevs));
  } catch (e) {
    if (e instanceof BlockBackendError) throw new CmdlineError(e.message);
    throw e;
  }
}

export interface RunQemuOptions {
  /** Program name in messages (default `virtio-ts-qemu`). */
  prog?: string;
  /** Exit the process (default `process.exit`). */
  exit?: (code: number) => void;
  /** Called once the machine is up and its chardevs are started (not for -version, errors, ...). */
  onReady?: () => void;
}

/**
 * Run the machine for `argv` (QEMU's arguments, without the program name). Resolves once the
 * machine is up; the process then lives until `quit` or a signal.
 */
export async function runQemu(argv: readonly string[], opts: RunQemuOptions = {}): Promise<void> {
  const prog = opts.prog ?? 'virtio-ts-qemu';
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const err = (msg: string) => process.stderr.write(`${prog}: ${msg}\n`);

  let cl: QemuCommandLine;
  let built: BuiltMachine;
  try {
    cl = parseQemuCommandLine(argv);
    switch (cl.action?.kind) {
      case 'version':
        process.stdout.write(`QEMU emulator version ${QEMU_VERSION.major}.${QEMU_VERSION.minor}.${QEMU_VERSION.micro} (virtio-ts ${VIRTIO_TS_VERSION})\nCopyright (c) virtio-ts contributors; modelled on QEMU 7.2 (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n`);
        return exit(0);
      case 'help':
        process.stdout.write(HELP + '\n');
        return exit(0);
      case 'machine-help':
        process.stdout.write(MACHINE_HELP + '\n');
        return exit(0);
      case 'device-help':
        process.stdout.write(deviceHelp(cl.action.driver) + '\n');
        return exit(0);
      case 'netdev-help':
        process.stdout.write(netdevHelp() + '\n');
        return exit(0);
    }
    for (const w of cl.warnings) err(w);
  } catch (e) {
    if (e instanceof CmdlineError) {
      reportCmdline(e, err);
      return exit(1);
    }
    throw e;
  }
  let bios: Uint8Array | undefined;
  try {
    bios = loadBios(cl);
  } catch (e) {
    if (e instanceof CmdlineError) {
      reportCmdline(e, err);
      return exit(1);
    }
    throw e;
  }

  // Open every chardev in command-line order, before the devices that use them, as QEMU does;
  // a failure is fatal, worded as QEMU's. qtest and monitors get text channels, everything else
  // (a virtio-serial port's backend, or nobody's) a device chardev.
  const channels = new Map<string, PendingChannel>();
  const deviceChardevs = new Map<string, CharBackend>();
  const open: { close(): void; flush?(): Promise<void> }[] = [];
  const textUsers = new Set([...(cl.qtest !== undefined ? [cl.qtest] : []), ...cl.monitors.map((m) => m.chardev)]);
  let failed: ChardevSpec | undefined;
  try {
    for (const spec of cl.chardevs) {
      failed = spec;
      if (textUsers.has(spec.id)) {
        const ch = await openChardev(spec, { onWaiting: (m) => err(m) });
        channels.set(spec.id, ch);
        open.push(ch.channel);
      } else {
        const be = await openDeviceChardev(spec, { onWaiting: (m) => err(m) });
        deviceChardevs.set(spec.id, be);
        open.push(be);
      }
    }
  } catch (e) {
    for (const c of open) c.close();
    if (e instanceof ChardevError) {
      const spec = failed;
      if (spec && spec.id === cl.qtest) {
        err(e.message);
        err(`Failed to initialize device for qtest: "${argOf(argv, '-qtest') ?? spec.id}"`);
      } else {
        const mon = cl.monitors.find((m) => m.chardev === spec?.id);
        err(mon && spec?.id.startsWith('compat_monitor') ? `${mon.arg}: ${e.message}` : spec?.loc !== undefined ? `${spec.loc}: ${e.message}` : e.message);
      }
      return exit(1);
    }
    throw e;
  }

  // Netdevs with host sockets (QEMU creates them before the devices, modern ones first).
  const netdevs = new Map<string, NetBackend>();
  const closeNet: { close(): void }[] = [];
  let eventSink: ((name: string, data: Record<string, unknown>) => void) | undefined;
  for (const spec of [...cl.netdevs.filter((n) => n.type === 'dgram' || n.type === 'stream'), ...cl.netdevs.filter((n) => n.type === 'socket')]) {
    try {
      const be = await openNetdev(spec as HostNetdevSpec, { onEvent: (n, d) => eventSink?.(n, d), onError: (m) => process.stderr.write(m + '\n') });
      netdevs.set(spec.id, be);
      closeNet.push(be);
    } catch (e) {
      for (const c of [...open, ...closeNet]) c.close();
      if (e instanceof NetdevError) {
        err(`${spec.loc}: ${e.message}`);
        return exit(1);
      }
      throw e;
    }
  }
  open.push(...closeNet);

  // Then the files of -drive and -blockdev (QEMU's configure_blockdev comes after the chardevs),
  // still before the devices: the machine gets them as backends.
  let blockFiles: Map<string, BlockBackend>;
  try {
    blockFiles = await openDrives(cl);
  } catch (e) {
    for (const c of open) c.close();
    if (e instanceof CmdlineError) {
      reportCmdline(e, err);
      return exit(1);
    }
    throw e;
  }

  try {
    built = buildMachine(cl, { ...(bios ? { bios } : {}), chardevs: deviceChardevs, blockFiles, netdevs });
    for (const w of built.warnings) err(w);
  } catch (e) {
    for (const c of open) c.close();
    if (e instanceof CmdlineError) {
      reportCmdline(e, err);
      return exit(1);
    }
    throw e;
  }
  const machine = built.machine;
  eventSink = (n, d) => machine.emitEvent(n, d);

  // qtest log: default stderr, `none`, or a file (QEMU ignores a file it cannot open).
  let log: ((text: string) => void) | undefined;
  if (cl.qtest !== undefined) {
    if (cl.qtestLog === undefined) log = (t) => process.stderr.write(t);
    else if (cl.qtestLog !== 'none') {
      try {
        const fd = openSync(cl.qtestLog, 'w+');
        log = (t) => {
          try {
            writeSync(fd, t);
          } catch {
            /* QEMU does not stop for a full disk either */
          }
        };
      } catch {
        log = undefined;
      }
    }
  }

  const engine: MigrationEngine = savevmEngine(machine);
  const migration = new MigrationController(machine, {
    engine,
    channels: createNodeMigrationChannels(),
    report: (m) => err(m),
    // `file:PATH`, as QEMU 8.1 and later take it (7.2 has only exec: of the two): the issue's
    // harnesses use both (docs/qemu-differences.md row 33).
    fileUri: true,
    // QEMU exits with status 1 when an incoming stream fails to load.
    onIncomingFailure: () => void quit(1),
  });

  let quitting = false;
  const quit = async (code: number) => {
    if (quitting) return;
    quitting = true;
    migration.dispose();
    await Promise.race([Promise.all(open.map((c) => c.flush?.())), new Promise((r) => setTimeout(r, 500))]);
    for (const c of open) c.close();
    exit(code);
  };

  if (cl.qtest !== undefined) {
    const p = channels.get(cl.qtest)!;
    const ch = p.channel;
    const server = new QtestServer(machine, { send: (t) => ch.write(t), ...(log ? { log } : {}) });
    ch.onOpen = () => server.open();
    ch.onClose = () => server.close();
    ch.onData = (d) => server.feed(d);
  }
  for (const mon of cl.monitors) {
    const ch = channels.get(mon.chardev)!.channel;
    const server = new QmpServer(machine, { send: (t) => ch.write(t), onQuit: () => void quit(0), migration });
    ch.onOpen = () => server.open();
    ch.onClose = () => server.close();
    ch.onData = (d) => server.feed(d);
  }
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => void quit(0));
  // QEMU runs until told to stop, whatever its connections do.
  setInterval(() => undefined, 1 << 30);
  for (const p of channels.values()) p.start();
  // -incoming URI: the load starts now, as QEMU's qmp_x_exit_preconfig does once the machine
  // and its monitors exist.
  if (cl.incoming !== undefined && cl.incoming !== 'defer') {
    try {
      migration.migrateIncoming(cl.incoming);
    } catch (e) {
      if (!(e instanceof MigrationCommandError)) throw e;
      err(`-incoming ${cl.incoming}: ${e.message}`);
      await quit(1);
      return;
    }
  }
  opts.onReady?.();
}

function reportCmdline(e: CmdlineError, err: (msg: string) => void): void {
  if (e.message.startsWith('qemu: ')) process.stderr.write(e.message + '\n');
  else if (e.everyLine) for (const line of e.message.split('\n')) err(line);
  else err(e.message);
}

function argOf(argv: readonly string[], opt: string): string | undefined {
  let v: string | undefined;
  for (let i = 0; i < argv.length - 1; i++) if (argv[i] === opt || argv[i] === '-' + opt) v = argv[i + 1];
  return v;
}
