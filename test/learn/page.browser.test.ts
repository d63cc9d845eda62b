// The learning page in a real browser: Debian's Chromium, headless, driven by playwright-core,
// opens dist/learn/index.html from the file system (built here first, so it is never stale),
// clicks through driver steps and reads what the page shows. Missing Chromium follows the
// project's missing-QEMU policy: with CI=true one test fails saying why; locally the tests are
// skipped with a loud warning. A screenshot goes to .cache/learn/page.png for a person to look at.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtIORng } from '../../src/devices/rng.js';
import { MicrovmMachine } from '../../src/machine/microvm.js';
import { QomObject } from '../../src/machine/qom.js';
import { saveVm } from '../../src/migration/savevm.js';
import { requiredToolOrPolicy } from '../support/required-tool.js';

const CHROMIUM = '/usr/bin/chromium';
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = join(root, 'dist', 'learn');


if (requiredToolOrPolicy('learning page in Chromium', existsSync(CHROMIUM), CHROMIUM, "Debian's Chromium: apt-get install -y --no-install-recommends chromium")) {
  describe('learning page in Chromium', () => {
    let browser: BrowserContext;
    let page: Page;
    let profile: string;

    beforeAll(async () => {
      // The same build as scripts/build.mjs does for dist/learn.
      await esbuild.build({
        absWorkingDir: root,
        bundle: true,
        platform: 'browser',
        target: 'es2022',
        format: 'iife',
        entryPoints: { learn: 'src/learn/page.ts' },
        outdir: out,
        logLevel: 'error',
      });
      copyFileSync(join(root, 'src/learn/index.html'), join(out, 'index.html'));
      profile = mkdtempSync(join(tmpdir(), 'virtio-ts-chromium-'));
      // A fresh, empty profile (playwright passes it as --user-data-dir).
      browser = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        viewport: { width: 1280, height: 1800 },
        args: [
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
        ],
      });
      page = browser.pages()[0] ?? (await browser.newPage());
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(pathToFileURL(join(out, 'index.html')).href);
      expect(errors).toEqual([]);
    });

    afterAll(async () => {
      await browser?.close();
      if (profile) rmSync(profile, { recursive: true, force: true });
    });

    const text = (sel: string) => page.locator(sel).innerText();
    const click = (id: string) => page.click(`#${id}`);

    it('split ring: the used ring shows the completed id and length', async () => {
      await click('negotiate');
      await click('setup');
      await click('post-chain');
      expect(await text('#split-desc')).toContain('NEXT|WRITE');
      await click('notify');
      expect(await text('#split-used')).toMatch(/ring\[0\]\s+id 0, len 32/);
      expect(await text('#dev-regs')).toMatch(/interrupt line\s+high/);
      expect(await text('#trace')).toContain('virtio-rng: queue 0 used[0] = {id 0, len 32}');
      await click('take');
      expect(await text('#last-step')).toContain('used: {id 0, len 32}');
      await click('save');
      expect(await text('#blob-fields')).toMatch(/0xc\s+status\s+1\s+15 \(0xf\)\s+0f/);
    });

    it('hostile: a descriptor chained to itself shows NEEDS_RESET; reset recovers', async () => {
      await click('hostile');
      expect(await text('#dev-regs')).toContain('NEEDS_RESET');
      expect(await text('#trace')).toContain('ERROR Looped descriptor');
      // Not fullPage: with it, this headless Chromium never finishes the screenshot.
      await page.screenshot({ path: screenshot(), timeout: 10_000 });
      await click('reset');
      expect(await text('#dev-regs')).not.toContain('NEEDS_RESET');
      expect(await text('#dev-regs')).toMatch(/Status\s+0x0 reset/);
    });

    it('packed ring: the wrap counters flip after a lap of the ring', async () => {
      await page.check('#f-packed');
      await click('negotiate');
      await click('setup');
      expect(await text('#packed-driver')).toMatch(/avail wrap counter\s+1/);
      await click('post-one');
      await click('post-chain'); // four slots used: the lap is over
      expect(await text('#packed-driver')).toMatch(/avail wrap counter\s+0/);
      await click('notify');
      expect(await text('#dev-queue')).toMatch(/last_avail_wrap_counter\s+0/);
      expect(await text('#dev-queue')).toMatch(/used_wrap_counter\s+0/);
      expect(await text('#packed-desc')).toContain('used (wrap 1)');
      await click('take');
      expect(await text('#packed-driver')).toMatch(/used wrap counter\s+0/);
    });

    it('decodes a whole migration stream file the user picks', async () => {
      // A microvm stream with a virtio-rng, saved by our own saveVm.
      const machine = new MicrovmMachine({ ramSize: 1 << 20 });
      machine.addDevice(new VirtIORng({ memory: machine.sys.ram }), { qom: new QomObject('virtio-rng-device') });
      const stream = saveVm(machine, { runState: 'running' });
      await page.setInputFiles('#stream-file', { name: 'vm.mig', mimeType: 'application/octet-stream', buffer: Buffer.from(stream) });
      await page.waitForFunction(() => (document.getElementById('stream')?.textContent ?? '').length > 0);
      const shown = await text('#stream');
      expect(shown).toContain("QEMU migration stream, file version 3, machine 'microvm'");
      expect(shown).toMatch(/virtio-mmio@[0-9a-f]+\/virtio-rng/);
      expect(shown).toContain('virtio over mmio');
    });
  });
}

function screenshot(): string {
  const dir = join(root, '.cache', 'learn');
  mkdirSync(dir, { recursive: true });
  return join(dir, 'page.png');
}
