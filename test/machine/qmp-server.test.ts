// QMP as QEMU 7.2 answers it (src/machine/qmp-server.ts). Expected lines are QEMU's own output
// for the same input (checked against qemu-system-x86_64 7.2.22), except the version fields.
import { describe, expect, it } from 'vitest';
import { VirtIORng } from '../../src/devices/rng.js';
import { MicrovmMachine } from '../../src/machine/microvm.js';
import { PcMachine } from '../../src/machine/pc.js';
import { QomObject } from '../../src/machine/qom.js';
import { parseQmpJson, qmpJson, QmpServer } from '../../src/machine/qmp-server.js';

function setup(machine: MicrovmMachine | PcMachine = new MicrovmMachine()) {
  const out: string[] = [];
  let quits = 0;
  const server = new QmpServer(machine, { send: (t) => out.push(t), onQuit: () => quits++, now: () => 1_700_000_000_123.456 });
  server.open();
  const lines = () => out.splice(0).join('').split('\r\n').slice(0, -1);
  lines(); // the greeting
  return { machine, server, lines, quits: () => quits };
}

describe('QMP', () => {
  it("greets with QEMU 7.2's shape and CRLF line ends", () => {
    const out: string[] = [];
    new QmpServer(new MicrovmMachine(), { send: (t) => out.push(t) }).open();
    expect(out).toEqual(['{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "virtio-ts"}, "capabilities": ["oob"]}}\r\n']);
  });

  it('negotiates capabilities first, echoes ids where QEMU puts them', () => {
    const { server, lines } = setup();
    lines();
    server.feed('{"execute":"query-status"}\n{"execute":"qmp_capabilities","id":7}\n{"execute":"qmp_capabilities"}\n{"execute":"foo","id":"x"}\n');
    expect(lines()).toEqual([
      '{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with \'qmp_capabilities\'"}}',
      '{"return": {}, "id": 7}',
      '{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}',
      '{"id": "x", "error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}}',
    ]);
  });

  it('checks requests and arguments with QEMU messages', () => {
    const { server, lines } = setup();
    server.feed('{"execute":"qmp_capabilities"}');
    lines();
    server.feed(
      [
        '{"execute":"query-status","arguments":{"a":1}}',
        '{"execute":"qom-list"}',
        '{"execute":"qom-list","arguments":{"path":1}}',
        '{"foo":1}',
        '[1]',
        '{"execute":1}',
        '{"arguments":{}}',
        '{bad json}',
        '}',
        '{"execute":"query-status","arguments":[]}',
        '{"exec-oob":"query-status"}',
      ].join('\n') + '\n',
    );
    expect(lines()).toEqual([
      '{"error": {"class": "GenericError", "desc": "Parameter \'a\' is unexpected"}}',
      '{"error": {"class": "GenericError", "desc": "Parameter \'path\' is missing"}}',
      '{"error": {"class": "GenericError", "desc": "Invalid parameter type for \'path\', expected: string"}}',
      '{"error": {"class": "GenericError", "desc": "QMP input member \'foo\' is unexpected"}}',
      '{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}',
      '{"error": {"class": "GenericError", "desc": "QMP input member \'execute\' must be a string"}}',
      '{"error": {"class": "GenericError", "desc": "QMP input lacks member \'execute\'"}}',
      '{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword \'bad\'"}}',
      '{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}',
      '{"error": {"class": "GenericError", "desc": "QMP input member \'arguments\' must be an object"}}',
      '{"error": {"class": "GenericError", "desc": "QMP input member \'exec-oob\' is unexpected"}}',
    ]);
  });

  it("accepts single quotes (libqtest's style), objects split across chunks and several per line", () => {
    const { server, lines } = setup();
    server.feed("{ 'execute': 'qmp_capabilities', 'arguments': { 'enable': [ 'oob' ] } }");
    server.feed('{"execute":\n"query-st');
    server.feed('atus"}{"exec-oob":"query-status","id":{"a":"\\u00e9/"}}\n');
    expect(lines()).toEqual([
      '{"return": {}}',
      '{"return": {"status": "running", "singlestep": false, "running": true}}',
      '{"return": {"status": "running", "singlestep": false, "running": true}, "id": {"a": "\\u00E9/"}}',
    ]);
  });

  it('stop/cont change the run state with STOP/RESUME events; quit sends SHUTDOWN then returns', () => {
    const { server, lines, machine, quits } = setup();
    server.feed('{"execute":"qmp_capabilities"}{"execute":"stop"}{"execute":"query-status"}{"execute":"stop"}{"execute":"cont"}{"execute":"cont"}');
    const ts = '{"seconds": 1700000000, "microseconds": 123456}';
    expect(lines()).toEqual([
      '{"return": {}}',
      `{"timestamp": ${ts}, "event": "STOP"}`,
      '{"return": {}}',
      '{"return": {"status": "paused", "singlestep": false, "running": false}}',
      '{"return": {}}',
      `{"timestamp": ${ts}, "event": "RESUME"}`,
      '{"return": {}}',
      '{"return": {}}',
    ]);
    expect(machine.runState).toBe('running');
    server.feed('{"execute":"quit"}{"execute":"query-status"}');
    expect(lines()).toEqual([`{"timestamp": ${ts}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}`, '{"return": {}}']);
    expect(quits()).toBe(1);
  });

  it('-S: prelaunch until cont; -incoming defer: inmigrate, and cont does not start it', () => {
    const m = new MicrovmMachine();
    m.runState = 'prelaunch';
    const { server, lines } = setup(m);
    server.feed('{"execute":"qmp_capabilities"}{"execute":"query-status"}{"execute":"cont"}{"execute":"query-status"}');
    expect(lines().slice(1)).toEqual([
      '{"return": {"status": "prelaunch", "singlestep": false, "running": false}}',
      expect.stringContaining('"event": "RESUME"'),
      '{"return": {}}',
      '{"return": {"status": "running", "singlestep": false, "running": true}}',
    ]);
    m.runState = 'inmigrate';
    server.feed('{"execute":"cont"}{"execute":"query-status"}');
    expect(lines()).toEqual(['{"return": {}}', '{"return": {"status": "inmigrate", "singlestep": false, "running": false}}']);
  });

  it('qom-list finds the unnamed second IOAPIC of microvm, and resolves partial paths', () => {
    const m = new MicrovmMachine();
    m.addDevice(new VirtIORng({ memory: m.sys.ram }), { qom: new QomObject('virtio-rng-device') });
    m.addDevice(new VirtIORng({ memory: m.sys.ram }), { qom: new QomObject('virtio-rng-device'), id: 'rng1' });
    const { server, lines } = setup(m);
    server.feed('{"execute":"qmp_capabilities"}');
    lines();
    server.feed(
      [
        '{"execute":"qom-list","arguments":{"path":"/machine/unattached"}}',
        '{"execute":"qom-list","arguments":{"path":"/machine/peripheral-anon"}}',
        '{"execute":"qom-list","arguments":{"path":"/machine/peripheral"}}',
        '{"execute":"qom-list","arguments":{"path":"/nonexist"}}',
        '{"execute":"qom-list","arguments":{"path":"device[0]"}}',
        '{"execute":"qom-get","arguments":{"path":"/machine/unattached/device[3]","property":"type"}}',
        '{"execute":"qom-list","arguments":{"path":"/"}}',
      ].join(''),
    );
    const [unattached, anon, named, missing, ambiguous, type, root] = lines();
    const entries = (JSON.parse(unattached!) as { return: { name: string; type: string }[] }).return;
    expect(entries.filter((e) => e.type === 'child<ioapic>')).toEqual([{ name: 'device[3]', type: 'child<ioapic>' }]);
    expect(entries.filter((e) => e.type === 'child<virtio-mmio>')).toHaveLength(24);
    expect(entries.filter((e) => e.type === 'child<irq>')).toHaveLength(28);
    expect(anon).toBe('{"return": [{"name": "type", "type": "string"}, {"name": "device[0]", "type": "child<virtio-rng-device>"}]}');
    expect(named).toBe('{"return": [{"name": "type", "type": "string"}, {"name": "rng1", "type": "child<virtio-rng-device>"}]}');
    expect(missing).toBe('{"error": {"class": "DeviceNotFound", "desc": "Device \'/nonexist\' not found"}}');
    expect(ambiguous).toBe('{"error": {"class": "GenericError", "desc": "Path \'device[0]\' is ambiguous"}}');
    expect(type).toBe('{"return": "ioapic"}');
    expect(root).toBe('{"return": [{"name": "type", "type": "string"}, {"name": "objects", "type": "child<container>"}, {"name": "chardevs", "type": "child<container>"}, {"name": "machine", "type": "child<microvm-machine>"}]}');
  });

  it('pc: the IOAPIC lives under /machine/i440fx', () => {
    const { server, lines } = setup(new PcMachine());
    server.feed('{"execute":"qmp_capabilities"}{"execute":"qom-list","arguments":{"path":"ioapic"}}');
    const list = (JSON.parse(lines()[1]!) as { return: { name: string }[] }).return.map((e) => e.name);
    expect(list).toContain('unnamed-gpio-in[23]');
    server.feed('{"execute":"qom-get","arguments":{"path":"/machine/i440fx/ioapic","property":"type"}}');
    expect(lines()).toEqual(['{"return": "ioapic"}']);
  });

  it('migration commands: query-migrate is empty before any, migrate-incoming needs -incoming (QEMU 7.2 messages)', () => {
    const { server, lines } = setup();
    server.feed('{"execute":"qmp_capabilities"}{"execute":"query-migrate"}{"execute":"migrate-incoming","arguments":{"uri":"exec:cat /tmp/x"}}{"execute":"migrate_set_speed"}');
    expect(lines().slice(1)).toEqual([
      '{"return": {}}',
      '{"error": {"class": "GenericError", "desc": "\'-incoming\' was not specified on the command line"}}',
      '{"error": {"class": "CommandNotFound", "desc": "The command migrate_set_speed has not been found"}}',
    ]);
  });

  it('stop/cont around inmigrate only change autostart; cont is refused after shutdown', () => {
    const m = new MicrovmMachine();
    m.runState = 'inmigrate';
    const { server, lines } = setup(m);
    server.feed('{"execute":"qmp_capabilities"}{"execute":"stop"}');
    lines();
    expect(m.autostart).toBe(false);
    server.feed('{"execute":"cont"}');
    expect(m.autostart).toBe(true);
    expect(m.runState).toBe('inmigrate');
    m.runState = 'shutdown';
    server.feed('{"execute":"cont"}');
    expect(lines()).toEqual(['{"return": {}}', '{"error": {"class": "GenericError", "desc": "Resetting the Virtual Machine is required"}}']);
  });

  it('system_reset resets the machine and sends RESET', () => {
    const m = new PcMachine();
    m.outl(0xcf8, 0x8000_0860);
    m.outb(0xcfc, 11);
    const { server, lines } = setup(m);
    server.feed('{"execute":"qmp_capabilities"}{"execute":"system_reset"}');
    expect(lines().slice(1)).toEqual([expect.stringContaining('"event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}'), '{"return": {}}']);
    m.outl(0xcf8, 0x8000_0860);
    expect(m.inb(0xcfc)).toBe(0x80);
  });

  it('JSON in and out', () => {
    expect(qmpJson({ a: [1, 'x'], b: {}, c: [], d: true, e: null, f: 'é"\\\n' })).toBe('{"a": [1, "x"], "b": {}, "c": [], "d": true, "e": null, "f": "\\u00E9\\"\\\\\\n"}');
    expect(parseQmpJson("{'a': 'it\\'s', \"b\": [1.5e3, -2, true]}")).toEqual({ a: "it's", b: [1500, -2, true] });
    expect(() => parseQmpJson('{"a": nope}')).toThrow("invalid keyword 'nope'");
  });
});
