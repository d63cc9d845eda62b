// The QEMU launcher's lifecycle: halt firmware, both sockets listening before the spawn, QMP
// handshake, quit with SIGKILL fallback by our own PID, start-up failures and timeouts, temp dir
// removal. A fake machine program (a small Node script speaking just enough qtest and QMP) covers
// the misbehaving cases; real QEMU covers the normal ones (under the missing-QEMU policy).
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { haltFirmware, launchQemu, machineEnv } from '../../src/driver/qemu-launcher.js';
import { MachineError, TimeoutError } from '../../src/driver/machine.js';
import { QmpError } from '../../src/driver/qmp-client.js';
import { alive } from '../support/process.js';
import { QEMU_COMMAND, qemuOrPolicy } from './impls.js';

const FAKE = String.raw`
import { connect } from 'node:net';
const args = process.argv.slice(2);
const mode = process.env.FAKE_MODE;
const path = (flag) => { const i = args.indexOf(flag); return i >= 0 ? args[i + 1].replace(/^unix:/, '') : undefined; };
if (mode === 'exit') { process.stderr.write('fake: unknown option -frobnicate\n'); process.exit(1); }
if (mode === 'silent') { setInterval(() => {}, 1000); }
else {
  const qt = connect(path('-qtest'));
  let buf = '';
  qt.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const cmd = buf.slice(0, nl); buf = buf.slice(nl + 1);
      qt.write(cmd.startsWith('clock_step') ? "FAIL Unknown command 'clock_step'\n" : cmd === 'endianness' ? 'OK little\n' : 'OK\n');
    }
  });
  const qmp = connect(path('-qmp'));
  qmp.write('{"QMP": {"version": {}, "capabilities": []}}\n');
  let qb = '';
  qmp.on('data', (d) => {
    qb += d;
    let nl;
    while ((nl = qb.indexOf('\n')) >= 0) {
      const msg = JSON.parse(qb.slice(0, nl)); qb = qb.slice(nl + 1);
      if (msg.execute === 'quit' && mode === 'stubborn') continue;
      if (msg.execute === 'bogus') { qmp.write(JSON.stringify({ error: { class: 'CommandNotFound', desc: 'The command bogus has not been found' }, id: msg.id }) + '\n'); continue; }
      qmp.write(JSON.stringify({ event: 'NOISE', data: {} }) + '\n');
      qmp.write(JSON.stringify({ return: {}, id: msg.id }) + '\n');
      if (msg.execute === 'quit') setTimeout(() => process.exit(0), 5);
    }
  });
  if (mode === 'stubborn') process.on('SIGTERM', () => {});
}
`;

const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-fake-qemu-'));
const script = join(dir, 'fake-qemu.mjs');
writeFileSync(script, FAKE);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const fake = (mode: string, extra: object = {}) =>
  launchQemu({ command: [process.execPath, script], env: { ...process.env, FAKE_MODE: mode }, name: 'fake', ...extra });

describe('halt firmware', () => {
  it('is 64 KiB of hlt with cli; hlt; jmp $-3 at the reset vector', () => {
    const fw = haltFirmware();
    expect(fw.length).toBe(0x10000);
    expect([...fw.subarray(0xfff0, 0xfff4)]).toEqual([0xfa, 0xf4, 0xeb, 0xfd]);
    expect(fw.subarray(0, 0xfff0).every((b) => b === 0xf4)).toBe(true);
    expect(fw.subarray(0xfff4).every((b) => b === 0xf4)).toBe(true);
  });
});

describe("the machine's environment", () => {
  it('is ours, without NODE_EXTRA_CA_CERTS for a Node program (Node parses the CA bundle at start-up)', () => {
    const env = { PATH: '/bin', NODE_EXTRA_CA_CERTS: '/etc/ssl/certs/ca-certificates.crt', HOME: '/h' };
    for (const cmd of [[process.execPath, 'bin/virtio-ts-qemu'], ['node', 'x.js'], ['/usr/local/bin/nodejs'], ['/opt/virtio-ts/bin/virtio-ts-qemu'], ['virtio-ts-qemu']]) {
      expect(machineEnv(cmd, env), cmd.join(' ')).toEqual({ PATH: '/bin', HOME: '/h' });
    }
    expect(env.NODE_EXTRA_CA_CERTS).toBe('/etc/ssl/certs/ca-certificates.crt');
    for (const cmd of [['qemu-system-x86_64'], ['/usr/bin/qemu-system-x86_64', '-M', 'pc'], ['nodeish']]) {
      expect(machineEnv(cmd, env), cmd.join(' ')).toBe(env);
    }
    const without = { PATH: '/bin' };
    expect(machineEnv([process.execPath], without)).toBe(without);
  });
});

describe('launcher with a fake machine program', () => {
  it('connects qtest and QMP, skips QMP events, quits via QMP and removes its temp dir', async () => {
    const p = await fake('ok');
    expect(p.argv).toContain('-qtest-log');
    expect(p.argv.slice(p.argv.indexOf('-accel'), p.argv.indexOf('-accel') + 2)).toEqual(['-accel', 'tcg']);
    expect(existsSync(join(p.tempDir, 'halt.bin'))).toBe(true);
    expect(p.machine.hasClock).toBe(false);
    expect(await p.machine.endianness()).toBe('little');
    expect(await p.qmp!.execute('query-status')).toEqual({});
    await expect(p.qmp!.execute('bogus')).rejects.toThrow(QmpError);
    expect(p.qmp!.events.map((e) => e.event)).toContain('NOISE');
    await p.machine.close();
    expect(p.exit).toEqual({ code: 0, signal: null });
    expect(existsSync(p.tempDir)).toBe(false);
    await expect(p.machine.readl(0)).rejects.toThrow(MachineError);
  });

  it('kills a machine that ignores quit, by its own PID, after the close timeout', async () => {
    const p = await fake('stubborn', { closeTimeoutMs: 200 });
    const pid = p.pid!;
    expect(alive(pid)).toBe(true);
    const t0 = performance.now();
    await p.close();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(150);
    expect(p.exit?.signal).toBe('SIGKILL');
    expect(alive(pid)).toBe(false);
    expect(existsSync(p.tempDir)).toBe(false);
  });

  it('reports a machine that exits during start-up, with its stderr', async () => {
    await expect(fake('exit')).rejects.toThrow(/exited during start-up \(code 1.*unknown option -frobnicate/s);
  });

  it('bounds start-up: a machine that never connects is killed after the timeout', async () => {
    const t0 = performance.now();
    await expect(fake('silent', { startTimeoutMs: 300, closeTimeoutMs: 200 })).rejects.toThrow(TimeoutError);
    expect(performance.now() - t0).toBeLessThan(3000);
  });

  it('reports a program that cannot be started', async () => {
    await expect(launchQemu({ command: [join(dir, 'no-such-binary')], startTimeoutMs: 2000 })).rejects.toThrow(/cannot start|exited/);
  });
});

if (qemuOrPolicy('QEMU launcher')) {
  describe('launcher with qemu-system-x86_64', () => {
    it('drives QEMU over -qtest stdio as well as unix sockets', async () => {
      const p = await launchQemu({ command: QEMU_COMMAND, qtest: 'stdio', args: ['-device', 'virtio-rng-pci'] });
      try {
        expect(p.argv).toContain('stdio');
        await p.machine.outl(0xcf8, 0x8000_1000);
        expect(await p.machine.inl(0xcfc)).toBe(0x1005_1af4);
        expect(((await p.qmp!.execute('query-status')) as { status: string }).status).toBe('running');
      } finally {
        await p.close();
      }
      expect(p.exit).toEqual({ code: 0, signal: null });
      expect(existsSync(p.tempDir)).toBe(false);
    });

    it('answers clock_step with FAIL under TCG (hasClock false) and keeps serving', async () => {
      const p = await launchQemu({ command: QEMU_COMMAND });
      try {
        expect(p.machine.hasClock).toBe(false);
        expect(await p.machine.endianness()).toBe('little');
        await p.machine.writeq(0x1000, 0x1122334455667788n);
        expect(await p.machine.readl(0x1000)).toBe(0x55667788);
        expect(await p.machine.readq(0x1000)).toBe(0x1122334455667788n);
        // Pipelined: many commands in one turn, replies in order.
        const vals = await Promise.all(Array.from({ length: 200 }, (_, i) => p.machine.writel(0x2000 + 4 * i, i).then(() => p.machine.readl(0x2000 + 4 * i))));
        expect(vals).toEqual(Array.from({ length: 200 }, (_, i) => i));
        await expect(p.machine.irqIntercept('in', 'no-such-device')).rejects.toThrow(/FAIL Unknown device/);
      } finally {
        await p.close();
      }
    });

    it('reports QEMU refusing its command line, with QEMU\'s message', async () => {
      await expect(launchQemu({ command: QEMU_COMMAND, args: ['-device', 'no-such-device'] })).rejects.toThrow(/no-such-device/);
    });
  });
}
