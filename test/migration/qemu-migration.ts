// Driving QEMU 7.2 migration to and from files for the interop tests (shared/notes/qemu-oracle.md
// §5): `migrate` with `exec:cat > FILE` on a running QEMU, and `migrate-incoming` with
// `exec:cat FILE` on one started with `-incoming defer`. Each QEMU is started by the driver
// library's launcher (timeouts, unix sockets, ended by its own PID) and always closed.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Machine } from '../../src/driver/machine.js';
import { launchQemu, type QemuProcess } from '../../src/driver/qemu-launcher.js';
import { QEMU_COMMAND } from '../driver/impls.js';

export interface MigrateInfo {
  status: string;
  [k: string]: unknown;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `query-migrate` until it leaves the active states (bounded by `timeoutMs`). */
export async function waitMigration(p: QemuProcess, timeoutMs = 15_000): Promise<MigrateInfo> {
  const deadline = Date.now() + timeoutMs;
  let last: MigrateInfo | undefined;
  while (Date.now() < deadline) {
    try {
      last = (await p.qmp!.execute('query-migrate')) as MigrateInfo;
    } catch (e) {
      // QEMU exits when an incoming migration fails ("load of migration failed").
      if (await p.waitExit(3000)) return { status: 'exited', code: p.exit?.code };
      throw e;
    }
    if (last.status === 'completed' || last.status === 'failed' || last.status === 'cancelled') return last;
    await sleep(5);
  }
  throw new Error(`migration did not finish within ${timeoutMs} ms (last: ${JSON.stringify(last)}); stderr: ${p.stderr}`);
}

export async function queryStatus(p: QemuProcess): Promise<string> {
  const r = (await p.qmp!.execute('query-status')) as { status: string };
  return r.status;
}

/** A private temporary directory, removed by the returned function. */
export function tempDir(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-mig-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Start QEMU (`-machine machine -m 16M`, halt firmware, `-nodefaults`), let `prepare` drive it,
 * migrate it to a file and return the file's bytes with what `query-migrate` said and the
 * wall time from `migrate` to `completed`.
 */
export async function captureFromQemu(
  machine: string,
  prepare: (m: Machine) => Promise<void>,
  opts: { args?: string[]; memory?: string } = {},
): Promise<{ bytes: Uint8Array; info: MigrateInfo; ms: number; stderr: string }> {
  const tmp = tempDir();
  const p = await launchQemu({ command: QEMU_COMMAND, machine, args: opts.args ?? [], name: 'qemu', ...(opts.memory ? { memory: opts.memory } : {}) });
  try {
    await prepare(p.machine);
    const file = join(tmp.dir, 'out.mig');
    const t0 = performance.now();
    await p.qmp!.execute('migrate', { uri: `exec:cat > '${file}'` });
    const info = await waitMigration(p);
    const ms = performance.now() - t0;
    if (info.status !== 'completed') throw new Error(`QEMU migration ${info.status}: ${JSON.stringify(info)}; stderr: ${p.stderr}`);
    return { bytes: new Uint8Array(readFileSync(file)), info, ms, stderr: p.stderr };
  } finally {
    await p.close();
    tmp.remove();
  }
}

/**
 * Start QEMU with the same command line plus `-incoming defer`, feed it `bytes` through
 * `migrate-incoming`, and run `check` on it (qtest and QMP still open). Returns what
 * `query-migrate` and `query-status` said.
 */
export async function loadIntoQemu(
  machine: string,
  bytes: Uint8Array,
  check: (m: Machine, p: QemuProcess) => Promise<void> = async () => undefined,
  opts: { args?: string[]; memory?: string } = {},
): Promise<{ info: MigrateInfo; status: string; stderr: string }> {
  const tmp = tempDir();
  const file = join(tmp.dir, 'in.mig');
  writeFileSync(file, bytes);
  const p = await launchQemu({ command: QEMU_COMMAND, machine, args: [...(opts.args ?? []), '-incoming', 'defer'], name: 'qemu', ...(opts.memory ? { memory: opts.memory } : {}) });
  try {
    await p.qmp!.execute('migrate-incoming', { uri: `exec:cat '${file}'` });
    const info = await waitMigration(p);
    const status = info.status === 'exited' ? 'exited' : await queryStatus(p);
    if (info.status === 'completed') await check(p.machine, p);
    return { info, status, stderr: p.stderr };
  } finally {
    await p.close();
    tmp.remove();
  }
}

/** PCI configuration mechanism #1 byte access (bus 0), on any machine. */
export async function pciConfigWriteb(m: Machine, devfn: number, off: number, v: number): Promise<void> {
  await m.outl(0xcf8, (0x8000_0000 | (devfn << 8) | (off & 0xfc)) >>> 0);
  await m.outb(0xcfc + (off & 3), v);
}

export async function pciConfigReadb(m: Machine, devfn: number, off: number): Promise<number> {
  await m.outl(0xcf8, (0x8000_0000 | (devfn << 8) | (off & 0xfc)) >>> 0);
  return m.inb(0xcfc + (off & 3));
}
