// Migration over QMP, virtio-ts-qemu beside QEMU 7.2: the same command line and the same QMP
// input on both, the raw reply lines compared after dropping timestamps and measurements
// (times, RAM counters): key order, state names, error classes and descriptions, events and
// their order, run states. The streams both destinations load are whole-machine streams that
// virtio-ts writes from an in-process machine built from the same command line.
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haltFirmware } from '../../src/driver/qemu-launcher.js';
import { parseQemuCommandLine } from '../../src/machine/cmdline.js';
import { buildMachine } from '../../src/machine/qemu-machine.js';
import { parseSavevm, saveVm } from '../../src/migration/savevm.js';
import { qemuOrPolicy } from '../driver/impls.js';
import { normalize, Workdir, type QmpProcess } from '../support/qmp-process.js';

const PC = 'pc';
const RNG = ['-device', 'virtio-rng-pci,ioeventfd=off'];
const EVENTS_ON = { execute: 'migrate-set-capabilities', arguments: { capabilities: [{ capability: 'events', state: true }] } };
const isMigrationEnd = (l: string) => /"event": "MIGRATION", "data": \{"status": "(completed|failed|cancelled)"\}/.test(l);

let w: Workdir;

/** A stream of our machine for `-machine MACHINE -m 16M ARGS` (what Workdir starts), in `runState`. */
function ourStream(machine: string, args: readonly string[], runState: string): Uint8Array {
  const cl = parseQemuCommandLine(['-machine', machine, '-m', '16M', '-nodefaults', ...args]);
  return saveVm(buildMachine(cl, { bios: haltFirmware() }).machine, { runState });
}

/** Run `script` on QEMU and on ours; returns both normalized transcripts. */
async function both(args: readonly string[], script: (p: QmpProcess, kind: 'qemu' | 'ours') => Promise<string[]>): Promise<{ qemu: string[]; ours: string[] }> {
  const out: Record<'qemu' | 'ours', string[]> = { qemu: [], ours: [] };
  for (const kind of ['qemu', 'ours'] as const) {
    const p = await w.start(kind, PC, args);
    try {
      out[kind] = (await script(p, kind)).map(normalize);
    } finally {
      await p.kill();
    }
  }
  return out;
}

/** Poll query-migrate until its status is `want`; returns the lines seen meanwhile, last reply last. */
async function pollStatus(p: QmpProcess, want: RegExp): Promise<string[]> {
  for (let i = 0; i < 200; i++) {
    const lines = await p.cmd({ execute: 'query-migrate' });
    if (want.test(lines[lines.length - 1]!)) return lines;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`query-migrate never matched ${want}`);
}

/** Append lines to `lines` until the MIGRATION event that ends a migration is among them. */
async function untilEnd(p: QmpProcess, lines: string[]): Promise<void> {
  if (!lines.some(isMigrationEnd)) await p.waitLine(isMigrationEnd);
  lines.push(...p.take());
}

/** Poll query-status until the run state is `want` (the lines are dropped). */
async function pollRunState(p: QmpProcess, want: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const lines = await p.cmd({ execute: 'query-status' });
    if (lines[lines.length - 1]!.includes(`"status": "${want}"`)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`run state never became ${want}`);
}

if (qemuOrPolicy('QMP migration compared with QEMU 7.2')) {
  beforeAll(async () => {
    w = new Workdir();
    await w.buildOurs();
  }, 60_000);
  afterAll(async () => {
    await w?.dispose();
  });

  describe('QMP migration commands, compared with QEMU 7.2', () => {
    it('on a fresh source: queries, capabilities, parameters and every refusal', async () => {
      const bad = (capabilities: unknown) => ({ execute: 'migrate-set-capabilities', arguments: { capabilities } });
      const r = await both(RNG, async (p) => {
        const cmds: unknown[] = [
          { execute: 'query-migrate' },
          { execute: 'query-migrate-capabilities' },
          { execute: 'query-migrate-parameters' },
          { execute: 'query-migrate-parameters', arguments: { a: 1 } },
          { execute: 'migrate-incoming', arguments: { uri: 'exec:cat /dev/null' } },
          { execute: 'migrate' },
          { execute: 'migrate', arguments: { uri: 1 } },
          { execute: 'migrate', arguments: { uri: 'exec:cat > /dev/null', blk: 'x' } },
          { execute: 'migrate', arguments: { uri: 'exec:cat > /dev/null', foo: 1 } },
          { execute: 'migrate', arguments: { uri: 'exec:cat > /dev/null', resume: true } },
          { execute: 'query-migrate' },
          bad([{ capability: 'foo', state: true }]),
          bad([{ capability: 'events' }]),
          bad([{ capability: 5, state: true }]),
          bad([{ state: true }]),
          bad([1]),
          bad({}),
          bad([{ capability: 'events', state: 'yes' }]),
          bad([{ capability: 'events', state: true, foo: 1 }]),
          { execute: 'migrate-set-capabilities', arguments: {} },
          bad([]),
          EVENTS_ON,
          { execute: 'query-migrate-capabilities' },
          // With events on, the failed attempt shows its setup and failed events.
          { execute: 'migrate', arguments: { uri: 'bogus:x' } },
          { execute: 'query-migrate' },
          { execute: 'migrate_cancel' },
          { execute: 'migrate_cancel', arguments: { x: 1 } },
          { execute: 'migrate-continue', arguments: { state: 'active' } },
          { execute: 'migrate-continue', arguments: { state: 'bogus' } },
          { execute: 'migrate-pause' },
          { execute: 'migrate-recover', arguments: { uri: 'exec:true' } },
          { execute: 'migrate-start-postcopy' },
          { execute: 'migrate_set_speed', arguments: { value: 1 } },
          { execute: 'query-status' },
        ];
        const lines: string[] = [];
        for (const c of cmds) lines.push(...(await p.cmd(c)));
        return lines;
      });
      expect(r.ours).toEqual(r.qemu);
      expect(r.ours).toContain('{"error":{"class":"GenericError","desc":"Parameter \'uri\' expects a valid migration protocol"}}');
    });

    it('a running source migrates to exec: with events: setup, pass 1, active, STOP, pass 2, completed; postmigrate until cont', async () => {
      let n = 0;
      const r = await both(RNG, async (p, kind) => {
        const file = w.path(`running-${kind}-${n++}.mig`);
        const lines = await p.cmd(EVENTS_ON);
        lines.push(...(await p.cmd({ execute: 'migrate', arguments: { uri: `exec:cat > '${file}'` } })));
        await untilEnd(p, lines);
        // QEMU's migration thread sends `completed` before the main loop enters postmigrate; a
        // `migrate` in between passes QEMU's checks and crashes it ("migration_iteration_finish:
        // Unknown ending state 1", SIGSEGV, seen on 7.2.22). Wait for postmigrate first.
        await pollRunState(p, 'postmigrate');
        for (const c of ['query-migrate', 'query-status']) lines.push(...(await p.cmd({ execute: c })));
        lines.push(...(await p.cmd({ execute: 'migrate', arguments: { uri: `exec:cat > '${file}.2'` } })));
        lines.push(...(await p.cmd({ execute: 'migrate_cancel' })));
        lines.push(...(await p.cmd({ execute: 'query-migrate' })));
        lines.push(...(await p.cmd({ execute: 'cont' })));
        lines.push(...(await p.cmd({ execute: 'query-status' })));
        return lines;
      });
      expect(r.ours).toEqual(r.qemu);
      expect(r.ours.filter((l) => l.includes('"event"')).map((l) => JSON.parse(l) as { event: string; data?: unknown })).toEqual([
        { timestamp: '#', event: 'MIGRATION', data: { status: 'setup' } },
        { timestamp: '#', event: 'MIGRATION_PASS', data: { pass: 1 } },
        { timestamp: '#', event: 'MIGRATION', data: { status: 'active' } },
        { timestamp: '#', event: 'STOP' },
        { timestamp: '#', event: 'MIGRATION_PASS', data: { pass: 2 } },
        { timestamp: '#', event: 'MIGRATION', data: { status: 'completed' } },
        { timestamp: '#', event: 'RESUME' },
      ]);
    });

    it('while a migration runs: another migrate and migrate-set-capabilities are refused; query-migrate shows it', async () => {
      const r = await both(RNG, async (p) => {
        const lines = await p.cmd({ execute: 'migrate', arguments: { uri: 'exec:sleep 0.5; cat > /dev/null' } });
        lines.push(...(await p.cmd({ execute: 'migrate', arguments: { uri: 'exec:cat > /dev/null' } })));
        lines.push(...(await p.cmd(EVENTS_ON)));
        // QEMU's migration thread leaves `setup` once ram_save_setup has run (it takes the BQL);
        // on a loaded machine a query right after the commands above can still see `setup` (3 in 8
        // runs on main, alone). Ours is `active` at once. What is compared is the state of a
        // running migration, so wait for `active` on both (the writer sleeps 0.5 s: it lasts).
        const q = (await pollStatus(p, /"status": "active"/)).filter((l) => !l.includes('"event"'));
        lines.push(...q);
        await pollStatus(p, /"status": "completed"/);
        // Events differ here (row 31 of docs/qemu-differences.md: QEMU is still running, we stopped).
        return lines.filter((l) => !l.includes('"event"'));
      });
      expect(r.ours).toEqual(r.qemu);
      expect(r.ours.slice(1, 3)).toEqual(Array(2).fill('{"error":{"class":"GenericError","desc":"There\'s a migration process in progress"}}'));
      expect(r.ours[3]).toMatch(/^\{"return":\{"expected-downtime":"#","status":"active","setup-time":"#","total-time":"#","ram":\{/);
    });

    it('a -S source migrates without STOP and ends in postmigrate; events off means no MIGRATION events', async () => {
      const r = await both([...RNG, '-S'], async (p, kind) => {
        const lines = await p.cmd({ execute: 'migrate', arguments: { uri: `exec:cat > '${w.path(`pre-${kind}.mig`)}'` } });
        lines.push(...(await pollStatus(p, /"status": "completed"/)).slice(-1));
        await pollRunState(p, 'postmigrate');
        lines.push(...(await p.cmd({ execute: 'query-status' })));
        return lines;
      });
      expect(r.ours).toEqual(r.qemu);
      expect(r.ours.join('\n')).not.toContain('"event"');
      expect(r.ours[r.ours.length - 1]).toBe('{"return":{"status":"postmigrate","singlestep":false,"running":false}}');
    });
  });

  describe('the destination, compared with QEMU 7.2 (both load a stream virtio-ts wrote)', () => {
    const stream = (state: 'running' | 'paused' | 'prelaunch') => {
      const f = w.path(`gs-${state}.mig`);
      writeFileSync(f, ourStream(PC, RNG, state));
      return f;
    };
    const cases: { name: string; state: 'running' | 'paused' | 'prelaunch'; args: string[]; before?: string; status: string }[] = [
      { name: 'running source, autostart: RESUME, running', state: 'running', args: [], status: 'running' },
      { name: 'running source, -S: paused, no RESUME', state: 'running', args: ['-S'], status: 'paused' },
      { name: 'running source, -S, then cont during inmigrate: running', state: 'running', args: ['-S'], before: 'cont', status: 'running' },
      { name: 'running source, stop during inmigrate: paused', state: 'running', args: [], before: 'stop', status: 'paused' },
      { name: 'prelaunch source: prelaunch', state: 'prelaunch', args: [], status: 'prelaunch' },
      { name: 'paused source: paused', state: 'paused', args: [], status: 'paused' },
    ];
    for (const c of cases) {
      it(c.name, async () => {
        const file = stream(c.state);
        const r = await both([...RNG, '-incoming', 'defer', ...c.args], async (p) => {
          const lines: string[] = [];
          for (const cmd of [
            { execute: 'query-status' },
            { execute: 'query-migrate' },
            { execute: 'migrate', arguments: { uri: 'exec:cat > /dev/null' } },
            EVENTS_ON,
            { execute: 'query-migrate' },
            ...(c.before ? [{ execute: c.before }, { execute: 'query-status' }] : []),
          ]) {
            lines.push(...(await p.cmd(cmd)));
          }
          lines.push(...(await p.cmd({ execute: 'migrate-incoming', arguments: { uri: `exec:cat '${file}'` } })));
          await untilEnd(p, lines);
          for (const cmd of ['query-migrate', 'query-status']) lines.push(...(await p.cmd({ execute: cmd })));
          lines.push(...(await p.cmd({ execute: 'migrate-incoming', arguments: { uri: `exec:cat '${file}'` } })));
          return lines;
        });
        expect(r.ours).toEqual(r.qemu);
        expect(r.ours).toContain(`{"return":{"status":"${c.status}","singlestep":false,"running":${c.status === 'running'}}}`);
      });
    }

    it('-incoming exec: on the command line loads at start-up', async () => {
      const file = stream('running');
      const r = await both([...RNG, '-incoming', `exec:cat '${file}'`], async (p) => {
        const lines = (await pollStatus(p, /"status": "completed"/)).slice(-1);
        lines.push(...(await p.cmd({ execute: 'query-status' })));
        lines.push(...(await p.cmd({ execute: 'migrate-incoming', arguments: { uri: 'exec:true' } })));
        return lines.filter((l) => !l.includes('"event"'));
      });
      expect(r.ours).toEqual(r.qemu);
      expect(r.ours[0]).toBe('{"return":{"status":"completed"}}');
    });
  });

  describe('bad incoming streams and URIs end the destination with status 1, as QEMU 7.2', () => {
    /** stderr without the program name, and the exit status. */
    async function ending(kind: 'qemu' | 'ours', args: readonly string[], uri?: string): Promise<{ code: number | null; stderr: string[] }> {
      const p = await w.start(kind, PC, args, { connect: uri !== undefined });
      if (uri) p.send({ execute: 'migrate-incoming', arguments: { uri } });
      await p.exited;
      return { code: p.exit!.code, stderr: p.stderr.split('\n').filter(Boolean).map((l) => l.replace(/^[^:]*: /, '')) };
    }

    it('garbage after migrate-incoming: "Not a migration stream", "load of migration failed: Invalid argument", exit 1', async () => {
      const garbage = w.path('garbage.mig');
      writeFileSync(garbage, 'garbage\n');
      const q = await ending('qemu', [...RNG, '-incoming', 'defer'], `exec:cat '${garbage}'`);
      const o = await ending('ours', [...RNG, '-incoming', 'defer'], `exec:cat '${garbage}'`);
      // Ours adds one line QEMU lacks: where in the stream the load was refused.
      expect(o.stderr.pop()).toBe('virtio-ts: refused at stream offset 0 (magic)');
      expect(o).toEqual(q);
      expect(o).toEqual({ code: 1, stderr: ['Not a migration stream', 'load of migration failed: Invalid argument'] });
    });

    it('a stream for another machine type is refused with QEMU\'s message', async () => {
      const other = w.path('microvm.mig');
      writeFileSync(other, ourStream('microvm', ['-device', 'virtio-rng-device'], 'running'));
      const q = await ending('qemu', [...RNG, '-incoming', 'defer'], `exec:cat '${other}'`);
      const o = await ending('ours', [...RNG, '-incoming', 'defer'], `exec:cat '${other}'`);
      expect(o.stderr.pop()).toBe('virtio-ts: refused at stream offset 13 (configuration name)');
      expect(o).toEqual(q);
      expect(o.stderr[0]).toBe("Machine type received is 'microvm' and local is 'pc-i440fx-7.2'");
    });

    it('file: URIs: QEMU 7.2 has none; ours takes them as QEMU 8.1 does, for migrate, migrate-incoming and -incoming', async () => {
      const q = await ending('qemu', [...RNG, '-incoming', 'file:/tmp/x.mig']);
      expect(q).toEqual({ code: 1, stderr: ['-incoming file:/tmp/x.mig: unknown migration protocol: file:/tmp/x.mig'] });
      // Ours: a source migrates into a file, a destination loads it with migrate-incoming, a
      // third one with -incoming file: at start-up; both run, with the source's RAM.
      const file = w.path('file-uri.mig');
      const src = await w.start('ours', PC, RNG);
      try {
        await src.cmd(EVENTS_ON);
        expect((await src.cmd({ execute: 'migrate', arguments: { uri: `file:${file}` } })).map(normalize)).toContain('{"return":{}}');
        await pollStatus(src, /"status": "completed"/);
      } finally {
        await src.kill();
      }
      expect(parseSavevm(readFileSync(file)).configuration.machineType).toBe('pc-i440fx-7.2');
      const dst = await w.start('ours', PC, [...RNG, '-incoming', 'defer']);
      try {
        await dst.cmd({ execute: 'migrate-incoming', arguments: { uri: `file:${file}` } });
        await pollRunState(dst, 'running');
      } finally {
        await dst.kill();
      }
      const third = await w.start('ours', PC, [...RNG, '-incoming', `file:${file}`]);
      try {
        await pollRunState(third, 'running');
        expect(normalize((await third.cmd({ execute: 'query-migrate' })).at(-1)!)).toContain('"status":"completed"');
      } finally {
        await third.kill();
      }
    });

    it('-incoming with an unknown protocol fails at start-up', async () => {
      for (const uri of ['bogus', 'tcpx:1']) {
        const q = await ending('qemu', [...RNG, '-incoming', uri]);
        const o = await ending('ours', [...RNG, '-incoming', uri]);
        expect(o).toEqual(q);
        expect(o).toEqual({ code: 1, stderr: [`-incoming ${uri}: unknown migration protocol: ${uri}`] });
      }
    });
  });
}
