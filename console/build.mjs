// `npm run build:console`: bundles the web console (console/src) with esbuild into
// build/assets/console/ (index.html, app.js, app.css), which wrangler serves as static
// assets at /console/. Needs only the npm packages; never cargo.

import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

import { build } from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(here, '..', 'build', 'assets', 'console');
const dev = process.argv.includes('--dev');

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: { app: path.join(here, 'src', 'main.js') },
  outdir: out,
  bundle: true,
  format: 'esm',
  target: ['es2022'],
  minify: !dev,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
});
copyFileSync(path.join(here, 'index.html'), path.join(out, 'index.html'));
// Workers static assets read _headers from the root of the assets directory.
copyFileSync(path.join(here, '_headers'), path.join(out, '..', '_headers'));

let raw = 0;
let gz = 0;
for (const name of readdirSync(out)) {
  const file = path.join(out, name);
  raw += statSync(file).size;
  gz += gzipSync(readFileSync(file), { level: 9 }).length;
}
console.log(`[console] build/assets/console: ${(raw / 1024).toFixed(1)} KB raw, ${(gz / 1024).toFixed(1)} KB gzipped`);
