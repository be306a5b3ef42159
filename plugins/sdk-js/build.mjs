// Builds a JavaScript processor into a component against this SDK's WIT:
//   node plugins/sdk-js/build.mjs APP.js OUT.wasm
// Bundles APP.js with the SDK (esbuild), then componentize-js (0.23.0)
// makes the component, without HTTP (the sandbox has none). Skipped when
// OUT.wasm was built from the same bundle (hash in OUT.wasm.src).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const [app, out] = process.argv.slice(2);
if (!app || !out) {
  console.error('usage: node build.mjs APP.js OUT.wasm');
  process.exit(2);
}
const sdk = dirname(fileURLToPath(import.meta.url));
// componentize-js reads one module from a file, kept beside the component.
const bundle = resolve(out).replace(/\.wasm$/, '') + '.bundle.js';
const esbuild = await import('esbuild');
const bundled = await esbuild.build({
  entryPoints: [resolve(app)],
  bundle: true,
  format: 'esm',
  write: false,
  outfile: bundle,
  sourcemap: 'external',
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
const code = bundled.outputFiles.find((f) => f.path.endsWith('.js'));
const map = JSON.parse(bundled.outputFiles.find((f) => f.path.endsWith('.map')).text);
// An error's place in the component is a line of the bundle: the SDK maps
// it back to the author's file and line with this table, appended after
// the code so no line of it moves.
const text = `${code.text}\nglobalThis.__kinesisSourceLines = ${JSON.stringify(sourceLines(map))};\n`;

/** Per bundle line, [source, line] of its first mapping (null: none), and
 * each source's path from here and whether it is the SDK's. */
function sourceLines({ sources, mappings }) {
  const digits = new Map([...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'].map((c, i) => [c, i]));
  const lines = [];
  // Source and original line carry over from segment to segment (VLQ deltas).
  let source = 0, line = 0;
  for (const row of mappings.split(';')) {
    let first = null;
    for (const segment of row.split(',')) {
      const fields = [];
      let value = 0, shift = 0;
      for (const c of segment) {
        const d = digits.get(c) ?? 0;
        value += (d & 31) * 2 ** shift;
        if (d & 32) { shift += 5; continue; }
        fields.push(value % 2 ? -(value - 1) / 2 : value / 2);
        value = 0;
        shift = 0;
      }
      if (fields.length < 4) continue;
      source += fields[1];
      line += fields[2];
      first ??= [source, line + 1];
    }
    lines.push(first);
  }
  const sdkSource = join(sdk, 'src') + sep;
  const paths = sources.map((s) => resolve(dirname(bundle), s));
  return {
    sources: paths.map((p) => relative(process.cwd(), p) || p),
    sdk: paths.map((p) => p.startsWith(sdkSource)),
    lines,
  };
}

// The bundle holds every file the app imports: it, the WIT, the pinned
// tools and this script name the component.
const hash = createHash('sha256');
hash.update(text);
for (const f of [join(sdk, 'wit', 'processor.wit'), join(sdk, 'package.json'), fileURLToPath(import.meta.url)]) hash.update(readFileSync(f));
if (existsSync(join(sdk, 'package-lock.json'))) hash.update(readFileSync(join(sdk, 'package-lock.json')));
const digest = hash.digest('hex');
if (existsSync(out) && existsSync(`${out}.src`) && readFileSync(`${out}.src`, 'utf8') === digest) {
  console.error(`${out} is up to date (no source changed since it was built)`);
  process.exit(0);
}
const { componentize } = await import('@bytecodealliance/componentize-js');
mkdirSync(dirname(bundle), { recursive: true });
writeFileSync(bundle, text);
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
