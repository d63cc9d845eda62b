// The migration state machines (src/machine/migration.ts) driven through QMP in-process, with a
// fake stream engine and fake channels that the test controls: what happens while a transfer
// is in flight, when it fails or is cancelled, when a load fails or warns, and how monitors share
// one controller. The QEMU-facing shapes are compared with QEMU itself in
// test/cli/migration-qmp.test.ts.
import { describe, expect, it } from 'vitest';
import { VirtIORng } from '../../src/devices/rng.js';
import { MicrovmMachine } from '../../src/machine/microvm.js';
import { MigrationController, countRamPages, savevmEngine, type MigrationChannels, type MigrationEngine, type MigrationLoadResult } from '../../src/machine/migration.js';
import { MmioDriver } from '../../src/driver/mmio-driver.js';
import { saveVm } from '../../src/migration/savevm.js';
import { qmpJson, QmpServer } from '../../src/machine/qmp-server.js';
import { QomObject } from '../../src/machine/qom.js';
import type { RunState } from '../../src/machine/machine.js';

/** A transfer the test finishes by hand. */
interface Pending {
  uri: string;
  bytes?: Uint8Array;
  resolve(bytes?: Uint8Array): void;
  reject(e: Error): void;
  signal: AbortSignal | undefined;
}

function fakeChannels(): MigrationChannels & { pending: Pending[]; refuse?: string } {
  const pending: Pending[] = [];
  const ch: MigrationChannels & { pending: Pending[]; refuse?: string } = {
    pending,
    check: (uri) => (uri.startsWith('tcp:') ? 'error parsing address' : ch.refuse),
    write: (uri, bytes, signal) =>
      new Promise<void>((resolve, reject) => {
        pending.push({ uri, bytes, resolve: () => resolve(), reject, signal });
        signal?.addEventListener('abort', () => reject(new Error('aborted')));
      }),
    read: (uri, signal) =>
      new Promise<Uint8Array>((resolve, reject) => {
        pending.push({ uri, resolve: (b) => resolve(b ?? new Uint8Array()), reject, signal });
        signal?.addEventListener('abort', () => reject(new Error('aborted')));
      }),
  };
  return ch;
}

function fakeEngine(opts: { load?: (b: Uint8Array) => MigrationLoadResult; saveError?: string } = {}): MigrationEngine & { saved: RunState[] } {
  const saved: RunState[] = [];
  return {
    saved,
    save(rs) {
      if (opts.saveError) throw new Error(opts.saveError);
      saved.push(rs);
      return new TextEncoder().encode(`stream:${rs}`);
    },
    load(b) {
      if (opts.load) return opts.load(b);
      const text = new TextDecoder().decode(b);
      if (!text.startsWith('stream:')) throw new Error('Not a migration stream');
      return { warnings: [], runState: text.slice(7) };
    },
  };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

function rig(opts: { runState?: RunState; autostart?: boolean; engine?: MigrationEngine | ((m: MicrovmMachine) => MigrationEngine); channels?: ReturnType<typeof fakeChannels>; fileUri?: boolean } = {}) {
  const machine = new MicrovmMachine({ ramSize: 1 << 20 });
  const rng = new VirtIORng({ memory: machine.sys.ram });
  machine.addDevice(rng, { qom: new QomObject('virtio-rng-device') });
  if (opts.autostart !== undefined) machine.autostart = opts.autostart;
  if (opts.runState) machine.runState = opts.runState;
  const channels = opts.channels ?? fakeChannels();
  const reports: string[] = [];
  let failures = 0;
  const engine = typeof opts.engine === 'function' ? opts.engine(machine) : (opts.engine ?? fakeEngine());
  const migration = new MigrationController(machine, {
    engine,
    channels,
    report: (m) => reports.push(m),
    onIncomingFailure: () => failures++,
    now: () => 1000,
    ...(opts.fileUri ? { fileUri: true } : {}),
  });
  const out: string[] = [];
  const server = new QmpServer(machine, { send: (t) => out.push(t), migration, now: () => 0 });
  server.open();
  server.feed('{"execute":"qmp_capabilities"}');
  out.length = 0;
  /** Lines since the last call, with events reduced to their name and data. */
  const lines = () =>
    out
      .splice(0)
      .join('')
      .split('\r\n')
      .filter(Boolean)
      .map((l) => l.replace(/"timestamp": \{[^}]*\}, /, ''));
  const q = (cmd: string, args?: Record<string, unknown>) => {
    server.feed(JSON.stringify(args ? { execute: cmd, arguments: args } : { execute: cmd }) + '\n');
    return lines();
  };
  const status = () => (server.call('query-migrate') as { status?: string }).status;
  return { machine, rng, channels, engine, server, migration, reports, failures: () => failures, lines, q, status };
}

describe('outgoing migration, in flight', () => {
  it('active while the channel writes, in finish-migrate with the devices stopped; completed and postmigrate once written', async () => {
    const r = rig();
    r.q('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    expect(r.q('migrate', { uri: 'exec:cat > x' })).toEqual(['{"event": "MIGRATION", "data": {"status": "setup"}}', '{"return": {}}']);
    await tick();
    expect(r.channels.pending).toHaveLength(1);
    expect(new TextDecoder().decode(r.channels.pending[0]!.bytes)).toBe('stream:running');
    expect(r.machine.runState).toBe('finish-migrate');
    expect(r.rng.vmRunning).toBe(false);
    expect(r.machine.clock.enabled).toBe(false);
    const active = r.server.call('query-migrate') as Record<string, unknown>;
    expect(Object.keys(active)).toEqual(['expected-downtime', 'status', 'setup-time', 'total-time', 'ram']);
    expect(active['status']).toBe('active');
    r.lines();
    // cont is refused while the migration finishes, as QEMU's.
    expect(r.q('cont')).toEqual(['{"error": {"class": "GenericError", "desc": "Migration is not finalized yet"}}']);
    expect(r.q('migrate', { uri: 'exec:cat > y' })).toEqual(['{"error": {"class": "GenericError", "desc": "There\'s a migration process in progress"}}']);
    expect(r.q('migrate-set-capabilities', { capabilities: [] })).toEqual(['{"error": {"class": "GenericError", "desc": "There\'s a migration process in progress"}}']);
    r.channels.pending[0]!.resolve();
    await tick();
    // No STOP/RESUME: the VM stays stopped after a completed migration.
    expect(r.lines()).toEqual(['{"event": "MIGRATION", "data": {"status": "completed"}}']);
    expect(r.status()).toBe('completed');
    expect(r.machine.runState).toBe('postmigrate');
    expect(r.rng.vmRunning).toBe(false);
  });

  it('the event sequence when the VM ran', async () => {
    const r = rig();
    r.q('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    r.q('migrate', { uri: 'exec:cat > x' });
    await tick();
    r.channels.pending[0]!.resolve();
    await tick();
    expect(r.lines()).toEqual([
      '{"event": "MIGRATION_PASS", "data": {"pass": 1}}',
      '{"event": "MIGRATION", "data": {"status": "active"}}',
      '{"event": "STOP"}',
      '{"event": "MIGRATION_PASS", "data": {"pass": 2}}',
      '{"event": "MIGRATION", "data": {"status": "completed"}}',
    ]);
  });

  it('a channel failure: failed with the error, reported on stderr, and a VM that ran runs again', async () => {
    const r = rig();
    r.q('migrate', { uri: 'exec:cat > /nonexistent/x' });
    await tick();
    r.channels.pending[0]!.reject(new Error('Unable to write to command: Broken pipe'));
    await tick();
    expect(r.server.call('query-migrate')).toEqual({ status: 'failed', 'error-desc': 'Unable to write to command: Broken pipe' });
    expect(r.reports).toEqual(['Unable to write to command: Broken pipe']);
    expect(r.machine.runState).toBe('running');
    expect(r.rng.vmRunning).toBe(true);
    expect(r.lines()).toEqual(['{"event": "STOP"}', '{"event": "RESUME"}']);
    // A failed migration may be retried.
    r.q('migrate', { uri: 'exec:cat > x' });
    expect(r.status()).toBe('setup');
  });

  it('a failure from a stopped VM leaves it in postmigrate; an engine error fails the migration', async () => {
    const r = rig({ runState: 'paused', engine: fakeEngine({ saveError: 'savevm: device is broken' }) });
    r.q('migrate', { uri: 'exec:cat > x' });
    await tick();
    expect(r.channels.pending).toHaveLength(0);
    expect(r.server.call('query-migrate')).toEqual({ status: 'failed', 'error-desc': 'savevm: device is broken' });
    expect(r.machine.runState).toBe('postmigrate');
    expect(r.lines()).toEqual([]);
  });

  it('migrate_cancel during the write: cancelling, the transfer aborted, cancelled, the VM runs again', async () => {
    const r = rig();
    r.q('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    r.q('migrate', { uri: 'exec:cat > x' });
    await tick();
    r.lines();
    const p = r.channels.pending[0]!;
    expect(r.q('migrate_cancel')).toEqual(['{"event": "MIGRATION", "data": {"status": "cancelling"}}', '{"return": {}}']);
    expect(p.signal?.aborted).toBe(true);
    await tick();
    expect(r.status()).toBe('cancelled');
    expect(r.lines()).toEqual(['{"event": "RESUME"}', '{"event": "MIGRATION", "data": {"status": "cancelled"}}']);
    expect(r.machine.runState).toBe('running');
    expect(r.reports).toEqual([]);
  });

  it('migrate_cancel right after migrate (still in setup) cancels before anything is saved', async () => {
    const engine = fakeEngine();
    const r = rig({ engine });
    r.server.feed('{"execute":"migrate","arguments":{"uri":"exec:cat > x"}}{"execute":"migrate_cancel"}');
    expect(r.status()).toBe('cancelling');
    await tick();
    expect(r.status()).toBe('cancelled');
    expect(engine.saved).toEqual([]);
    expect(r.machine.runState).toBe('running');
  });

  it('the stream carries the run state the VM had: prelaunch stays stopped without STOP', async () => {
    const engine = fakeEngine();
    const r = rig({ runState: 'prelaunch', engine });
    r.q('migrate', { uri: 'exec:cat > x' });
    await tick();
    expect(engine.saved).toEqual(['prelaunch']);
    r.channels.pending[0]!.resolve();
    await tick();
    expect(r.machine.runState).toBe('postmigrate');
    expect(r.lines()).toEqual([]);
  });

  it('channel refusals are synchronous errors kept in query-migrate; missing engine or channels say so', async () => {
    const r = rig();
    expect(r.q('migrate', { uri: 'tcp:1.2.3.4:5' })).toEqual(['{"error": {"class": "GenericError", "desc": "error parsing address"}}']);
    expect(r.server.call('query-migrate')).toEqual({ status: 'failed', 'error-desc': 'error parsing address' });

    const machine = new MicrovmMachine({ ramSize: 1 << 20 });
    const bare = new QmpServer(machine, { send: () => undefined });
    expect(() => bare.call('migrate', { uri: 'exec:cat > x' })).toThrow('virtio-ts: no migration channels are configured');
    const noEngine = new QmpServer(machine, { send: () => undefined, migration: { channels: fakeChannels() } });
    noEngine.call('migrate', { uri: 'exec:cat > x' });
    await tick();
    expect(noEngine.call('query-migrate')).toEqual({ status: 'failed', 'error-desc': 'virtio-ts: no migration stream engine is configured' });
    expect(machine.runState).toBe('running');
  });

  it('only the events capability can be switched on; blk/inc are refused', () => {
    const r = rig();
    expect(r.q('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }, { capability: 'xbzrle', state: true }] })).toEqual([
      '{"error": {"class": "GenericError", "desc": "virtio-ts does not support the migration capability \'xbzrle\'"}}',
    ]);
    // All or nothing: events did not change.
    expect(r.migration.capability('events')).toBe(false);
    r.q('migrate-set-capabilities', { capabilities: [{ capability: 'xbzrle', state: false }, { capability: 'events', state: true }] });
    expect(r.migration.capability('events')).toBe(true);
    expect(r.q('migrate', { uri: 'exec:cat > x', blk: true })).toEqual(['{"error": {"class": "GenericError", "desc": "virtio-ts does not support block migration (blk/inc)"}}']);
    expect(r.q('migrate', { uri: 'exec:cat > x', inc: false, blk: false, detach: true })).toEqual(['{"event": "MIGRATION", "data": {"status": "setup"}}', '{"return": {}}']);
  });

  it('file: is refused as QEMU 7.2 refuses it, unless the embedder allows it', async () => {
    const strict = rig();
    expect(strict.q('migrate', { uri: 'file:/tmp/x' })).toEqual(['{"error": {"class": "GenericError", "desc": "Parameter \'uri\' expects a valid migration protocol"}}']);
    const allowed = rig({ fileUri: true });
    expect(allowed.q('migrate', { uri: 'file:/tmp/x' })).toEqual(['{"return": {}}']);
    await tick();
    expect(allowed.channels.pending[0]!.uri).toBe('file:/tmp/x');
  });
});

describe('incoming migration', () => {
  it('waits for the stream in inmigrate (status none), then loads it and starts the VM', async () => {
    const r = rig({ runState: 'inmigrate' });
    expect(r.rng.vmRunning).toBe(false);
    expect(r.q('migrate-incoming', { uri: 'exec:cat x' })).toEqual(['{"event": "MIGRATION", "data": {"status": "setup"}}', '{"return": {}}']);
    expect(r.server.call('query-migrate')).toEqual({});
    r.channels.pending[0]!.resolve(new TextEncoder().encode('stream:running'));
    await tick();
    expect(r.server.call('query-migrate')).toEqual({ status: 'completed' });
    expect(r.machine.runState).toBe('running');
    expect(r.rng.vmRunning).toBe(true);
    expect(r.lines()).toEqual(['{"event": "RESUME"}']);
  });

  it('a load failure: failed, QEMU\'s two messages, and the exit callback', async () => {
    const r = rig({ runState: 'inmigrate' });
    r.q('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    r.q('migrate-incoming', { uri: 'exec:cat x' });
    r.lines();
    r.channels.pending[0]!.resolve(new TextEncoder().encode('garbage'));
    await tick();
    expect(r.reports).toEqual(['Not a migration stream', 'load of migration failed: Invalid argument']);
    expect(r.failures()).toBe(1);
    expect(r.lines()).toEqual(['{"event": "MIGRATION", "data": {"status": "active"}}', '{"event": "MIGRATION", "data": {"status": "failed"}}']);
    expect(r.machine.runState).toBe('inmigrate');
  });

  it('a channel failure is an I/O error; an error may name its own errno text', async () => {
    const r = rig({ runState: 'inmigrate' });
    r.q('migrate-incoming', { uri: 'exec:false' });
    r.channels.pending[0]!.reject(new Error('Unable to read from command: it exited with status 1'));
    await tick();
    expect(r.reports).toEqual(['Unable to read from command: it exited with status 1', 'load of migration failed: Input/output error']);
    expect(r.failures()).toBe(1);

    const e = Object.assign(new Error('Missing section footer for ram'), { strerror: 'Input/output error' });
    const s = rig({ runState: 'inmigrate', engine: fakeEngine({ load: () => { throw e; } }) });
    s.q('migrate-incoming', { uri: 'exec:cat x' });
    s.channels.pending[0]!.resolve(new Uint8Array(4));
    await tick();
    expect(s.reports).toEqual(['Missing section footer for ram', 'load of migration failed: Input/output error']);
  });

  it('warnings go to the report; an unknown received run state fails the load', async () => {
    const warn = rig({ runState: 'inmigrate', engine: fakeEngine({ load: () => ({ warnings: ['Expected vmdescription section, but got 0'], runState: 'paused' }) }) });
    warn.q('migrate-incoming', { uri: 'exec:cat x' });
    warn.channels.pending[0]!.resolve(new Uint8Array(1));
    await tick();
    expect(warn.reports).toEqual(['Expected vmdescription section, but got 0']);
    expect(warn.machine.runState).toBe('paused');

    const bad = rig({ runState: 'inmigrate', engine: fakeEngine({ load: () => ({ warnings: [], runState: 'flying' }) }) });
    bad.q('migrate-incoming', { uri: 'exec:cat x' });
    bad.channels.pending[0]!.resolve(new Uint8Array(1));
    await tick();
    expect(bad.reports).toEqual(['invalid parameter value: flying', 'load of migration failed: Invalid argument']);
    expect(bad.machine.runState).toBe('inmigrate');
  });

  it('no globalstate in the stream: autostart decides (running, or paused with -S)', async () => {
    for (const autostart of [true, false]) {
      const r = rig({ runState: 'inmigrate', autostart, engine: fakeEngine({ load: () => ({ warnings: [] }) }) });
      r.q('migrate-incoming', { uri: 'exec:cat x' });
      r.channels.pending[0]!.resolve(new Uint8Array(1));
      await tick();
      expect(r.machine.runState).toBe(autostart ? 'running' : 'paused');
    }
  });

  it('a device request made available before the migration is processed when the destination starts', async () => {
    // Source: a driver posts a request and never notifies; the stream carries the ring in RAM.
    const src = rig();
    const drv = new MmioDriver(src.machine.transports[src.machine.transportCount - 1]!, src.machine.sys.ram);
    drv.init(0n);
    const ring = drv.setupQueue(0, { num: 8, base: 0x10000, align: 4096 });
    drv.driverOk();
    ring.add([{ addr: 0x20000, len: 16, write: true }]);
    const stream = saveVm(src.machine, { runState: 'running' });

    const r = rig({ runState: 'inmigrate', engine: (m) => savevmEngine(m) });
    const kicks: number[] = [];
    const orig = r.rng.queueNotify.bind(r.rng);
    r.rng.queueNotify = (n: number) => {
      kicks.push(n);
      orig(n);
    };
    r.q('migrate-incoming', { uri: 'exec:cat x' });
    expect(r.rng.vq[0]!.usedIdx).toBe(0);
    r.channels.pending[0]!.resolve(stream);
    await tick();
    expect(r.machine.runState).toBe('running');
    // QEMU with ioeventfd kicks every queue when the VM starts: the request completes.
    expect(kicks).toEqual([0]);
    expect(r.machine.sys.ram.read16(ring.addrs.used + 2)).toBe(1);
  });
});

describe('one controller per machine', () => {
  it('two monitors share the migration state and both get MIGRATION events', async () => {
    const machine = new MicrovmMachine({ ramSize: 1 << 20 });
    const channels = fakeChannels();
    const migration = new MigrationController(machine, { engine: fakeEngine(), channels, now: () => 0 });
    const outs: string[][] = [[], []];
    const servers = outs.map((out) => new QmpServer(machine, { send: (t) => out.push(t), migration, now: () => 0 }));
    for (const s of servers) {
      s.open();
      s.feed('{"execute":"qmp_capabilities"}');
    }
    servers[0]!.call('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    servers[1]!.call('migrate', { uri: 'exec:cat > x' });
    expect(servers[0]!.call('query-migrate')).toEqual({ status: 'setup' });
    await tick();
    channels.pending[0]!.resolve();
    await tick();
    for (const out of outs) expect(out.join('').match(/"event": "MIGRATION"/g)).toHaveLength(3);
    // The server did not build the controller, so disposing it leaves the migration alone.
    servers[0]!.dispose();
    expect(servers[1]!.call('query-migrate')).toMatchObject({ status: 'completed' });
  });
});

describe('helpers', () => {
  it('counts zero and non-zero pages once per RAM block', () => {
    const m = new MicrovmMachine({ ramSize: 1 << 20 });
    const before = countRamPages(m.sys.ram);
    m.writeb(0x5000, 1);
    m.writeb(0x5fff, 1);
    m.writeb(0x7003, 1);
    const after = countRamPages(m.sys.ram);
    expect(after.total).toBe(before.total);
    expect(after.normal - before.normal).toBe(2);
    expect(after.duplicate + after.normal).toBe(before.duplicate + before.normal);
  });

  it("prints doubles as QEMU's %.17g", () => {
    // The value QEMU printed in a real query-migrate reply.
    expect(qmpJson({ mbps: 218.37120000000002 })).toBe('{"mbps": 218.37120000000002}');
    expect(qmpJson({ mbps: 218.3712 })).toBe('{"mbps": 218.37119999999999}');
    expect(qmpJson([0, 1.5, 0.1, 1e-5, 123456789012345680000, 3])).toBe('[0, 1.5, 0.10000000000000001, 1.0000000000000001e-05, 1.2345678901234568e+20, 3]');
  });
});
