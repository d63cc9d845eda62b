// `virtio-ts v86`: argument parsing and the errors it gives before any machine exists. (Boots
// through the command: test/v86/cli-state.test.ts; the device boots: test/v86/linux.test.ts.)
import { describe, expect, it } from 'vitest';
import { findSeaBios, parseV86Args, V86_USAGE } from '../../src/cli/v86.js';

describe('virtio-ts v86 arguments', () => {
  it('defaults', () => {
    expect(parseV86Args(['--kernel', 'bz'])).toEqual({
      kernel: 'bz',
      readOnly: false,
      memoryMiB: 256,
      append: 'console=ttyS0',
      console: 'ttyS0',
      legacy: false,
      packed: false,
      quiet: false,
    });
  });

  it('every option', () => {
    const o = parseV86Args([
      '--kernel', 'k', '--initrd', 'i', '--disk', 'd', '--read-only', '--net', 'udp:5555:127.0.0.1:5556', '--bios', 'b', '--memory', '128',
      '--append', 'console=ttyS0 quiet', '--console', 'hvc0', '--legacy', '--exit-on', 'login:', '--timeout', '30', '--quiet',
      '--save-state', 'out.state', '--restore-state', 'in.state',
    ]);
    expect(parseV86Args(['--kernel', 'k', '--packed'])).toMatchObject({ packed: true, legacy: false });
    expect(o).toMatchObject({
      kernel: 'k', initrd: 'i', disk: 'd', readOnly: true, net: { localPort: 5555, remoteHost: '127.0.0.1', remotePort: 5556 }, bios: 'b', memoryMiB: 128, append: 'console=ttyS0 quiet',
      console: 'hvc0', legacy: true, exitOn: 'login:', timeoutS: 30, quiet: true, saveState: 'out.state', restoreState: 'in.state',
    });
  });

  it('refuses what it cannot use, with a message', () => {
    expect(parseV86Args([])).toBe('--kernel is required');
    expect(parseV86Args(['--kernel'])).toBe('--kernel needs a file');
    expect(parseV86Args(['--kernel', 'k', '--memory', '8'])).toMatch(/16\.\.2048/);
    expect(parseV86Args(['--kernel', 'k', '--memory', 'lots'])).toMatch(/MiB/);
    expect(parseV86Args(['--kernel', 'k', '--console', 'tty1'])).toMatch(/ttyS0 or hvc0/);
    expect(parseV86Args(['--kernel', 'k', '--timeout', '-1'])).toMatch(/seconds/);
    expect(parseV86Args(['--kernel', 'k', '--frobnicate'])).toBe("unknown option '--frobnicate'");
    expect(parseV86Args(['--kernel', 'k', '--net', 'user'])).toMatch(/udp:LPORT/);
    expect(parseV86Args(['--kernel', 'k', '--net', 'udp:0:h:1'])).toMatch(/udp:LPORT/);
    expect(parseV86Args(['--kernel', 'k', '--save-state'])).toBe('--save-state needs a file');
    expect(parseV86Args(['--kernel', 'k', '--restore-state'])).toBe('--restore-state needs a file');
    expect(parseV86Args(['--kernel', 'k', '--packed', '--legacy'])).toBe('--packed needs the modern interface: not with --legacy');
  });

  it('usage names every option it parses', () => {
    for (const opt of ['--kernel', '--initrd', '--disk', '--read-only', '--net', '--bios', '--memory', '--append', '--console', '--legacy', '--exit-on', '--timeout', '--save-state', '--restore-state', '--quiet']) {
      expect(V86_USAGE).toContain(opt);
    }
  });

  it('finds a SeaBIOS when one is installed or fetched', () => {
    const b = findSeaBios();
    if (b !== undefined) expect(b).toMatch(/bios(-256k)?\.bin$/);
    expect(findSeaBios('/nonexistent')).toBe(b?.startsWith('/usr/share/') ? b : undefined);
  });
});
