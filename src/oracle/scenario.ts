/**
 * Oracle scenarios: guest-side scripts written once against a `RecordingMachine`, run on QEMU
 * 7.2 and on our machines with the same command line, and judged by comparing what they
 * recorded. Browser-safe types; the Node runner is `runner.ts`.
 */
import type { GuestAllocator } from '../driver/alloc.js';
import type { ExpectedDifference } from './compare.js';
import type { RecordingMachine } from './recorder.js';
import type { HostileFacts } from './verdict.js';

/** A disk image a spec needs: `size` bytes, sector-numbered pattern (default), zeros, or with an MBR. */
export interface DiskTemplate {
  size: number;
  init?: 'pattern' | 'zero' | 'mbr';
}

/** A machine as QEMU's command line describes it (the options after the harness's own flags). */
export interface OracleMachineSpec {
  /** `-machine` value. */
  machine: string;
  /**
   * `-device`, `-global`, ...; `@DIR@` is replaced by a directory of the side's own, `@disk:NAME@`
   * by the path of disk NAME.
   */
  args: readonly string[];
  /** Disk images, made afresh for each machine started (src/oracle/disks.ts). */
  disks?: Readonly<Record<string, DiskTemplate>>;
}

/** Placeholder in `OracleMachineSpec.args` for a side's own directory. */
export const HOST_DIR = '@DIR@';

/** `spec`'s arguments with `@DIR@` replaced by `dir`. */
export function argsIn(spec: OracleMachineSpec, dir: string | undefined): string[] {
  return spec.args.map((a) => (dir === undefined ? a : a.split(HOST_DIR).join(dir)));
}

/** Whether `spec` needs a host directory. */
export function needsHostDir(spec: OracleMachineSpec): boolean {
  return spec.args.some((a) => a.includes(HOST_DIR));
}

/** What only our in-process machine can tell (never part of a transcript). */
export interface OracleProbe {
  /** Messages our devices passed to `virtioError` since the last call, oldest first. */
  takeErrors(): string[];
}

/**
 * The test's end of a NIC's UDP backend (`@NET:name@` in the arguments): frames into the NIC,
 * frames the NIC sent. Each side gets its own sockets.
 */
export interface OracleNetPeer {
  /** Send one frame to the machine's backend. */
  send(frame: Uint8Array): Promise<void>;
  /** Frames received so far (and forget them). */
  take(): Uint8Array[];
  /** Wait (bounded by wall-clock time) until `count` frames came; returns them (maybe fewer). */
  wait(count: number, timeoutMs?: number): Promise<Uint8Array[]>;
  /** Let the machine's main loop turn (wall-clock pause). */
  settle(ms?: number): Promise<void>;
}

export interface OracleContext {
  m: RecordingMachine;
  /** Fresh for every scenario: guest RAM from 1 MiB up. */
  alloc: GuestAllocator;
  /**
   * This side's directory for host-side files: `@DIR@` in the machine's arguments stands for it
   * (e.g. `-chardev socket,path=@DIR@/c0.sock,...`), so each side gets its own sockets.
   */
  hostDir?: string;
  /** The test's ends of `@NET:name@` backends, by name. */
  net?: ReadonlyMap<string, OracleNetPeer>;
}

export interface OracleScenario {
  name: string;
  /** Hostile-guest test ids (hostile-guest-bugs.md T-xx, virtio-villain tNNNN). */
  ids?: string;
  /** Differences from QEMU we make on purpose, and the sections where they show. */
  expected?: readonly ExpectedDifference[];
  /** Hostile scenarios return their observations, from which each side's verdict follows. */
  run(ctx: OracleContext): Promise<HostileFacts | void>;
}

export interface OracleGroup {
  name: string;
  spec: OracleMachineSpec;
  /** Run in order on one machine per side; each scenario leaves the device reset. */
  scenarios: readonly OracleScenario[];
}
