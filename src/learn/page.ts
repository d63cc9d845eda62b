// The learning page's DOM side: buttons call the model's steps, and after each step every view is
// drawn again from `snapshot()`. Cells that changed since the previous drawing are highlighted.
// The model (model.ts) does all the virtio work; this file only turns plain data into tables.
import { formatInspect, inspectStream } from '../migration/inspect.js';
import { LearnMachine, type PackedRingView, type Snapshot, type SplitRingView } from './model.js';

const machine = new LearnMachine();
const $ = (id: string): HTMLElement => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`no #${id} in the page`);
  return el;
};
const checked = (id: string): boolean => ($(id) as HTMLInputElement).checked;
const hex = (n: number | bigint): string => '0x' + n.toString(16);
const bit = (b: boolean): string => (b ? '1' : '0');

/** Rows drawn last time, by table id, to highlight what a step changed. */
let previous = new Map<string, string[]>();
let current = new Map<string, string[]>();

/** A table with a caption; each row is a list of cell texts. */
function table(id: string, caption: string, head: string[], rows: (string | number)[][]): HTMLTableElement {
  const t = document.createElement('table');
  t.id = id;
  t.createCaption().textContent = caption;
  const hr = t.createTHead().insertRow();
  for (const h of head) hr.appendChild(document.createElement('th')).textContent = h;
  const before = previous.get(id) ?? [];
  const now: string[] = [];
  const body = t.createTBody();
  rows.forEach((cells, i) => {
    const tr = body.insertRow();
    for (const c of cells) tr.insertCell().textContent = String(c);
    const key = cells.join('|');
    now.push(key);
    if (before.length > 0 && before[i] !== key) tr.className = 'changed';
  });
  current.set(id, now);
  return t;
}

function note(text: string): HTMLElement {
  const p = document.createElement('p');
  p.className = 'note';
  p.textContent = text;
  return p;
}

function drawDevice(s: Snapshot): void {
  const d = s.device;
  const q = d.queue;
  const el = $('device');
  el.replaceChildren(
    table('dev-regs', 'registers and interrupt', ['field', 'value'], [
      ['Status', `${hex(d.status)} ${d.statusNames}`],
      ['InterruptStatus (ISR)', `${hex(d.isr)}${d.isr & 1 ? ' used-buffer' : ''}${d.isr & 2 ? ' config-change' : ''}`],
      ['interrupt line', d.irqLevel ? 'high' : 'low'],
      ['negotiated features', hex(d.features)],
      ['broken', d.broken ? 'yes' : 'no'],
    ]),
    table('dev-queue', "the device's side of queue 0 (VirtQueue)", ['field', 'value'], [
      ['ready', q.ready ? 'yes' : 'no'],
      ['format', q.packed ? 'packed' : 'split'],
      ['num', q.num],
      ['last_avail_idx', q.lastAvailIdx],
      ['used_idx', q.usedIdx],
      ['inuse', q.inuse],
      ...(q.packed
        ? [
            ['last_avail_wrap_counter', bit(q.lastAvailWrapCounter)],
            ['used_wrap_counter', bit(q.usedWrapCounter)],
          ]
        : []),
    ]),
  );
  if (d.statusNames.includes('NEEDS_RESET')) {
    const p = document.createElement('p');
    p.className = 'bad';
    p.textContent = 'DEVICE_NEEDS_RESET: the device found the ring broken and stopped; only a reset brings it back.';
    el.appendChild(p);
  }
}

function drawSplit(r: SplitRingView): HTMLElement[] {
  return [
    table('split-desc', `descriptor table at ${hex(r.addrs.desc)} (16 bytes each)`, ['i', 'addr', 'len', 'flags', 'next'],
      r.desc.map((d) => [d.index, hex(d.addr), d.len, `${d.flags} ${d.flagNames}`, d.next])),
    table('split-avail', `avail ring at ${hex(r.addrs.avail)} (the driver writes it)`, ['field', 'value'], [
      ['flags', r.avail.flags],
      ['idx', r.avail.idx],
      ...r.avail.ring.map((h, i) => [`ring[${i}]`, h]),
      ['used_event', r.avail.usedEvent],
    ]),
    table('split-used', `used ring at ${hex(r.addrs.used)} (the device writes it)`, ['field', 'value'], [
      ['flags', r.used.flags],
      ['idx', r.used.idx],
      ...r.used.ring.map((e, i) => [`ring[${i}]`, `id ${e.id}, len ${e.len}`]),
      ['avail_event', r.used.availEvent],
    ]),
  ];
}

function drawPacked(r: PackedRingView): HTMLElement[] {
  const ev = (e: { offWrap: number; flags: number }): string =>
    `off_wrap ${hex(e.offWrap)} (offset ${e.offWrap & 0x7fff}, wrap ${e.offWrap >> 15}), flags ${e.flags} ${['ENABLE', 'DISABLE', 'DESC'][e.flags] ?? '?'}`;
  return [
    table('packed-desc', `descriptor ring at ${hex(r.addrs.ring)} (16 bytes each; both sides write it)`,
      ['slot', 'addr', 'len', 'id', 'flags', 'AVAIL', 'USED', 'meaning'],
      r.desc.map((d) => [d.slot, hex(d.addr), d.len, d.id, `${hex(d.flags)} ${d.flagNames}`, bit(d.avail), bit(d.used), d.meaning])),
    note('The device writes a used chain back as one descriptor, at the slot of its first; the slots after it keep the bytes the driver wrote, and both sides skip them.'),
    table('packed-events', 'event suppression areas', ['area', 'value'], [
      [`driver event at ${hex(r.addrs.driverEvent)}`, ev(r.driverEvent)],
      [`device event at ${hex(r.addrs.deviceEvent)}`, ev(r.deviceEvent)],
    ]),
    table('packed-driver', "the driver's counters (kept in the driver, not in RAM)", ['field', 'value'], [
      ['next avail slot', r.driver.nextAvail],
      ['avail wrap counter', bit(r.driver.availWrap)],
      ['next used slot', r.driver.nextUsed],
      ['used wrap counter', bit(r.driver.usedWrap)],
    ]),
  ];
}

function draw(): void {
  const s = machine.snapshot();
  current = new Map();
  drawDevice(s);
  const ring = $('ring');
  if (!s.ring) ring.textContent = 'No queue yet: negotiate features, then set up queue 0.';
  else ring.replaceChildren(...(s.ring.kind === 'split' ? drawSplit(s.ring) : drawPacked(s.ring)));
  $('ring-title').textContent = `Queue 0 in guest RAM${s.ring ? ` (${s.ring.kind} ring)` : ''}`;
  const last = s.log.at(-1);
  $('last-step').textContent = last ? `${last.step}: ${last.result}` : 'Start with step 1.';
  $('trace').textContent = last ? last.trace.join('\n') || '(the device did nothing: a driver writing RAM is not traced)' : '';
  $('history').textContent = s.log.map((l, i) => `${i + 1}. ${l.step}: ${l.result}`).join('\n');
  previous = current;
}

function on(id: string, step: () => unknown): void {
  $(id).addEventListener('click', () => {
    step();
    draw();
  });
}

on('negotiate', () => machine.negotiate({ eventIdx: checked('f-event-idx'), indirect: checked('f-indirect'), packed: checked('f-packed') }));
on('setup', () => machine.setupQueue());
on('post-one', () => machine.post('one'));
on('post-chain', () => machine.post('chain'));
on('post-indirect', () => machine.post('indirect'));
on('notify', () => machine.notify());
on('take', () => machine.takeUsed());
on('reset', () => machine.reset());
on('hostile', () => machine.hostile());

$('save').addEventListener('click', () => {
  const v = machine.saveDevice();
  $('blob').replaceChildren(
    table('blob-fields', `${v.size} bytes`, ['offset', 'field', 'size', 'value', 'bytes'],
      v.rows.map((r) => [hex(r.offset), '\u00a0\u00a0'.repeat(r.depth) + r.name, r.size, r.value, r.hex])),
  );
});

$('stream-file').addEventListener('change', async (e) => {
  const file = (e.target as HTMLInputElement).files?.[0];
  if (!file) return;
  const out = $('stream');
  try {
    out.textContent = formatInspect(inspectStream(new Uint8Array(await file.arrayBuffer())));
  } catch (err) {
    out.textContent = `not a migration stream this decoder reads: ${err instanceof Error ? err.message : String(err)}`;
  }
});

draw();
