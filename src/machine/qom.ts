/**
 * A small model of QEMU's object tree (QOM), enough for what a qtest harness does with it: find a
 * device by absolute or partial path (`irq_intercept_in ioapic`, `/machine/unattached/device[3]`),
 * list an object's properties (QMP `qom-list`), and reach the device's unnamed GPIO lines.
 *
 * No Node imports: part of the browser bundle.
 */

export interface QomProperty {
  name: string;
  type: string;
}

/**
 * A set of interrupt lines (QEMU's qemu_irq array of a device's unnamed GPIOs). `set` is called
 * the way QEMU calls `qemu_set_irq`: on every evaluation, possibly with an unchanged level.
 */
export class IrqLines {
  readonly levels: Uint8Array;
  /** Observer installed by an `irq_intercept_*`; called on every `set`. */
  listener: ((line: number, level: boolean) => void) | undefined;

  /** @param sink where the lines lead (e.g. an output line into a GSI); may be absent */
  constructor(readonly count: number, private readonly sink?: (line: number, level: boolean) => void) {
    this.levels = new Uint8Array(count);
  }

  set(line: number, level: boolean): void {
    if (line < 0 || line >= this.count) return;
    this.levels[line] = level ? 1 : 0;
    this.listener?.(line, level);
    this.sink?.(line, level);
  }

  level(line: number): boolean {
    return this.levels[line] === 1;
  }
}

/**
 * A property computed when read, and possibly settable (QEMU's `object_property_add` with getter
 * and setter, e.g. virtio-balloon's `guest-stats-polling-interval`).
 */
export interface QomDynamicProperty {
  /** As `qom-list` shows it ("int", "guest statistics", ...). */
  readonly type: string;
  /** The type QEMU names in errors: an alias names the type of the object it forwards to. */
  readonly ownerType: string;
  get(): unknown;
  /** Absent: read-only ("is not writable"). Throws an Error with QEMU's message for a bad value. */
  set?(value: unknown): void;
}

export class QomObject {
  readonly children = new Map<string, QomObject>();
  parent: QomObject | undefined;
  name = '';
  /** Unnamed GPIO inputs ("unnamed-gpio-in"), e.g. an IOAPIC's pins. */
  gpioIn: IrqLines | undefined;
  /** Unnamed GPIO outputs ("sysbus-irq"), e.g. a virtio-mmio transport's line. */
  gpioOut: IrqLines | undefined;
  /** What `qom-get` answers, by property name. */
  readonly values = new Map<string, unknown>();
  /** Properties computed when read (listed after the static ones). */
  readonly dynamic = new Map<string, QomDynamicProperty>();
  /**
   * For `values` that are device properties: the device QEMU names when `qom-set` tries one after
   * realize (its `id`, or none for an anonymous device, and its type).
   */
  readonly staticOwner = new Map<string, { id: string | undefined; type: string }>();

  constructor(readonly type: string, readonly props: readonly QomProperty[] = []) {}

  addChild<T extends QomObject>(name: string, child: T): T {
    if (this.children.has(name)) throw new Error(`QOM: ${this.path}/${name} already exists`);
    child.name = name;
    child.parent = this;
    this.children.set(name, child);
    return child;
  }

  get path(): string {
    if (!this.parent) return '';
    return `${this.parent.path}/${this.name}`;
  }

  /** `qom-list`: "type" first, the object's own properties, then its children. */
  list(): QomProperty[] {
    const out: QomProperty[] = [{ name: 'type', type: 'string' }, ...this.props];
    for (const [name, p] of this.dynamic) out.push({ name, type: p.type });
    for (const [name, c] of this.children) out.push({ name, type: `child<${c.type}>` });
    if (this.gpioIn) for (let i = 0; i < this.gpioIn.count; i++) out.push({ name: `unnamed-gpio-in[${i}]`, type: 'child<irq>' });
    return out;
  }
}

/** Common device properties as `qom-list` shows them. */
export const DEVICE_PROPS: readonly QomProperty[] = [
  { name: 'parent_bus', type: 'link<bus>' },
  { name: 'realized', type: 'bool' },
  { name: 'hotplugged', type: 'bool' },
  { name: 'hotpluggable', type: 'bool' },
];

export interface QomResolution {
  object: QomObject | undefined;
  ambiguous: boolean;
}

/**
 * QEMU's `object_resolve_path`: an absolute path ("/machine/unattached/device[3]") walks from the
 * root; anything else is a partial path that matches wherever it ends in the tree, and more than
 * one match is ambiguous (no object).
 */
export function resolveQomPath(root: QomObject, path: string): QomResolution {
  const parts = path.split('/');
  if (path.startsWith('/')) {
    return { object: resolveAbs(root, parts.slice(1)), ambiguous: false };
  }
  const state = { ambiguous: false };
  const object = resolvePartial(root, parts, state);
  return { object: state.ambiguous ? undefined : object, ambiguous: state.ambiguous };
}

function resolveAbs(from: QomObject, parts: readonly string[]): QomObject | undefined {
  let obj: QomObject | undefined = from;
  for (const p of parts) {
    if (!obj) return undefined;
    // QEMU skips empty components ("//" and a trailing "/").
    if (p === '') continue;
    obj = obj.children.get(p);
  }
  return obj;
}

function resolvePartial(parent: QomObject, parts: readonly string[], state: { ambiguous: boolean }): QomObject | undefined {
  let obj = resolveAbs(parent, parts);
  for (const child of parent.children.values()) {
    const found = resolvePartial(child, parts, state);
    if (found) {
      if (obj) {
        state.ambiguous = true;
        return undefined;
      }
      obj = found;
    }
    if (state.ambiguous) return undefined;
  }
  return obj;
}
