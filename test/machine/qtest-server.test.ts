// The qtest protocol engine (src/machine/qtest-server.ts) on a microvm: QEMU 7.2's reply formats
// and number parsing, and FAIL (not abort) for what would make QEMU assert, the server going on.
import { describe, expect, it } from 'vitest';
import { VirtIORng } from '../../src/devices/rng.js';
import { MicrovmMachine } from '../../src/machine/microvm.js';
import { base64Decode, base64Encode, parseStrtoll, parseStrtoull, QtestServer } from '../../src/machine/qtest-server.js';

function setup(opts: { maxTransfer?: number; log?: boolean } = {}) {
  const m = new MicrovmMachine({ ramSize: 16 << 20 });
  m.addDevice(new VirtIORng({ memory: m.sys.ram, clock: m.clock, maxBytes: 2 ** 63, entropy: { fill: (b) => b.fill(0x33) } }));
  const out: string[] = [];
  const log: string[] = [];
  const server = new QtestServer(m, {
    send: (t) => out.push(t),
    ...(opts.log ? { log: (t: string) => log.push(t), now: () => 1 } : {}),
    ...(opts.maxTransfer !== undefined ? { maxTransfer: opts.maxTransfer } : {}),
  });
  server.open();
  /** Send lines; return the reply lines (IRQ lines included, in order). */
  const send = (...lines: string[]): string[] => {
    out.length = 0;
    server.feed(lines.map((l) => l + '\n').join(''));
    return out.join('').split('\n').slice(0, -1);
  };
  return { m, server, send, out, log };
}

describe('qtest numbers: strtoull(s, NULL, 0) with QEMU checks', () => {
  it('parses hex, octal (leading 0), decimal, signs and leading blanks', () => {
    expect(parseStrtoull('0x10')).toEqual({ ok: true, value: 16n });
    expect(parseStrtoull('0X1f')).toEqual({ ok: true, value: 31n });
    expect(parseStrtoull('010')).toEqual({ ok: true, value: 8n });
    expect(parseStrtoull('0')).toEqual({ ok: true, value: 0n });
    expect(parseStrtoull('42')).toEqual({ ok: true, value: 42n });
    expect(parseStrtoull('+5')).toEqual({ ok: true, value: 5n });
    expect(parseStrtoull('-1')).toEqual({ ok: true, value: 0xffff_ffff_ffff_ffffn });
    expect(parseStrtoull('\t7')).toEqual({ ok: true, value: 7n });
    expect(parseStrtoull('18446744073709551615')).toEqual({ ok: true, value: 0xffff_ffff_ffff_ffffn });
  });
  it('refuses garbage, empty words, trailing characters, bad octal and overflow', () => {
    for (const s of ['', 'x', '0x', '08', '1k', '0x10\r', '18446744073709551616', '0x1ffffffffffffffff', ' ']) {
      expect(parseStrtoull(s).ok).toBe(false);
    }
    expect(parseStrtoull(undefined).ok).toBe(false);
  });
  it('gives the same values on both sides of the short-number fast path (13 hex, 15 decimal, 17 octal digits)', () => {
    const cases: [string, bigint][] = [
      ['0xfffffffffffff', 0xf_ffff_ffff_ffffn],
      ['0x10000000000000', 0x10_0000_0000_0000n],
      ['0x0000000000000001', 1n],
      ['999999999999999', 999_999_999_999_999n],
      ['1000000000000000', 1_000_000_000_000_000n],
      ['9007199254740993', 9_007_199_254_740_993n],
      ['077777777777777777', 0o77777777777777777n],
      ['0777777777777777777', 0o777777777777777777n],
      ['00', 0n],
    ];
    for (const [s, v] of cases) expect(parseStrtoull(s)).toEqual({ ok: true, value: v });
    for (const s of ['0x', '0xg', '09', '1a', '0x12 ', '1.5']) expect(parseStrtoull(s).ok).toBe(false);
  });
  it('number-based command paths keep the 64-bit semantics (masking, ports above 0xffff, huge addresses)', () => {
    const { send } = setup();
    expect(send('writel 0x1000 0x1ffffffff', 'readl 0x1000', 'writeb 0x1004 0xfffffffffffffff7', 'readb 0x1004')).toEqual([
      'OK',
      'OK 0x00000000ffffffff',
      'OK',
      'OK 0x00000000000000f7',
    ]);
    expect(send('outb 0x10000 0', 'inb 0xfffffffffffff', 'inb 0xffff')).toEqual([
      'FAIL port 0x10000 is above 0xffff',
      'FAIL port 0xfffffffffffff is above 0xffff',
      'OK 0x00ff',
    ]);
    expect(send('readl 0x20000000000000', 'readl 9007199254740991')).toEqual(['OK 0x0000000000000000', 'OK 0x0000000000000000']);
  });
  it('signed parsing for clock_step', () => {
    expect(parseStrtoll('-5')).toEqual({ ok: true, value: -5n });
    expect(parseStrtoll('9223372036854775808').ok).toBe(false);
  });
});

describe('qtest replies', () => {
  it('formats inX with at least 4 hex digits and readX with 16', () => {
    const { send } = setup();
    expect(send('inb 0x80', 'inw 0x80', 'inl 0x80')).toEqual(['OK 0x00ff', 'OK 0xffff', 'OK 0xffffffff']);
    expect(send('readl 0xfeb02e00', 'readq 0xfeb02e00', 'readb 0xfeb00000', 'readb 0xfeb02e00')).toEqual([
      'OK 0x0000000074726976',
      'OK 0x0000000174726976',
      'OK 0x0000000000000076', // an empty transport answers any width
      'OK 0x0000000000000000', // a device's registers only 32-bit ones
    ]);
    expect(send('writeq 0x1000 0x1122334455667788', 'readl 0x1000', 'readq 0x1000')).toEqual(['OK', 'OK 0x0000000055667788', 'OK 0x1122334455667788']);
    expect(send('endianness')).toEqual(['OK little']);
  });

  it('reads address 8 for "readl 010" (octal), and wraps negative numbers', () => {
    const { send } = setup();
    send('writel 8 0xcafe');
    expect(send('readl 010', 'readl 0x8', 'readl 8')).toEqual(Array(3).fill('OK 0x000000000000cafe'));
    expect(send('writeb 0x20 0x1ff', 'readb 0x20', 'writew 0x20 -1', 'readl 0x20')).toEqual(['OK', 'OK 0x00000000000000ff', 'OK', 'OK 0x000000000000ffff']);
  });

  it('read/write/b64read/b64write/memset in memory order, with QEMU quirks', () => {
    const { send } = setup();
    expect(send('write 0x2000 4 0xdeadbeef', 'read 0x2000 6')).toEqual(['OK', 'OK 0xdeadbeef0000']);
    // Short data is zero-filled; the first two characters are skipped unchecked; bad digits are garbage.
    expect(send('write 0x2000 4 0x1', 'read 0x2000 4')).toEqual(['OK', 'OK 0x00000000']);
    expect(send('write 0x2000 2 abcd', 'read 0x2000 2')).toEqual(['OK', 'OK 0xcd00']);
    expect(send('write 0x2000 1 0xzz', 'read 0x2000 1')).toEqual(['OK', 'OK 0xff']);
    expect(send('write 0x2000 4 0x')).toEqual(['ERR invalid argument size']);
    expect(send('b64write 0x3000 3 AQID', 'read 0x3000 3', 'b64read 0x3000 3')).toEqual(['OK', 'OK 0x010203', 'OK AQID']);
    expect(send('b64write 0x3000 2 AQID', 'read 0x3000 3')).toEqual(['OK', 'OK 0x010203']);
    expect(send('b64write 0x3000 4 AQID')[0]).toMatch(/^FAIL b64write: data length mismatch \(told 4, found 3\)/);
    expect(send('b64read 0x3000 0')).toEqual(['OK ']);
    expect(send('memset 0x4000 16 0x15a', 'read 0x4000 17')).toEqual(['OK', 'OK 0x' + '5a'.repeat(16) + '00']);
    expect(send('memset 0x4000 0 1')).toEqual(['OK']);
  });

  it('wraps 64-bit addresses like QEMU (and reads 0 above our 2^53)', () => {
    const { send } = setup();
    send('writel 0 0x12345678');
    expect(send('readl 0xffffffffffffffff', 'readl -1', 'readq 0xfffffffffffff000')).toEqual(['OK 0x0000000034567800', 'OK 0x0000000034567800', 'OK 0x0000000000000000']);
  });

  it('clock_step / clock_set drive the virtual clock; no argument jumps to the next deadline', () => {
    const { send, m } = setup();
    expect(send('clock_step')).toEqual(['OK 0']);
    expect(send('clock_step 100', 'clock_set 50', 'clock_set 1000', 'clock_step -5')).toEqual(['OK 100', 'OK 100', 'OK 1000', 'OK 1000']);
    let fired = 0;
    m.clock.setTimer(5000, () => fired++);
    expect(send('clock_step', 'clock_step')).toEqual(['OK 5000', 'OK 5000']);
    expect(fired).toBe(1);
    expect(send('clock_step 9007199254740993')[0]).toMatch(/^FAIL time/);
  });

  it('reports intercepted lines asynchronously and answers intercept errors as QEMU', () => {
    const { send } = setup();
    expect(send('irq_intercept_in /machine/unattached/device[3]')).toEqual(['OK']);
    expect(send('irq_intercept_in /machine/unattached/device[3]')).toEqual(['OK']);
    expect(send('irq_intercept_in ioapic')).toEqual(['FAIL IRQ intercept already enabled']);
    expect(send('set_irq_in /machine/unattached/device[3] unnamed-gpio-in 4 1', 'set_irq_in device[3] unnamed-gpio-in 4 0')).toEqual(['IRQ raise 4', 'OK', 'IRQ lower 4', 'OK']);
    expect(send('irq_intercept_out nowhere')).toEqual(['FAIL Unknown device']);
  });

  it('raises the transport line through a complete virtio-rng request', () => {
    const { send } = setup();
    const b = 0xfeb02e00;
    const w = (o: number, v: number) => `writel 0x${(b + o).toString(16)} 0x${v.toString(16)}`;
    send('irq_intercept_in /machine/unattached/device[3]');
    send(w(0x70, 1), w(0x70, 3), w(0x28, 4096), w(0x30, 0), w(0x38, 8), w(0x3c, 4096), w(0x40, 0x10), w(0x70, 7));
    send(`b64write 0x10000 16 ${base64Encode(new Uint8Array([0, 0, 2, 0, 0, 0, 0, 0, 16, 0, 0, 0, 2, 0, 0, 0]))}`, 'writew 0x10084 0', 'writew 0x10082 1');
    expect(send(w(0x50, 0), 'readw 0x11002', 'read 0x20000 4')).toEqual(['IRQ raise 23', 'OK', 'OK 0x0000000000000001', 'OK 0x33333333']);
    expect(send(`readl 0x${(b + 0x60).toString(16)}`, w(0x64, 1))).toEqual(['OK 0x0000000000000001', 'IRQ lower 23', 'OK']);
  });
});

describe('qtest: malformed input answers FAIL and the server keeps serving', () => {
  it('CRLF, double spaces, missing arguments, bad numbers, empty lines, unknown commands', () => {
    const { send } = setup();
    expect(
      send(
        'readl 0x10\r',
        'endianness\r',
        'readl  0x10',
        'readl',
        'writel 0x10',
        'outb 0x10000 1',
        'inb 0x10000',
        'read 0 0',
        '',
        ' readl 0',
        'readl zero',
        'set_irq_in ioapic unnamed-gpio-in 1',
        'foo 1 2',
        'clock_set',
        'readl 0',
      ),
    ).toEqual([
      "FAIL invalid number '0x10\\r'",
      "FAIL Unknown command 'endianness\\r'",
      "FAIL invalid number ''",
      'FAIL missing argument 1 to readl',
      'FAIL missing argument 2 to writel',
      'FAIL port 0x10000 is above 0xffff',
      'FAIL port 0x10000 is above 0xffff',
      'FAIL read of length 0',
      'FAIL empty command',
      "FAIL Unknown command ''",
      "FAIL invalid number 'zero'",
      'FAIL missing argument 4 to set_irq_in',
      "FAIL Unknown command 'foo'",
      'FAIL missing argument 1 to clock_set',
      'OK 0x0000000000000000',
    ]);
  });

  it('extra words are ignored, as QEMU ignores them', () => {
    const { send } = setup();
    expect(send('readl 0 extra words', 'readl 0 ')).toEqual(['OK 0x0000000000000000', 'OK 0x0000000000000000']);
  });

  it('refuses huge lengths without allocating, then serves the next command', () => {
    const { send } = setup({ maxTransfer: 1 << 20 });
    expect(send('read 0 0xffffffffffffffff', 'b64read 0 0x100001', 'memset 0 0x7fffffffffff 0', 'write 0 0x100000000 0x00', 'readb 0')).toEqual([
      'FAIL length 18446744073709551615 is above the limit of 1048576 bytes',
      'FAIL length 1048577 is above the limit of 1048576 bytes',
      'FAIL length 140737488355327 is above the limit of 1048576 bytes',
      'FAIL length 4294967296 is above the limit of 1048576 bytes',
      'OK 0x0000000000000000',
    ]);
    expect(send('read 0 0x100000')[0]).toHaveLength(3 + 2 + 2 * (1 << 20));
  });

  it('drops a line longer than the limit with one FAIL, without buffering it', () => {
    const { server, out } = setup({ maxTransfer: 16 });
    out.length = 0;
    server.feed('write 0 4 0x' + 'aa'.repeat(5000));
    server.feed('aa'.repeat(5000));
    server.feed('\nreadb 0\n');
    expect(out.join('').split('\n').slice(0, -1)).toEqual([expect.stringMatching(/^FAIL line longer than/), 'OK 0x0000000000000000']);
  });

  it('handles commands split across chunks and many commands in one chunk (pipelining)', () => {
    const { server, out } = setup();
    out.length = 0;
    server.feed('writel 0x100 0x1');
    server.feed('2\nrea');
    server.feed('dl 0x100\nreadb 0x100\nreadb 0x101\n');
    expect(out.join('')).toBe('OK\nOK 0x0000000000000012\nOK 0x0000000000000012\nOK 0x0000000000000000\n');
    const many = Array.from({ length: 1000 }, (_, i) => `writeb ${0x200 + i} ${i & 0xff}`).join('\n') + '\n';
    out.length = 0;
    server.feed(many);
    expect(out.join('').split('\n').length - 1).toBe(1000);
  });

  it('writes the qtest log as QEMU does ([R +t], [S +t], [I t] OPENED)', () => {
    const { server, log, send } = setup({ log: true });
    send('readb 0', 'write 0 1 0x');
    server.close();
    expect(log).toEqual(['[I 0.000000] OPENED\n', '[R +0.000000] readb 0\n', '[S +0.000000] OK 0x0000000000000000\n', '[R +0.000000] write 0 1 0x\n', 'ERR invalid argument size\n', '[I +0.000000] CLOSED\n']);
  });
});

describe('glib base64', () => {
  it('encodes with padding and decodes leniently', () => {
    expect(base64Encode(new Uint8Array([1, 2, 3, 4]))).toBe('AQIDBA==');
    expect([...base64Decode('AQIDBA==')]).toEqual([1, 2, 3, 4]);
    expect([...base64Decode('AQ ID\nBA==')]).toEqual([1, 2, 3, 4]);
    expect([...base64Decode('AQIDB')]).toEqual([1, 2, 3]);
  });
});
