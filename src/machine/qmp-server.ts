/**
 * QMP, the QEMU Machine Protocol, as QEMU 7.2 answers it (monitor/qmp.c, qapi/qmp-dispatch.c),
 * for the subset a qtest harness uses: the greeting, `qmp_capabilities`, `query-status`, `stop`,
 * `cont`, `quit`, `system_reset`, `qom-list`, `qom-get`, `query-version`, `query-commands`,
 * migration (`migrate`, `migrate-incoming`, `query-migrate`, `migrate_cancel`, capabilities and
 * parameters; the state machines are in `migration.ts`), and the virtio introspection commands
 * (`x-query-virtio*`, in `virtio-introspect.ts`).
 *
 * Input is a stream of JSON objects (QEMU's JSON parser also takes 'single-quoted' strings, which
 * libqtest uses); output lines are QEMU's compact-with-spaces JSON ending in `\r\n`, events carry
 * a wall-clock timestamp, and `id` is echoed in the positions QEMU prints it.
 *
 * No Node imports: the transports live in `chardev.ts`.
 */
import { jsonEscape, toQemuJson } from '../migration/json-writer.js';
import type { ReferenceMachine } from './machine.js';
import { MIGRATION_CAPABILITIES, MIGRATION_STATUSES, MigrationCommandError, MigrationController, type MigrationCapability, type MigrationOptions, type MigrationStatus } from './migration.js';
import { resolveQomPath } from './qom.js';
import { NetQmpError } from './net-stack.js';
import { asQdict } from './qdict.js';
import { QapiError, runInputSendEvent, visitInputSendEvent } from './qmp-input.js';
import { executeVirtioCommand, VIRTIO_QMP_COMMANDS, VirtioQueryError } from './virtio-introspect.js';

export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
  package: string;
}

/** The QEMU version we present: 7.2, the release this project models. */
export const QEMU_VERSION: QemuVersion = { major: 7, minor: 2, micro: 0, package: 'virtio-ts' };

export interface QmpServerOptions {
  /** Write text (one or more `...\r\n` lines) to the client. */
  send: (text: string) => void;
  /** `quit`: called after the reply has been sent. */
  onQuit?: () => void;
  version?: QemuVersion;
  /** Wall-clock milliseconds for event timestamps (default Date.now). */
  now?: () => number;
  /**
   * Migration: the machine's controller, shared by all its monitors, or the options to build one
   * for this monitor alone. Without it migration commands answer, but a migration fails for want
   * of a stream engine and channels.
   */
  migration?: MigrationController | MigrationOptions;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

class QmpError extends Error {
  constructor(readonly errorClass: string, desc: string) {
    super(desc);
  }
}

/** A command's error, as `QmpServer.call` throws it (shaped like the driver's QmpError). */
export class QmpCommandError extends Error {
  override name = 'QmpError';
  constructor(readonly command: string, readonly errorClass: string, readonly desc: string) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
  }
}

/**
 * Serialize as QEMU's JSON writer does (`", "` and `": "` separators, \uXXXX for non-ASCII);
 * the writer is shared with the migration stream's JSON description.
 */
export const qmpJson: (v: unknown) => string = toQemuJson;

/** A JSON syntax error, worded like QEMU's parser. */
class JsonSyntaxError extends Error {}

/**
 * Parse one JSON value as QEMU's parser accepts it: standard JSON plus single-quoted strings.
 */
export function parseQmpJson(text: string): Json {
  lexCheck(text);
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\r\n'.includes(text[i]!)) i++;
  };
  const value = (): Json => {
    ws();
    const ch = text[i];
    if (ch === undefined) throw new JsonSyntaxError('expecting value');
    if (ch === '{') {
      i++;
      const obj: { [k: string]: Json } = {};
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"' && text[i] !== "'") throw new JsonSyntaxError('key is not a string in object');
        const k = str();
        ws();
        if (text[i] !== ':') throw new JsonSyntaxError('missing : in object pair');
        i++;
        obj[k] = value();
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return obj;
        }
        throw new JsonSyntaxError('expected separator in dict');
      }
    }
    if (ch === '[') {
      i++;
      const arr: Json[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value());
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return arr;
        }
        throw new JsonSyntaxError('expected separator in list');
      }
    }
    if (ch === '"' || ch === "'") return str();
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (m && m[0].length) {
      i += m[0].length;
      return Number(m[0]);
    }
    const w = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i, i + 100));
    if (w) {
      i += w[0].length;
      if (w[0] === 'true') return true;
      if (w[0] === 'false') return false;
      if (w[0] === 'null') return null;
      throw new JsonSyntaxError(`invalid keyword '${w[0]}'`);
    }
    throw new JsonSyntaxError('expecting value');
  };
  const str = (): string => {
    const q = text[i++]!;
    let out = '';
    for (;;) {
      const ch = text[i++];
      if (ch === undefined) throw new JsonSyntaxError('missing terminating quote');
      if (ch === q) return out;
      if (ch !== '\\') {
        out += ch;
        continue;
      }
      // QEMU's parser takes \' besides JSON's escapes (libqtest writes single-quoted strings).
      if (text[i] === "'") {
        out += "'";
        i++;
        continue;
      }
      const e = jsonEscape(text, i);
      if (!e) throw new JsonSyntaxError('invalid escape sequence in string');
      out += e[0];
      i = e[1];
    }
  };
  const v = value();
  ws();
  if (i < text.length) throw new JsonSyntaxError('expecting end of input');
  return v;
}

/**
 * QEMU's lexer runs before its parser, so a bare word that is not a keyword is reported as
 * "invalid keyword" even where the parser would have complained about something else.
 */
function lexCheck(text: string): void {
  let q: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (q !== undefined) {
      if (ch === '\\') i++;
      else if (ch === q) q = undefined;
      continue;
    }
    if (ch === '"' || ch === "'") {
      q = ch;
      continue;
    }
    if (/[A-Za-z_]/.test(ch)) {
      const w = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i, i + 100))![0];
      // Exponents in numbers ("1e5") are part of the number.
      if (/[0-9.]/.test(text[i - 1] ?? '') && /^[eE]/.test(w)) continue;
      if (w !== 'true' && w !== 'false' && w !== 'null') throw new JsonSyntaxError(`invalid keyword '${w}'`);
      i += w.length - 1;
    }
  }
}

/** QEMU 7.2's migration commands (qapi/migration.json); the last ones are not supported here. */
const MIGRATION_COMMANDS = new Set([
  'migrate', 'migrate-incoming', 'migrate_cancel', 'migrate-continue', 'migrate-pause', 'migrate-recover',
  'migrate-set-capabilities', 'query-migrate', 'query-migrate-capabilities', 'query-migrate-parameters',
  'migrate-start-postcopy', 'migrate-set-parameters', 'xen-save-devices-state', 'snapshot-save', 'snapshot-load',
  'snapshot-delete',
]);

const COMMANDS = [
  'qmp_capabilities', 'query-status', 'stop', 'cont', 'quit', 'system_reset', 'qom-list', 'qom-get', 'qom-set', 'query-version',
  'query-commands', 'balloon', 'query-balloon', 'input-send-event', 'set_link', 'query-rx-filter', 'announce-self', ...MIGRATION_COMMANDS,
  ...VIRTIO_QMP_COMMANDS,
];

/** Longest partial JSON value kept while waiting for its end. */
const MAX_PENDING = 1 << 20;

export class QmpServer {
  private readonly send: (text: string) => void;
  private readonly onQuit: (() => void) | undefined;
  private readonly version: QemuVersion;
  private readonly now: () => number;
  /** The machine's migration state. */
  readonly migration: MigrationController;
  /** The controller was built for this server alone (so `dispose` ends it). */
  private readonly ownsMigration: boolean;
  private negotiated = false;
  /** Out-of-band execution was enabled at negotiation (`exec-oob` accepted). */
  private oob = false;
  private connected = false;
  // Stream framing state (QEMU's json-streamer: brace/bracket depth outside strings).
  private pending = '';
  private depth = 0;
  private quote: string | undefined;
  private escape = false;
  private quitting = false;
  private readonly listener = (name: string, data?: Record<string, unknown>) => this.event(name, data);

  constructor(readonly machine: ReferenceMachine, opts: QmpServerOptions) {
    this.send = opts.send;
    this.onQuit = opts.onQuit;
    this.version = opts.version ?? QEMU_VERSION;
    this.now = opts.now ?? Date.now;
    this.ownsMigration = !(opts.migration instanceof MigrationController);
    this.migration = opts.migration instanceof MigrationController ? opts.migration : new MigrationController(machine, opts.migration ?? {});
    machine.eventListeners.add(this.listener);
  }

  /** A client connected: send the greeting; capabilities must be negotiated again. */
  open(): void {
    this.connected = true;
    this.negotiated = false;
    this.oob = false;
    this.pending = '';
    this.depth = 0;
    this.quote = undefined;
    this.escape = false;
    this.line({ QMP: { version: this.versionJson(), capabilities: ['oob'] } });
  }

  close(): void {
    this.connected = false;
  }

  /** Stop listening to the machine's events (the monitor goes away). */
  dispose(): void {
    this.machine.eventListeners.delete(this.listener);
    if (this.ownsMigration) this.migration.dispose();
  }

  /** Send an event (e.g. STOP, RESUME, SHUTDOWN) to a negotiated client. */
  event(name: string, data?: Record<string, unknown>): void {
    if (!this.connected || !this.negotiated) return;
    const ms = this.now();
    const seconds = Math.floor(ms / 1000);
    const microseconds = Math.floor((ms - seconds * 1000) * 1000);
    this.line(data ? { timestamp: { seconds, microseconds }, event: name, data } : { timestamp: { seconds, microseconds }, event: name });
  }

  /** Bytes from the client (latin1 or UTF-8 string). */
  feed(chunk: string): void {
    for (let p = 0; p < chunk.length; p++) {
      if (this.quitting) return;
      const ch = chunk[p]!;
      if (this.quote !== undefined) {
        this.pending += ch;
        if (this.escape) this.escape = false;
        else if (ch === '\\') this.escape = true;
        else if (ch === this.quote) this.quote = undefined;
        continue;
      }
      if (this.depth === 0 && this.pending.trim() === '' && ' \t\r\n'.includes(ch)) {
        this.pending = '';
        continue;
      }
      if (ch === '"' || ch === "'") {
        this.quote = ch;
        this.pending += ch;
        continue;
      }
      if (ch === '{' || ch === '[') {
        this.depth++;
        this.pending += ch;
        continue;
      }
      if (ch === '}' || ch === ']') {
        if (this.depth === 0) {
          this.pending = '';
          this.respondError(undefined, 'GenericError', 'JSON parse error, expecting value');
          continue;
        }
        this.pending += ch;
        if (--this.depth === 0) this.complete();
        continue;
      }
      if (this.depth === 0 && ' \t\r\n'.includes(ch)) {
        // End of a top-level scalar.
        this.complete();
        continue;
      }
      this.pending += ch;
      if (this.pending.length > MAX_PENDING) {
        this.pending = '';
        this.depth = 0;
        this.quote = undefined;
        this.respondError(undefined, 'GenericError', 'JSON parse error, input too long');
      }
    }
  }

  private complete(): void {
    const text = this.pending;
    this.pending = '';
    if (!text.trim()) return;
    let req: Json;
    try {
      req = parseQmpJson(text);
    } catch (e) {
      this.respondError(undefined, 'GenericError', `JSON parse error, ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    this.dispatch(req);
  }

  private line(obj: unknown): void {
    this.send(qmpJson(obj) + '\r\n');
  }

  private respond(id: Json | undefined, ret: unknown): void {
    this.line(id === undefined ? { return: ret } : { return: ret, id });
  }

  private respondError(id: Json | undefined, errorClass: string, desc: string): void {
    const error = { class: errorClass, desc };
    this.line(id === undefined ? { error } : { id, error });
  }

  // ---------------------------------------------------------------------------------------
  // Dispatch (qmp_dispatch)

  private dispatch(req: Json): void {
    if (req === null || typeof req !== 'object' || Array.isArray(req)) {
      this.respondError(undefined, 'GenericError', 'QMP input must be a JSON object');
      return;
    }
    const id = Object.prototype.hasOwnProperty.call(req, 'id') ? req.id : undefined;
    let name: string | undefined;
    let args: { [k: string]: Json } = {};
    for (const [k, v] of Object.entries(req)) {
      if (k === 'execute' || (k === 'exec-oob' && this.oob)) {
        if (typeof v !== 'string') return this.respondError(id, 'GenericError', `QMP input member '${k}' must be a string`);
        name = v;
      } else if (k === 'arguments') {
        if (v === null || typeof v !== 'object' || Array.isArray(v)) return this.respondError(id, 'GenericError', "QMP input member 'arguments' must be an object");
        args = v;
      } else if (k !== 'id') {
        return this.respondError(id, 'GenericError', `QMP input member '${k}' is unexpected`);
      }
    }
    if (name === undefined) return this.respondError(id, 'GenericError', "QMP input lacks member 'execute'");
    if (!this.negotiated && name !== 'qmp_capabilities') {
      return this.respondError(id, 'CommandNotFound', "Expecting capabilities negotiation with 'qmp_capabilities'");
    }
    try {
      const ret = this.execute(name, args);
      this.respond(id, ret);
      if (name === 'quit') {
        this.quitting = true;
        this.onQuit?.();
      }
    } catch (e) {
      if (e instanceof QmpError) this.respondError(id, e.errorClass, e.message);
      else this.respondError(id, 'GenericError', e instanceof Error ? e.message : String(e));
    }
  }

  /**
   * Run a command directly (no JSON, no negotiation), for in-process use: resolves with what
   * `return` would carry, throws `QmpCommandError` with QEMU's class and description.
   */
  call(name: string, args: Record<string, unknown> = {}): unknown {
    const wasNegotiated = this.negotiated;
    this.negotiated = true;
    try {
      if (name === 'qmp_capabilities') return {};
      if (!this.knows(name)) throw new QmpError('CommandNotFound', `The command ${name} has not been found`);
      return this.execute(name, args as { [k: string]: Json });
    } catch (e) {
      if (e instanceof QmpError) throw new QmpCommandError(name, e.errorClass, e.message);
      if (e instanceof MigrationCommandError) throw new QmpCommandError(name, 'GenericError', e.message);
      throw e;
    } finally {
      this.negotiated = wasNegotiated;
    }
  }

  private knows(name: string): boolean {
    return COMMANDS.includes(name);
  }

  private execute(name: string, args: { [k: string]: Json }): unknown {
    const m = this.machine;
    switch (name) {
      case 'qmp_capabilities': {
        if (this.negotiated) throw new QmpError('CommandNotFound', 'Capabilities negotiation is already complete, command ignored');
        checkArgs(args, {}, { enable: 'array' });
        const enable = (args.enable ?? []) as Json[];
        for (const cap of enable) {
          if (cap !== 'oob') throw new QmpError('GenericError', `Parameter 'enable' does not accept value '${String(cap)}'`);
        }
        this.oob = enable.length > 0;
        this.negotiated = true;
        return {};
      }
      case 'query-status':
        checkArgs(args, {});
        return { status: m.runState, singlestep: false, running: m.runState === 'running' };
      case 'stop':
        // qmp_stop: during `inmigrate` it only cancels the start after the load.
        checkArgs(args, {});
        if (m.runState === 'inmigrate') m.autostart = false;
        else m.vmStop('paused');
        return {};
      case 'cont':
        // qmp_cont: refused after a shutdown or while the migration completes; during `inmigrate`
        // it asks for a start once the load is done.
        checkArgs(args, {});
        if (m.runState === 'internal-error' || m.runState === 'shutdown') throw new QmpError('GenericError', 'Resetting the Virtual Machine is required');
        if (m.runState === 'suspended') return {};
        if (m.runState === 'finish-migrate') throw new QmpError('GenericError', 'Migration is not finalized yet');
        if (m.runState === 'inmigrate') m.autostart = true;
        else m.vmStart();
        return {};
      case 'quit':
        checkArgs(args, {});
        m.emitEvent('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
        return {};
      case 'system_reset':
        checkArgs(args, {});
        m.reset();
        m.emitEvent('RESET', { guest: false, reason: 'host-qmp-system-reset' });
        return {};
      case 'qom-list': {
        checkArgs(args, { path: 'string' });
        return this.resolve(args.path as string).list();
      }
      case 'qom-get': {
        checkArgs(args, { path: 'string', property: 'string' });
        const obj = this.resolve(args.path as string);
        const prop = args.property as string;
        if (prop === 'type') return obj.type;
        const dyn = obj.dynamic.get(prop);
        if (dyn) return dyn.get();
        if (obj.values.has(prop)) return obj.values.get(prop);
        throw new QmpError('GenericError', `Property '${obj.type}.${prop}' not found`);
      }
      case 'qom-set': {
        // qmp_qom_set: the arguments (`value` is 'any'), the object, then object_property_set.
        checkArgs(args, { path: 'string', property: 'string', value: 'any' });
        const obj = this.resolve(args.path as string);
        const prop = args.property as string;
        const dyn = obj.dynamic.get(prop);
        if (dyn) {
          if (!dyn.set) throw new QmpError('GenericError', `Property '${dyn.ownerType}.${prop}' is not writable`);
          try {
            dyn.set(args.value as Json);
          } catch (e) {
            throw new QmpError('GenericError', e instanceof Error ? e.message : String(e));
          }
          return {};
        }
        const owner = obj.staticOwner.get(prop);
        if (owner) {
          throw new QmpError('GenericError', `Attempt to set property '${prop}' on ${owner.id !== undefined ? `device '${owner.id}'` : 'anonymous device'} (type '${owner.type}') after it was realized`);
        }
        if (prop === 'type' || obj.values.has(prop)) throw new QmpError('GenericError', `Property '${obj.type}.${prop}' is not writable`);
        throw new QmpError('GenericError', `Property '${obj.type}.${prop}' not found`);
      }
      case 'balloon': {
        // qmp_balloon: arguments, then a balloon must exist, then the value.
        checkArgs(args, { value: 'int' });
        const b = m.balloon;
        if (!b) throw new QmpError('DeviceNotActive', 'No balloon device has been activated');
        const value = args.value as number;
        if (value <= 0) throw new QmpError('GenericError', "Parameter 'target' expects a size");
        b.toTarget(BigInt(value));
        return {};
      }
      case 'query-balloon': {
        checkArgs(args, {});
        const b = m.balloon;
        if (!b) throw new QmpError('DeviceNotActive', 'No balloon device has been activated');
        return { actual: b.actual() };
      }
      case 'input-send-event': {
        try {
          const a = visitInputSendEvent(args);
          runInputSendEvent(a, {
            router: m.input,
            running: m.runState === 'running' || m.runState === 'suspended',
            hasDevice: (id) => m.peripheral.children.has(id),
          });
        } catch (e) {
          if (e instanceof QapiError) throw new QmpError(e.errorClass, e.message);
          throw e;
        }
        return {};
      }
      case 'set_link':
        checkArgs(args, { name: 'string', up: 'bool' });
        try {
          m.net.setLink(args.name as string, args.up as boolean);
        } catch (e) {
          if (e instanceof NetQmpError) throw new QmpError(e.errorClass, e.message);
          throw e;
        }
        return {};
      case 'query-rx-filter': {
        checkArgs(args, {}, { name: 'string' });
        try {
          return m.net.queryRxFilter(args.name as string | undefined).map((info) => asQdict(info));
        } catch (e) {
          if (e instanceof NetQmpError) throw new QmpError(e.errorClass, e.message);
          throw e;
        }
      }
      case 'announce-self': {
        checkArgs(args, { initial: 'int', max: 'int', rounds: 'int', step: 'int' }, { interfaces: 'array', id: 'string' });
        const interfaces = args.interfaces as Json[] | undefined;
        if (interfaces) {
          interfaces.forEach((v, i) => {
            if (typeof v !== 'string') throw new QmpError('GenericError', `Invalid parameter type for 'interfaces[${i}]', expected: string`);
          });
        }
        m.net.announceSelf({
          initial: args.initial as number,
          max: args.max as number,
          rounds: args.rounds as number,
          step: args.step as number,
          ...(interfaces ? { interfaces: interfaces as string[] } : {}),
          ...(args.id !== undefined ? { id: args.id as string } : {}),
        });
        return {};
      }
      case 'query-version':
        checkArgs(args, {});
        return this.versionJson();
      case 'query-commands':
        checkArgs(args, {});
        return COMMANDS.map((c) => ({ name: c }));
      default:
        if (MIGRATION_COMMANDS.has(name)) return this.executeMigration(name, args);
        if (VIRTIO_QMP_COMMANDS.includes(name)) {
          try {
            return executeVirtioCommand(m.virtioDevices, name, args);
          } catch (e) {
            if (e instanceof VirtioQueryError) throw new QmpError(e.errorClass, e.message);
            throw e;
          }
        }
        throw new QmpError('CommandNotFound', `The command ${name} has not been found`);
    }
  }

  private executeMigration(name: string, args: { [k: string]: Json }): unknown {
    const mig = this.migration;
    switch (name) {
      case 'migrate':
        checkArgs(args, { uri: 'string' }, { blk: 'bool', inc: 'bool', detach: 'bool', resume: 'bool' });
        mig.migrate(args.uri as string, { blk: args.blk === true, inc: args.inc === true, resume: args.resume === true });
        return {};
      case 'migrate-incoming':
        checkArgs(args, { uri: 'string' });
        mig.migrateIncoming(args.uri as string);
        return {};
      case 'query-migrate':
        checkArgs(args, {});
        return mig.queryMigrate();
      case 'migrate_cancel':
        checkArgs(args, {});
        mig.cancel();
        return {};
      case 'migrate-set-capabilities':
        checkArgs(args, { capabilities: 'array' });
        mig.setCapabilities(checkCapabilityList(args.capabilities as Json[]));
        return {};
      case 'query-migrate-capabilities':
        checkArgs(args, {});
        return mig.queryCapabilities();
      case 'query-migrate-parameters':
        checkArgs(args, {});
        return mig.queryParameters();
      case 'migrate-continue': {
        checkArgs(args, { state: 'string' });
        const state = args.state as string;
        if (!(MIGRATION_STATUSES as readonly string[]).includes(state)) throw new QmpError('GenericError', `Parameter 'state' does not accept value '${state}'`);
        mig.continueFrom(state as MigrationStatus);
        return {};
      }
      // Postcopy is never on, so these fail as QEMU's do without it.
      case 'migrate-pause':
        checkArgs(args, {});
        throw new QmpError('GenericError', 'migrate-pause is currently only supported during postcopy-active state');
      case 'migrate-recover':
        checkArgs(args, { uri: 'string' });
        throw new QmpError('GenericError', 'Migrate recover can only be run when postcopy is paused.');
      case 'migrate-start-postcopy':
        checkArgs(args, {});
        throw new QmpError('GenericError', 'Enable postcopy with migrate_set_capability before the start of migration');
      default:
        throw new QmpError('GenericError', `virtio-ts does not support '${name}'`);
    }
  }

  private resolve(path: string) {
    const r = resolveQomPath(this.machine.qomRoot, path);
    if (r.ambiguous) throw new QmpError('GenericError', `Path '${path}' is ambiguous`);
    if (!r.object) throw new QmpError('DeviceNotFound', `Device '${path}' not found`);
    return r.object;
  }

  private versionJson() {
    const v = this.version;
    return { qemu: { micro: v.micro, minor: v.minor, major: v.major }, package: v.package };
  }
}

/**
 * `migrate-set-capabilities`' list, checked member by member as QEMU's QAPI visitor does (its
 * enum error names the member without the path, as QEMU's does).
 */
function checkCapabilityList(list: Json[]): { capability: MigrationCapability; state: boolean }[] {
  return list.map((item, i) => {
    const at = `capabilities[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw new QmpError('GenericError', `Invalid parameter type for '${at}', expected: object`);
    if (!('capability' in item)) throw new QmpError('GenericError', `Parameter '${at}.capability' is missing`);
    const capability = item.capability;
    if (typeof capability !== 'string') throw new QmpError('GenericError', `Invalid parameter type for '${at}.capability', expected: string`);
    if (!(MIGRATION_CAPABILITIES as readonly string[]).includes(capability)) throw new QmpError('GenericError', `Parameter 'capability' does not accept value '${capability}'`);
    if (!('state' in item)) throw new QmpError('GenericError', `Parameter '${at}.state' is missing`);
    if (typeof item.state !== 'boolean') throw new QmpError('GenericError', `Invalid parameter type for '${at}.state', expected: boolean`);
    for (const k of Object.keys(item)) {
      if (k !== 'capability' && k !== 'state') throw new QmpError('GenericError', `Parameter '${at}.${k}' is unexpected`);
    }
    return { capability: capability as MigrationCapability, state: item.state };
  });
}

type ArgType = 'string' | 'array' | 'int' | 'bool' | 'any';

/** QAPI argument checks: unexpected, missing and mistyped parameters, with QEMU's messages. */
function checkArgs(args: { [k: string]: Json }, required: Record<string, ArgType>, optional: Record<string, ArgType> = {}): void {
  for (const k of Object.keys(args)) {
    if (!(k in required) && !(k in optional)) throw new QmpError('GenericError', `Parameter '${k}' is unexpected`);
  }
  for (const k of Object.keys(required)) {
    if (!(k in args)) throw new QmpError('GenericError', `Parameter '${k}' is missing`);
  }
  for (const [k, t] of Object.entries({ ...required, ...optional })) {
    if (!(k in args)) continue;
    const v = args[k];
    const ok = t === 'any' ? true : t === 'string' ? typeof v === 'string' : t === 'array' ? Array.isArray(v) : t === 'int' ? Number.isInteger(v) : typeof v === 'boolean';
    if (!ok) throw new QmpError('GenericError', `Invalid parameter type for '${k}', expected: ${t === 'string' ? 'string' : t === 'array' ? 'array' : t === 'int' ? 'integer' : 'boolean'}`);
  }
}
