// `virtio-ts inspect FILE [--json]`: print a migration stream's sections and decode each virtio
// device's blob field by field (src/migration/inspect.ts does the work; this reads the file).
import { readFileSync } from 'node:fs';
import { formatInspect, inspectJson, inspectStream } from '../migration/inspect.js';

export function runInspect(args: readonly string[], out: (s: string) => void = (s) => console.log(s), err: (s: string) => void = (s) => console.error(s)): number {
  const json = args.includes('--json');
  const files = args.filter((a) => a !== '--json');
  if (files.length !== 1 || files[0]!.startsWith('-')) {
    err('usage: virtio-ts inspect FILE [--json]');
    return 2;
  }
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(files[0]!);
  } catch (e) {
    err(`virtio-ts inspect: cannot read '${files[0]}': ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
  try {
    const report = inspectStream(bytes);
    out(json ? JSON.stringify(inspectJson(report), (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v), 2) : formatInspect(report));
    return 0;
  } catch (e) {
    err(`virtio-ts inspect: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}
