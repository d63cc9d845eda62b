// The oracle's own machinery, without QEMU: what the recorder writes down, how transcripts are
// compared (expected differences, confined lines, stale declarations), the villain verdicts, and
// proof that a comparison fails when our side changes: a scenario run on our machine against the
// same machine with a perturbed device, or a perturbed read, must come out DIFFERENT.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { InProcessMachine } from '../../src/driver/inproc.js';
import type { Machine } from '../../src/driver/machine.js';
import { createMachineFromArgs } from '../../src/machine/index.js';
import { VirtIORng } from '../../src/devices/rng.js';
import { compareTranscripts, type ExpectedDifference } from '../../src/oracle/compare.js';
import { RecordingMachine } from '../../src/oracle/recorder.js';
import { formatTable, oursInProcessSide, runGroup, type OracleSide } from '../../src/oracle/runner.js';
import type { OracleGroup, OracleScenario } from '../../src/oracle/scenario.js';
import { Transcript, fnv1a } from '../../src/oracle/transcript.js';
import { oursRuleViolations, villainVerdict, type HostileFacts } from '../../src/oracle/verdict.js';
import { HOSTILE_GROUPS, TRANSPORT_GROUPS } from './scenarios/index.js';
import { ROOT } from './support.js';

function transcript(lines: [string, string][]): Transcript {
  const t = new Transcript();
  for (const [s, l] of lines) t.push(s, l);
  return t;
}

function inProcess(args: string[], machine = 'pc'): InProcessMachine {
  const b = createMachineFromArgs(['-machine', machine, '-m', '16M', ...args]);
  return new InProcessMachine(b.target, { qmp: b.qmp, onClose: () => b.close() });
}

describe('RecordingMachine', () => {
  it('decodes PCI configuration mechanism #1, names regions, and records values', async () => {
    const inner = inProcess(['-device', 'virtio-rng-pci,disable-legacy=on,addr=04.0']);
    const m = new RecordingMachine(inner);
    await m.outl(0xcf8, 0x8000_2000);
    expect(await m.inl(0xcfc)).toBe(0x1044_1af4);
    await m.outl(0xcf8, 0x8000_2004);
    await m.inw(0xcfe);
    m.region('buf', 'mem', 0x10_0000, 0x100);
    await m.writel(0x10_0010, 0x1234);
    await m.readl(0x10_0010);
    await m.readBytes(0x10_0000, 4); // untouched RAM: four zero bytes
    expect(m.transcript.lines()).toEqual([
      '[main] cfg 00:04.0+0x00 inl = 0x10441af4',
      '[main] cfg 00:04.0+0x06 inw = 0x0010',
      '[main] buf+0x10 writel 0x00001234',
      '[main] buf+0x10 readl = 0x00001234',
      `[main] buf+0x0 read 4 = #${fnv1a(new Uint8Array(4))}`,
    ]);
    await inner.close();
  });

  it('runs calls one at a time in call order, records nothing inside quiet(), and notes in order', async () => {
    const inner = inProcess([]);
    const m = new RecordingMachine(inner);
    const order: number[] = [];
    await Promise.all([m.writel(0x10_0000, 1).then(() => order.push(1)), m.readl(0x10_0000).then(() => order.push(2)), m.note('after')]);
    await m.quiet(() => m.readl(0x10_0000));
    await m.phase('second');
    await m.readb(0x10_0000);
    expect(order).toEqual([1, 2]);
    expect(m.transcript.lines()).toEqual(['[main] ram 0x100000 writel 0x00000001', '[main] ram 0x100000 readl = 0x00000001', '[main] note after', '[second] ram 0x100000 readb = 0x01']);
    await inner.close();
  });

  it('records changes of watched IRQ lines only, before the next call', async () => {
    const inner = inProcess([]);
    const m = new RecordingMachine(inner);
    m.watchIrq(11);
    inner.irq.push(2, true);
    inner.irq.push(11, true);
    await m.readb(0x10_0000);
    inner.irq.push(11, false);
    await m.phase('end');
    expect(m.transcript.lines()).toEqual(['[main] irq raise 11', '[main] ram 0x100000 readb = 0x00', '[main] irq lower 11']);
    await inner.close();
  });
});

describe('compareTranscripts', () => {
  const a = transcript([
    ['setup', 'x = 1'],
    ['attack', 'status = 0x0f'],
    ['attack', 'irq lower 23'],
    ['recovery', 'ok'],
  ]);
  const b = transcript([
    ['setup', 'x = 1'],
    ['attack', 'status = 0x4f'],
    ['recovery', 'ok'],
  ]);
  const row = (n: number, sections: string[], extra: Partial<ExpectedDifference> = {}): ExpectedDifference => ({ row: n, reason: 'r', sections, ...extra });

  it('equal transcripts are equal; a difference nobody declared shows both sides', () => {
    expect(compareTranscripts(a, a).kind).toBe('equal');
    const c = compareTranscripts(a, b, [], { names: ['QEMU', 'ours'] });
    expect(c.kind).toBe('different');
    if (c.kind !== 'different') return;
    expect(c.section).toBe('attack');
    expect(c.detail).toContain('QEMU:');
    expect(c.detail).toContain('> status = 0x0f');
    expect(c.detail).toContain('> status = 0x4f');
  });

  it('a declared difference excuses its sections only', () => {
    expect(compareTranscripts(a, b, [row(2, ['attack'])])).toEqual({ kind: 'expected', rows: [2] });
    const other = transcript([...b.entries.map((e): [string, string] => [e.section, e.section === 'recovery' ? 'not ok' : e.text])]);
    expect(compareTranscripts(a, other, [row(2, ['attack'])]).kind).toBe('different');
  });

  it('a line-confined difference excuses only matching lines; an unseen declaration is stale unless optional', () => {
    const onlyIrq = transcript([
      ['setup', 'x = 1'],
      ['attack', 'status = 0x0f'],
      ['recovery', 'ok'],
    ]);
    expect(compareTranscripts(a, onlyIrq, [row(17, ['attack'], { lines: /^irq lower/ })])).toEqual({ kind: 'expected', rows: [17] });
    expect(compareTranscripts(a, b, [row(17, ['attack'], { lines: /^irq lower/ })]).kind).toBe('different');
    expect(compareTranscripts(a, a, [row(4, ['attack'])]).kind).toBe('stale');
    expect(compareTranscripts(a, a, [row(17, ['attack'], { optional: true })]).kind).toBe('equal');
  });

  it('sections must come in the same order', () => {
    const c = compareTranscripts(a, transcript([['setup', 'x = 1']]));
    expect(c.kind).toBe('different');
  });
});

describe('villain verdicts', () => {
  const base: HostileFacts = { legal: false, needsReset: false, liveness: true, recovered: true, problems: [] };
  it('follows the definitions of docs/oracle.md', () => {
    expect(villainVerdict(base).verdict).toBe('PASS');
    expect(villainVerdict({ ...base, needsReset: true, liveness: undefined }).verdict).toBe('REJECT');
    expect(villainVerdict({ ...base, liveness: false }).verdict).toBe('WEDGED');
    expect(villainVerdict({ ...base, problems: ['I4: 16 bytes changed'] }).verdict).toBe('FAIL');
    expect(villainVerdict({ ...base, recovered: false }).verdict).toBe('FAIL');
    expect(villainVerdict(base, 'TypeError: x').verdict).toBe('FAIL');
    expect(villainVerdict({ ...base, legal: true, processed: true }).verdict).toBe('PASS');
    expect(villainVerdict({ ...base, legal: true, processed: false, needsReset: true }).verdict).toBe('FAIL');
  });
  it('ours is never FAIL, and never WEDGED where QEMU does better', () => {
    const v = (verdict: 'PASS' | 'REJECT' | 'WEDGED' | 'FAIL') => ({ verdict, why: '' });
    expect(oursRuleViolations(v('REJECT'), v('WEDGED'))).toHaveLength(1);
    expect(oursRuleViolations(v('WEDGED'), v('WEDGED'))).toEqual([]);
    expect(oursRuleViolations(v('FAIL'), v('WEDGED'))).toEqual([]);
    expect(oursRuleViolations(v('PASS'), v('FAIL'))).toHaveLength(1);
  });
});

describe('every scenario is declared once', () => {
  it('scenario names are unique within their group and expected rows are documented', () => {
    const diffs = readFileSync(`${ROOT}/docs/qemu-differences.md`, 'utf8');
    const oracleDoc = readFileSync(`${ROOT}/docs/oracle.md`, 'utf8');
    for (const g of [...TRANSPORT_GROUPS, ...HOSTILE_GROUPS]) {
      const names = g.scenarios.map((s) => s.name);
      expect(new Set(names).size, g.name).toBe(names.length);
      for (const s of g.scenarios) {
        for (const e of s.expected ?? []) {
          expect(diffs, `row #${e.row} of ${s.name}`).toMatch(new RegExp(`^\\| ${e.row} \\|`, 'm'));
          expect(oracleDoc, `docs/oracle.md mentions #${e.row}`).toContain(`#${e.row}`);
        }
      }
    }
  });
});

// --- the comparison can fail -----------------------------------------------------------------------

/** Our in-process machine with a perturbation applied after it is built. */
function perturbedSide(id: string, perturb: (devices: VirtIORng[], m: Machine) => Machine): OracleSide {
  return {
    id,
    label: id,
    settleMs: 0,
    async start(spec) {
      const b = createMachineFromArgs(['-machine', spec.machine, '-m', '16M', ...spec.args]);
      const devices = b.built.devices.map((d) => d.device).filter((d): d is VirtIORng => d instanceof VirtIORng);
      const machine = perturb(devices, new InProcessMachine(b.target, { name: id, qmp: b.qmp }));
      return { machine, close: () => machine.close() };
    },
  };
}

/** A Machine whose reads at one address come back with the low bit flipped. */
function flipReads(inner: Machine, addr: number): Machine {
  return new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === 'readb' || prop === 'readw' || prop === 'readl') {
        return async (a: number) => {
          const v = await (target[prop] as (x: number) => Promise<number>)(a);
          return a === addr ? v ^ 1 : v;
        };
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...x: unknown[]) => unknown).bind(target) : v;
    },
  });
}

function oneScenario(group: OracleGroup, re: RegExp): OracleGroup {
  const s = group.scenarios.find((x: OracleScenario) => re.test(x.name));
  if (!s) throw new Error(`no scenario ${re}`);
  return { ...group, scenarios: [s] };
}

describe('the comparison fails when our side changes', () => {
  const pciModern = TRANSPORT_GROUPS[0]!;
  const mmioV2 = TRANSPORT_GROUPS[4]!;

  it('ours against ours is equal (the scenarios are deterministic on our side)', async () => {
    const sides = [oursInProcessSide(), { ...oursInProcessSide(), id: 'ours-again', label: 'ours again' }];
    const rs = await runGroup(oneScenario(pciModern, /several laps of the ring, msix$/), sides);
    expect(rs.map((r) => r.status)).toEqual(['equal']);
  });

  it('a device that fills at most 8 bytes per request is DIFFERENT', async () => {
    const sides = [oursInProcessSide(), perturbedSide('capped', (devs, m) => {
      for (const d of devs) (d as { maxBytesPerRequest: number }).maxBytesPerRequest = 8;
      return m;
    })];
    const rs = await runGroup(oneScenario(mmioV2, /several laps of the ring/), sides);
    expect(rs[0]!.status).toBe('DIFFERENT');
    const c = rs[0]!.comparisons[0]!.result;
    expect(c.kind === 'different' && c.detail).toMatch(/> note used .* 0:11\n[^]*> note used .* 0:8\n/);
    expect(formatTable(rs, sides)).toMatch(/DIFFERENT/);
  });

  it('one register read off by one bit is DIFFERENT', async () => {
    // The device status register of the transport (mmio v2 at 0xfeb02e00 + 0x70).
    const sides = [oursInProcessSide(), perturbedSide('flipped', (_d, m) => flipReads(m, 0xfeb0_2e00 + 0x70))];
    const rs = await runGroup(oneScenario(mmioV2, /feature negotiation/), sides);
    expect(rs[0]!.status).toBe('DIFFERENT');
  });

  it('a hostile verdict change shows: a device that never reports errors', async () => {
    const group = oneScenario(HOSTILE_GROUPS[0]!, /next points to itself/);
    const sides = [oursInProcessSide(), perturbedSide('silent', (devs, m) => {
      for (const d of devs) d.virtioError = () => void (d.broken = true);
      return m;
    })];
    const rs = await runGroup(group, sides);
    expect(rs[0]!.status).toBe('DIFFERENT');
    expect(rs[0]!.runs['ours']!.verdict!.verdict).toBe('REJECT');
    expect(rs[0]!.runs['silent']!.verdict!.verdict).toBe('WEDGED');
  });
});

describe('our machine: overlapping BARs (found by the oracle, "two BARs of the function placed at the same address")', () => {
  // QEMU 7.2's pci_update_mappings re-adds only the BARs whose address changed, and among
  // subregions of equal priority the one added last wins: the BAR placed last answers.
  it('the BAR placed last answers where two BARs overlap, as in QEMU', async () => {
    const m = inProcess(['-device', 'virtio-rng-pci,ioeventfd=off']);
    const cfgw = async (off: number, v: number): Promise<void> => {
      await m.outl(0xcf8, 0x8000_1000 | off);
      await m.outl(0xcfc, v);
    };
    await cfgw(0x20, 0xe000_400c); // BAR4 (modern registers, 16 KiB)
    await cfgw(0x24, 0);
    await cfgw(0x04, 0x7);
    // BAR1 (MSI-X table, 4 KiB) placed on top of BAR4: the table answers (entry 0 is masked).
    await cfgw(0x14, 0xe000_4000);
    expect(await m.readl(0xe000_400c)).toBe(1);
    // BAR4 rewritten with the address it has: nothing moves, the table still answers.
    await cfgw(0x20, 0xe000_400c);
    expect(await m.readl(0xe000_400c)).toBe(1);
    // BAR4 moved away and back: now BAR4 is the newest and the common configuration answers.
    await cfgw(0x20, 0xe010_400c);
    await cfgw(0x20, 0xe000_400c);
    expect(await m.readl(0xe000_400c)).toBe(0);
    await m.close();
  });
});
