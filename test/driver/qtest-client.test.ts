// The qtest client against a scripted peer (no QEMU needed): pipelining, IRQ lines interleaved
// with replies, reply formats, FAIL/ERR, a closed connection, and argument validation (QEMU
// aborts on malformed input, so nothing malformed may be sent).
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { QtestClient, QtestError, QtestMachine } from '../../src/driver/qtest-client.js';
import { MachineError, UnsupportedError } from '../../src/driver/machine.js';

/** A client wired to streams the test plays the machine on. */
function rig(): { client: QtestClient; reply: (s: string) => void; writes: string[]; lines: () => string[]; close: () => void } {
  const toClient = new PassThrough();
  const fromClient = new PassThrough();
  const writes: string[] = [];
  fromClient.on('data', (d: Buffer) => writes.push(d.toString('latin1')));
  const client = new QtestClient(toClient, fromClient, { name: 'fake' });
  return {
    client,
    reply: (s) => toClient.write(s),
    writes,
    lines: () => writes.join('').split('\n').filter((l) => l !== ''),
    close: () => toClient.end(),
  };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('QtestClient', () => {
  it('pipelines the commands of one turn into one write and matches replies in order', async () => {
    const r = rig();
    const ps = [r.client.command('readl 0x0'), r.client.command('readl 0x4'), r.client.command('inb 0x60')];
    expect(r.client.inFlight).toBe(3);
    await tick();
    expect(r.writes).toEqual(['readl 0x0\nreadl 0x4\ninb 0x60\n']);
    r.reply('OK 0x0000000000000001\nOK 0x0000000000000002\nOK 0x00ff\n');
    expect(await Promise.all(ps)).toEqual(['0x0000000000000001', '0x0000000000000002', '0x00ff']);
    expect(r.client.inFlight).toBe(0);
  });

  it('queues IRQ lines that come before (or between) replies, across chunk boundaries', async () => {
    const r = rig();
    const p1 = r.client.command('writew 0xe0003000 0x0');
    const p2 = r.client.command('readb 0xe0001000');
    await tick();
    r.reply('IRQ ra');
    r.reply('ise 11\nO');
    r.reply('K\r\nIRQ lower 11\nOK 0x0000000000000001\n');
    expect(await p1).toBe('');
    expect(await p2).toBe('0x0000000000000001');
    expect(r.client.irq.since().map((e) => [e.line, e.level])).toEqual([
      [11, true],
      [11, false],
    ]);
    expect(r.client.irq.level(11)).toBe(false);
    expect(r.client.unexpected).toEqual([]);
  });

  it('rejects FAIL and ERR replies with the command, and keeps serving', async () => {
    const r = rig();
    const p1 = r.client.command('clock_step 0');
    const p2 = r.client.command('write 0x0 1 0x');
    const p3 = r.client.command('endianness');
    await tick();
    r.reply("FAIL Unknown command 'clock_step'\nERR invalid argument size\nOK little\n");
    await expect(p1).rejects.toThrow(QtestError);
    await expect(p1).rejects.toThrow(/clock_step 0.*FAIL Unknown command/);
    await expect(p2).rejects.toThrow(/ERR invalid argument size/);
    expect(await p3).toBe('little');
  });

  it('rejects pending and later commands when the connection closes', async () => {
    const r = rig();
    const p = r.client.command('readl 0x0');
    await tick();
    r.close();
    await expect(p).rejects.toThrow(MachineError);
    await expect(r.client.command('readl 0x0')).rejects.toThrow(/closed/);
    expect(r.client.closed).toBe(true);
  });

  it('records lines that answer no command', async () => {
    const r = rig();
    r.reply('OK\n');
    await tick();
    expect(r.client.unexpected).toEqual(['OK']);
  });

  it('refuses multi-line or empty commands', async () => {
    const r = rig();
    await expect(r.client.command('readl 0\nquit')).rejects.toThrow(RangeError);
    await expect(r.client.command('')).rejects.toThrow(RangeError);
    await tick();
    expect(r.writes).toEqual([]);
  });
});

describe('QtestMachine over a scripted peer', () => {
  /** Answer every command with `answer(cmd)`. */
  function machine(answer: (cmd: string) => string, hasClock = false): { m: QtestMachine; seen: string[] } {
    const toClient = new PassThrough();
    const fromClient = new PassThrough();
    const seen: string[] = [];
    let buf = '';
    fromClient.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        seen.push(cmd);
        toClient.write(answer(cmd) + '\n');
      }
    });
    return { m: new QtestMachine(new QtestClient(toClient, fromClient), { hasClock }), seen };
  }

  it('formats commands as QEMU parses them and parses each reply format', async () => {
    const { m, seen } = machine((cmd) => {
      if (cmd.startsWith('inb')) return 'OK 0x00ff';
      if (cmd.startsWith('inl')) return 'OK 0x12378086';
      if (cmd.startsWith('readq')) return 'OK 0x1122334455667788';
      if (cmd.startsWith('readl')) return 'OK 0x0000000055667788';
      if (cmd.startsWith('b64read')) return 'OK AQID';
      return 'OK';
    });
    expect(await m.inb(0x60)).toBe(0xff);
    expect(await m.inl(0xcfc)).toBe(0x12378086);
    expect(await m.readq(8)).toBe(0x1122334455667788n);
    expect(await m.readl(8)).toBe(0x55667788);
    expect(await m.readBytes(0x1000, 3)).toEqual(new Uint8Array([1, 2, 3]));
    await m.outl(0xcf8, 0x8000_1000);
    await m.writeb(0x10, 0x1ff);
    await m.writeq(0x20, -1n);
    await m.writeBytes(0x2000, new Uint8Array([0xde, 0xad, 0xbe, 0xef]));
    await m.writeBytes(0x3000, new Uint8Array(0));
    await m.memset(0x4000, 16, 0xab);
    await m.irqIntercept('in', 'ioapic');
    expect(seen).toEqual([
      'inb 0x60',
      'inl 0xcfc',
      'readq 0x8',
      'readl 0x8',
      'b64read 0x1000 3',
      'outl 0xcf8 0x80001000',
      'writeb 0x10 0xff',
      'writeq 0x20 0xffffffffffffffff',
      // LEN equals the decoded length (QEMU 7.2 over-reads otherwise).
      'b64write 0x2000 4 3q2+7w==',
      'memset 0x4000 16 0xab',
      'irq_intercept_in ioapic',
    ]);
  });

  it('moves large blocks in 256 KiB pieces', async () => {
    const { m, seen } = machine((cmd) => (cmd.startsWith('b64read') ? `OK ${Buffer.alloc(Number(cmd.split(' ')[2])).toString('base64')}` : 'OK'));
    await m.writeBytes(0, new Uint8Array(300 * 1024));
    expect((await m.readBytes(0, 300 * 1024)).length).toBe(300 * 1024);
    expect(seen.map((c) => c.split(' ').slice(0, 3).join(' '))).toEqual(['b64write 0x0 262144', 'b64write 0x40000 45056', 'b64read 0x0 262144', 'b64read 0x40000 45056']);
  });

  it('validates arguments before anything is sent (QEMU would abort)', async () => {
    const { m, seen } = machine(() => 'OK');
    await expect(m.inb(0x10000)).rejects.toThrow(RangeError);
    await expect(m.outw(-1, 0)).rejects.toThrow(RangeError);
    await expect(m.readl(-4)).rejects.toThrow(RangeError);
    await expect(m.readl(2 ** 64)).rejects.toThrow(RangeError);
    await expect(m.readBytes(0, -1)).rejects.toThrow(RangeError);
    await expect(m.irqIntercept('in', 'two words')).rejects.toThrow(RangeError);
    await expect(m.irqIntercept('in', '')).rejects.toThrow(RangeError);
    // A zero-length read is answered locally (QEMU asserts on `read ADDR 0`).
    expect(await m.readBytes(0, 0)).toEqual(new Uint8Array(0));
    expect(seen).toEqual([]);
  });

  it('finds out whether clock_step works, and refuses the clock without it', async () => {
    const tcg = machine((cmd) => (cmd.startsWith('clock') ? "FAIL Unknown command 'clock_step'" : 'OK'));
    expect(await tcg.m.probeClock()).toBe(false);
    await expect(tcg.m.clockStep(100)).rejects.toThrow(UnsupportedError);
    const qtest = machine((cmd) => (cmd.startsWith('clock') ? 'OK 100' : 'OK'), true);
    expect(await qtest.m.probeClock()).toBe(true);
    expect(await qtest.m.clockStep(100)).toBe(100);
    expect(await qtest.m.clockStep()).toBe(100);
    expect(qtest.seen).toEqual(['clock_step 0', 'clock_step 100', 'clock_step']);
  });
});
