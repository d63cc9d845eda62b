/**
 * The `globalstate` section (`migration/global_state.c`): the run state the source was in when
 * migration completed, so the destination can resume in it. QEMU 7.2 always writes it
 * (`store-global-state` defaults on): be32 size (strlen + 1), then a 100-byte buffer holding the
 * name, NUL-padded.
 */
import type { QEMUFileReader, QEMUFileWriter } from './qemu-file.js';
import { latin1 } from './qemu-file.js';
import { printable, type FieldRecorder } from './vmstate.js';

export const GLOBAL_STATE_IDSTR = 'globalstate';
export const GLOBAL_STATE_VERSION = 1;
const RUNSTATE_SIZE = 100;

/** QAPI's RunState names (qapi/run-state.json), the values a loader accepts. */
export const RUN_STATES: readonly string[] = [
  'debug', 'inmigrate', 'internal-error', 'io-error', 'paused', 'postmigrate', 'prelaunch', 'finish-migrate',
  'restore-vm', 'running', 'save-vm', 'shutdown', 'suspended', 'watchdog', 'guest-panicked', 'colo',
];

/** Write the body (`global_state_pre_save` then the two fields). */
export function saveGlobalState(f: QEMUFileWriter, runState: string, rec?: FieldRecorder): void {
  if (!RUN_STATES.includes(runState)) throw new RangeError(`'${runState}' is not a QEMU run state`);
  const put = () => {
    f.putBe32(runState.length + 1);
  };
  const buf = new Uint8Array(RUNSTATE_SIZE);
  for (let i = 0; i < runState.length; i++) buf[i] = runState.charCodeAt(i);
  if (rec) {
    rec.field('size', 'uint32', put);
    rec.field('runstate', 'buffer', () => f.putBuffer(buf));
  } else {
    put();
    f.putBuffer(buf);
  }
}

/**
 * Parse the body and return the run state (`global_state_post_load`): the size field is not
 * used, the name ends at the first NUL (the last byte counts as one), and must be a RunState.
 */
export function loadGlobalState(f: QEMUFileReader): string {
  f.getBe32('globalstate size');
  const at = f.offset;
  const buf = f.getView(RUNSTATE_SIZE, 'globalstate runstate');
  let n = buf.indexOf(0);
  if (n < 0) n = RUNSTATE_SIZE - 1;
  const name = latin1(buf.subarray(0, n));
  if (!RUN_STATES.includes(name)) throw f.error('globalstate runstate', `invalid parameter value: ${printable(name)}`, at);
  return name;
}
