/**
 * The member order in which QEMU prints a QDict (`qobject/qdict.c`): members live in 512 hash
 * buckets (the `tdb_hash` of the key), a new member goes to the head of its bucket's list, and
 * iteration walks the buckets in order. QMP replies built by an output visitor (e.g. the
 * `guest-stats` QOM property) come out in that order, not in the order they were added, so a
 * reply compared byte for byte with QEMU's must be ordered the same way.
 *
 * No Node imports: part of the browser bundle.
 */

const QDICT_BUCKET_MAX = 512;

/** QEMU's `tdb_hash` of a key (its bytes as UTF-8). */
export function tdbHash(name: string): number {
  const bytes = new TextEncoder().encode(name);
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) value = (value + ((bytes[i]! << ((i * 5) % 24)) >>> 0)) >>> 0;
  return (Math.imul(1103515243, value) + 12345) >>> 0;
}

/** The keys, given in insertion order, in the order QEMU iterates a QDict holding them. */
export function qdictOrder(keys: readonly string[]): string[] {
  const buckets = new Map<number, string[]>();
  for (const k of keys) {
    const b = tdbHash(k) % QDICT_BUCKET_MAX;
    const list = buckets.get(b);
    if (list) list.unshift(k);
    else buckets.set(b, [k]);
  }
  return [...buckets.keys()].sort((a, b) => a - b).flatMap((b) => buckets.get(b)!);
}

/** A plain object whose own keys are in QDict order (nested plain objects too), for the JSON writer. */
export function asQdict<T>(v: T): T {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
  const src = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of qdictOrder(Object.keys(src))) out[k] = asQdict(src[k]);
  return out as T;
}
