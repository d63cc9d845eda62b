// virtio-ts/v86 is its own entry point and v86 stays optional: the adapter never imports it.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

describe('the virtio-ts/v86 entry point', () => {
  it('is exported, with v86 an optional peer dependency', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as {
      exports: Record<string, Record<string, string>>;
      peerDependencies?: Record<string, string>;
      peerDependenciesMeta?: Record<string, { optional?: boolean }>;
      dependencies?: Record<string, string>;
    };
    expect(pkg.exports['./v86']).toEqual({
      types: './dist/types/v86.d.ts',
      browser: './dist/browser/v86.js',
      import: './dist/node/v86.js',
      default: './dist/node/v86.js',
    });
    expect(pkg.peerDependencies?.v86).toMatch(/^\^0\.5\./);
    expect(pkg.peerDependenciesMeta?.v86?.optional).toBe(true);
    expect(pkg.dependencies?.v86).toBeUndefined();
    expect(readFileSync('scripts/build.mjs', 'utf8')).toMatch(/v86: 'src\/v86\.ts'/);
  });

  it('no adapter module imports v86 (types only, structural)', () => {
    const dir = 'src/embed/v86';
    for (const f of [...readdirSync(dir).map((n) => join(dir, n)), 'src/v86.ts']) {
      const text = readFileSync(f, 'utf8');
      expect(text, f).not.toMatch(/from ['"]v86['"]|import\(['"]v86['"]\)|require\(['"]v86['"]\)/);
    }
  });
});
