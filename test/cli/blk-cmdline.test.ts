// virtio-blk's command line against the real binary: the same bad -drive / -blockdev / -device
// arguments given to qemu-system-x86_64 7.2 and to virtio-ts-qemu must fail with the same message
// and exit status 1; good ones must start. Without QEMU, the parsing and building is still tested
// in-process against the messages recorded from it.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CmdlineError, parseQemuCommandLine } from '../../src/machine/cmdline.js';
import { buildMachine } from '../../src/machine/qemu-machine.js';
import { MemoryBlockBackend } from '../../src/devices/blk/backends/memory.js';
import { VirtIOBlock } from '../../src/devices/blk/blk.js';
import { QEMU_COMMAND, qemuInstalled } from '../driver/impls.js';
import { buildOurProgram } from '../oracle/support.js';

let dir: string;
let disk: string;
let program: string | undefined;
let cleanup: (() => void) | undefined;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'virtio-ts-blkcl-'));
  disk = join(dir, 'd.raw');
  writeFileSync(disk, new Uint8Array(1 << 20));
  writeFileSync(join(dir, 'd2.raw'), new Uint8Array(1 << 20));
  const built = await buildOurProgram();
  program = built.program;
  cleanup = built.cleanup;
}, 60_000);
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  cleanup?.();
  rmSync(dir, { recursive: true, force: true });
});

/** Run `cmd args`, quit it through QMP on stdin if it starts; resolve with the exit code and stderr. */
function run(cmd: readonly string[], args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd[0]!, [...cmd.slice(1), '-nodefaults', '-display', 'none', '-accel', 'tcg', '-S', '-qmp', 'stdio', ...args], { stdio: ['pipe', 'ignore', 'pipe'] });
    children.add(child);
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.stdin!.on('error', () => undefined);
    child.stdin!.write('{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n');
    const deadline = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('close', (code) => {
      clearTimeout(deadline);
      resolve({ code, stderr: err });
    });
  });
}

/** The message, with the program name and paths normalised. */
const norm = (s: string, prog: string): string => s.split(`${prog}: `).join('PROG: ').split(dir).join('DIR').trimEnd();

const D = () => `if=none,id=d0,file=${disk},format=raw`;
const disk2 = () => join(dir, 'd2.raw');

/** Command lines that must fail, with the message QEMU 7.2 prints (after "PROG: "). */
const BAD: [string, () => string[], string][] = [
  ['no drive', () => ['-device', 'virtio-blk-pci'], '-device virtio-blk-pci: drive property not set'],
  ['unknown drive', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=nope'], "-device virtio-blk-pci,drive=nope: Property 'virtio-blk-device.drive' can't find value 'nope'"],
  ['drive used twice', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0', '-device', 'virtio-blk-pci,drive=d0'], "-device virtio-blk-pci,drive=d0: Drive 'd0' is already in use by another device"],
  ['empty drive', () => ['-drive', 'if=none,id=d0', '-device', 'virtio-blk-pci,drive=d0'], '-device virtio-blk-pci,drive=d0: Device needs media, but drive is empty'],
  ['missing file', () => ['-drive', `if=none,id=d0,file=${join(dir, 'nope.raw')},format=raw`], `-drive if=none,id=d0,file=DIR/nope.raw,format=raw: Could not open 'DIR/nope.raw': No such file or directory`],
  ['format without file', () => ['-drive', 'if=none,id=d0,format=raw'], '-drive if=none,id=d0,format=raw: A block device must be specified for "file"'],
  ['bad cache', () => ['-drive', `${D()},cache=foo`], `-drive ${'if=none,id=d0,file=DIR/d.raw,format=raw'},cache=foo: invalid cache option`],
  ['bad discard', () => ['-drive', `${D()},discard=foo`], `-drive if=none,id=d0,file=DIR/d.raw,format=raw,discard=foo: Invalid discard option`],
  ['aio=native without O_DIRECT', () => ['-drive', `${D()},aio=native`], '-drive if=none,id=d0,file=DIR/d.raw,format=raw,aio=native: aio=native was specified, but it requires cache.direct=on, which was not specified.'],
  ['unknown protocol option', () => ['-drive', `${D()},file.foo=1`], "-drive if=none,id=d0,file=DIR/d.raw,format=raw,file.foo=1: Block protocol 'file' doesn't support the option 'foo'"],
  ['unknown null-co option', () => ['-drive', 'if=none,id=d0,file=null-co://,format=raw,file.foo=1'], "-drive if=none,id=d0,file=null-co://,format=raw,file.foo=1: Block protocol 'null-co' doesn't support the option 'foo'"],
  ['rerror=enospc', () => ['-drive', `${D()},rerror=enospc`], "-drive if=none,id=d0,file=DIR/d.raw,format=raw,rerror=enospc: 'enospc' invalid read error action"],
  ['logical block size not a power of two', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,logical_block_size=1000'], "-device virtio-blk-pci,drive=d0,logical_block_size=1000: Property .logical_block_size doesn't take value '1000', it's not a power of 2"],
  ['logical block size too small', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,logical_block_size=256'], "-device virtio-blk-pci,drive=d0,logical_block_size=256: Property .logical_block_size doesn't take value 256 (minimum: 512, maximum: 2097152)"],
  ['logical block size not a size', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,logical_block_size=foo'], "-device virtio-blk-pci,drive=d0,logical_block_size=foo: Parameter 'logical_block_size' expects size"],
  ['logical > physical', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,logical_block_size=4096'], '-device virtio-blk-pci,drive=d0,logical_block_size=4096: logical_block_size > physical_block_size not supported'],
  ['min_io_size not a multiple', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,min_io_size=100'], '-device virtio-blk-pci,drive=d0,min_io_size=100: min_io_size must be a multiple of logical_block_size'],
  ['min_io_size too large', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,min_io_size=5G'], "-device virtio-blk-pci,drive=d0,min_io_size=5G: Property virtio-blk-device.min_io_size doesn't take value 5368709120 (maximum: 4294967295)"],
  ['discard_granularity not a multiple', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,discard_granularity=100'], '-device virtio-blk-pci,drive=d0,discard_granularity=100: discard_granularity must be a multiple of logical_block_size'],
  ['queue-size 2', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,queue-size=2'], '-device virtio-blk-pci,drive=d0,queue-size=2: invalid queue-size property (2), must be > 2'],
  ['queue-size 100', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,queue-size=100'], '-device virtio-blk-pci,drive=d0,queue-size=100: invalid queue-size property (100), must be a power of 2 (max 1024)'],
  ['queue-size 70000', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,queue-size=70000'], "-device virtio-blk-pci,drive=d0,queue-size=70000: Parameter 'queue-size' expects uint16_t"],
  ['num-queues 0', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,num-queues=0'], '-device virtio-blk-pci,drive=d0,num-queues=0: num-queues property must be larger than 0'],
  ['max-discard-sectors 0', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,max-discard-sectors=0'], '-device virtio-blk-pci,drive=d0,max-discard-sectors=0: invalid max-discard-sectors property (0), must be between 1 and 4194303'],
  ['cyls 0', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,cyls=0,heads=1,secs=1'], '-device virtio-blk-pci,drive=d0,cyls=0,heads=1,secs=1: cyls must be between 1 and 65535'],
  ['heads missing', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,cyls=1'], '-device virtio-blk-pci,drive=d0,cyls=1: heads must be between 1 and 255'],
  ['write-cache maybe', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,write-cache=maybe'], "-device virtio-blk-pci,drive=d0,write-cache=maybe: Parameter 'write-cache' does not accept value 'maybe'"],
  ['scsi on a modern device', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,scsi=on'], '-device virtio-blk-pci,drive=d0,scsi=on: Please set scsi=off for virtio-blk devices in order to use virtio 1.0'],
  ['blk on virtio-mmio on pc', () => ['-drive', D(), '-device', 'virtio-blk-device,drive=d0'], "-device virtio-blk-device,drive=d0: No 'virtio-bus' bus found for device 'virtio-blk-device'"],
  ['blockdev without node-name', () => ['-blockdev', `driver=file,filename=${disk}`], "-blockdev driver=file,filename=DIR/d.raw: 'node-name' must be specified for the root node"],
  ['blockdev file without filename', () => ['-blockdev', 'driver=file,node-name=f0'], "-blockdev driver=file,node-name=f0: Parameter 'filename' is missing"],
  ['blockdev unknown option', () => ['-blockdev', `driver=file,node-name=f0,filename=${disk},foo=1`], "-blockdev driver=file,node-name=f0,filename=DIR/d.raw,foo=1: Parameter 'foo' is unexpected"],
  ['blockdev unknown node reference', () => ['-blockdev', 'driver=raw,node-name=r0,file=nope'], "-blockdev driver=raw,node-name=r0,file=nope: Cannot find device='nope' nor node-name='nope'"],
  ['blockdev unknown driver', () => ['-blockdev', 'driver=bogus,node-name=x'], "-blockdev driver=bogus,node-name=x: Parameter 'driver' does not accept value 'bogus'"],
  ['blockdev null-co size with suffix', () => ['-blockdev', 'driver=null-co,node-name=n0,size=1M'], "-blockdev driver=null-co,node-name=n0,size=1M: Parameter 'size' expects integer"],
  ['blockdev duplicate node', () => ['-blockdev', 'driver=null-co,node-name=n0', '-blockdev', 'driver=null-co,node-name=n0'], "-blockdev driver=null-co,node-name=n0: Duplicate nodes with node-name='n0'"],
  ['drive id equal to a node name', () => ['-blockdev', 'driver=null-co,node-name=n0', '-drive', 'if=none,id=n0,file=null-co://,format=raw'], "-drive if=none,id=n0,file=null-co://,format=raw: Device name 'n0' conflicts with an existing node name"],
  ['writable raw over a read-only file node', () => ['-blockdev', `driver=file,node-name=f0,filename=${disk},read-only=on`, '-blockdev', 'driver=raw,node-name=r0,file=f0', '-device', 'virtio-blk-pci,drive=r0'], '-device virtio-blk-pci,drive=r0: Block node is read-only'],
  ['two writers of one file', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0', '-drive', `if=none,id=d1,file=${disk},format=raw`, '-device', 'virtio-blk-pci,drive=d1'], '-device virtio-blk-pci,drive=d1: Failed to get "write" lock\nIs another process using the image [DIR/d.raw]?'],
  ['a reader joining a writer', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0', '-drive', `if=none,id=d1,file=${disk},format=raw,readonly=on`, '-device', 'virtio-blk-pci,drive=d1'], '-device virtio-blk-pci,drive=d1: Failed to get shared "write" lock\nIs another process using the image [DIR/d.raw]?'],
  ['a writer joining a reader', () => ['-drive', `${D()},readonly=on`, '-device', 'virtio-blk-pci,drive=d0', '-drive', `if=none,id=d1,file=${disk},format=raw`, '-device', 'virtio-blk-pci,drive=d1'], '-device virtio-blk-pci,drive=d1: Failed to get "write" lock\nIs another process using the image [DIR/d.raw]?'],
  ['an iothread that does not exist', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,iothread=nope'], "-device virtio-blk-pci,drive=d0,iothread=nope: Device 'nope' not found"],
  ['a node used by two devices', () => ['-blockdev', `driver=file,node-name=f0,filename=${disk}`, '-device', 'virtio-blk-pci,drive=f0', '-device', 'virtio-blk-pci,drive=f0'], "-device virtio-blk-pci,drive=f0: Permission conflict on node 'f0': permissions 'write' are both required by block device '/machine/peripheral-anon/device[0]/virtio-backend' (uses node 'f0' as 'root' child) and unshared by block device '/machine/peripheral-anon/device[1]/virtio-backend' (uses node 'f0' as 'root' child)."],
];

/** Command lines that must start (on both). */
const GOOD: [string, () => string[]][] = [
  ['file drive with cache modes, two read-only users of one file, two sharing writers', () => ['-drive', `${D()},cache=none`, '-device', 'virtio-blk-pci,drive=d0,share-rw=on', '-drive', `if=none,id=d1,file=${disk},format=raw,cache=unsafe`, '-device', 'virtio-blk-pci,drive=d1,share-rw=on', '-drive', `if=none,id=d2,file=${disk2()},format=raw,readonly=on`, '-device', 'virtio-blk-pci,drive=d2', '-drive', `if=none,id=d3,file=${disk2()},format=raw,readonly=on,cache=writethrough`, '-device', 'virtio-blk-pci,drive=d3']],
  ['null-co with its options', () => ['-drive', 'if=none,id=d0,file=null-co://,file.read-zeroes=on,file.size=1M,file.latency-ns=1000,format=raw', '-device', 'virtio-blk-pci,drive=d0,num-queues=2,queue-size=64,serial=abc']],
  ['blockdev raw over file, null-co in JSON', () => ['-blockdev', `driver=file,node-name=f0,filename=${disk}`, '-blockdev', 'driver=raw,node-name=r0,file=f0', '-device', 'virtio-blk-pci,drive=r0', '-blockdev', '{"driver":"null-co","node-name":"n0","size":1048576,"read-zeroes":true}', '-device', 'virtio-blk-pci,drive=n0,disable-modern=on']],
  ['legacy SCSI property', () => ['-drive', D(), '-device', 'virtio-blk-pci,drive=d0,scsi=on,disable-modern=on,logical_block_size=4k,physical_block_size=4k,min_io_size=8k,class=0x0180']],
];

describe('virtio-blk command line, beside qemu-system-x86_64', () => {
  const haveQemu = qemuInstalled();
  for (const [label, args, msg] of BAD) {
    it(`refused: ${label}`, async () => {
      const ours = await run([process.execPath, program!], ['-M', 'pc', ...args()]);
      expect(ours.code, norm(ours.stderr, 'virtio-ts-qemu')).toBe(1);
      expect(norm(ours.stderr, 'virtio-ts-qemu')).toBe(`PROG: ${msg}`);
      if (haveQemu) {
        const q = await run(QEMU_COMMAND, ['-M', 'pc', ...args()]);
        expect(q.code).toBe(1);
        expect(norm(q.stderr, 'qemu-system-x86_64')).toBe(`PROG: ${msg}`);
      }
    }, 30_000);
  }
  for (const [label, args] of GOOD) {
    it(`accepted: ${label}`, async () => {
      const ours = await run([process.execPath, program!], ['-M', 'pc', ...args()]);
      expect([ours.code, ours.stderr]).toEqual([0, '']);
      if (haveQemu) {
        const q = await run(QEMU_COMMAND, ['-M', 'pc', ...args()]);
        expect([q.code, q.stderr]).toEqual([0, '']);
      }
    }, 30_000);
  }
});

describe('virtio-blk command line in-process', () => {
  const build = (args: string[], files?: Map<string, MemoryBlockBackend>) => buildMachine(parseQemuCommandLine(['-M', 'pc', '-nodefaults', ...args]), files ? { blockFiles: files } : {});
  const blkOf = (b: ReturnType<typeof build>, i = 0) => b.devices[i]!.device as VirtIOBlock;

  it('-drive options reach the device: cache mode, discard, read-only, null-co size/read-zeroes/latency', () => {
    const files = new Map([['/x.raw', new MemoryBlockBackend(1 << 20)]]);
    const b = build(['-drive', 'if=none,id=d0,file=/x.raw,format=raw,cache=writethrough,discard=unmap', '-device', 'virtio-blk-pci,drive=d0'], files);
    expect([blkOf(b).originalWce, blkOf(b).unmap, blkOf(b).noFlush, blkOf(b).backend.readOnly]).toEqual([false, true, false, false]);
    const u = build(['-drive', 'if=none,id=d0,file=/x.raw,format=raw,cache=unsafe,readonly=on', '-device', 'virtio-blk-pci,drive=d0,write-cache=on'], files);
    expect([blkOf(u).originalWce, blkOf(u).noFlush, blkOf(u).backend.readOnly]).toEqual([true, true, true]);
    const n = build(['-drive', 'if=none,id=d0,file=null-co://,file.size=4M,file.read-zeroes=on,file.latency-ns=5,format=raw', '-device', 'virtio-blk-pci,drive=d0']);
    expect([blkOf(n).capacity, blkOf(n).backend.synchronous]).toEqual([8192, false]);
    const d = build(['-drive', 'if=none,id=d0,file=null-co://,format=raw', '-device', 'virtio-blk-pci,drive=d0']);
    expect([blkOf(d).capacity, blkOf(d).unmap]).toEqual([(1 << 30) / 512, false]);
  });

  it('a file the caller did not open cannot be opened (QEMU\'s message)', () => {
    expect(() => build(['-drive', 'if=none,id=d0,file=/y.raw,format=raw', '-device', 'virtio-blk-pci,drive=d0'])).toThrow(CmdlineError);
    expect(() => build(['-drive', 'if=none,id=d0,file=/y.raw,format=raw', '-device', 'virtio-blk-pci,drive=d0'])).toThrow("Could not open '/y.raw': No such file or directory");
  });

  it('num-queues, queue-size and vectors on PCI (num-queues + 1), class', () => {
    const b = build(['-drive', 'if=none,id=d0,file=null-co://,format=raw', '-device', 'virtio-blk-pci,drive=d0,num-queues=4,queue-size=128,class=0x0180']);
    expect(blkOf(b).vq.map((q) => q.numDefault)).toEqual([128, 128, 128, 128]);
    const proxy = b.devices[0]!.pci!.proxy;
    expect([proxy.config[0x0a], proxy.config[0x0b]]).toEqual([0x80, 0x01]);
  });

  it('iothread: looked up among the -object iothreads as QEMU does, then refused; class only on PCI', () => {
    const args = ['-drive', 'if=none,id=d0,file=null-co://,format=raw', '-object', 'iothread,id=io0', '-device', 'virtio-blk-pci,drive=d0,iothread=io0'];
    expect(() => build(args)).toThrow("-device virtio-blk-pci,drive=d0,iothread=io0: property 'iothread=io0' of virtio-blk-pci is not supported by virtio-ts-qemu");
    const mmio = parseQemuCommandLine(['-M', 'microvm', '-nodefaults', '-drive', 'if=none,id=d0,file=null-co://,format=raw', '-device', 'virtio-blk-device,drive=d0,class=0x0180']);
    expect(() => buildMachine(mmio)).toThrow("-device virtio-blk-device,drive=d0,class=0x0180: Property 'virtio-blk-device.class' not found");
  });

  it('-device help lists blk properties', () => {
    expect(parseQemuCommandLine(['-device', 'virtio-blk-pci,help']).action).toEqual({ kind: 'device-help', driver: 'virtio-blk-pci' });
  });
});
