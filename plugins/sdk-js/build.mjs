// Builds a JavaScript processor into a component against this SDK's WIT:
//   node plugins/sdk-js/build.mjs APP.js OUT.wasm
// Bundles APP.js with the SDK (esbuild), then componentize-js (0.23.0)
// makes the component, without HTTP (the sandbox has none). Skipped when
// OUT.wasm was built from the same bundle (hash in OUT.wasm.src).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const [app, out] = process.argv.slice(2);
if (!app || !out) {
  console.error('usage: node build.mjs APP.js OUT.wasm');
  process.exit(2);
}
const sdk = dirname(fileURLToPath(import.meta.url));
const esbuild = await import('esbuild');
const bundled = await esbuild.build({
  entryPoints: [resolve(app)],
  bundle: true,
  format: 'esm',
  write: false,
  external: ['kinesis:processor/*'],
  // The SDK from this folder, wherever the app is.
  plugins: [{
    name: 'kinesis-processor',
    setup(b) {
      b.onResolve({ filter: /^kinesis-processor(\/component)?$/ }, (a) => ({
        path: join(sdk, 'src', a.path.endsWith('/component') ? 'component.js' : 'core.js'),
      }));
    },
  }],
});
// The bundle holds every file the app imports: it, the WIT, the pinned
// tools and this script name the component.
const hash = createHash('sha256');
hash.update(bundled.outputFiles[0].text);
for (const f of [join(sdk, 'wit', 'processor.wit'), join(sdk, 'package.json'), fileURLToPath(import.meta.url)]) hash.update(readFileSync(f));
if (existsSync(join(sdk, 'package-lock.json'))) hash.update(readFileSync(join(sdk, 'package-lock.json')));
const digest = hash.digest('hex');
if (existsSync(out) && existsSync(`${out}.src`) && readFileSync(`${out}.src`, 'utf8') === digest) {
  console.error(`${out} is up to date (no source changed since it was built)`);
  process.exit(0);
}
const { componentize } = await import('@bytecodealliance/componentize-js');
// componentize-js reads one module from a file; it is kept beside the
// component, since an error's place (`process@echo.bundle.js:362:9`) is a
// line of it.
const bundle = resolve(out).replace(/\.wasm$/, '') + '.bundle.js';
mkdirSync(dirname(bundle), { recursive: true });
writeFileSync(bundle, bundled.outputFiles[0].text);
console.error(`componentize-js: ${app} -> ${out}`);
const { component } = await componentize({
  sourcePath: bundle,
  witPath: join(sdk, 'wit'),
  worldName: 'merging-processor-world',
  disableFeatures: ['http', 'fetch-event'],
});
mkdirSync(dirname(resolve(out)), { recursive: true });
writeFileSync(out, component);
writeFileSync(`${out}.src`, digest);
