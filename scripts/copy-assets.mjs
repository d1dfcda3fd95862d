// Copies the non-TypeScript files the compiled code reads at run time (rule packs,
// the admin dashboard page) next to the compiled JavaScript in dist/.
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const EXT = new Set(['.yaml', '.yml', '.html', '.json', '.css', '.svg']);

function copyTree(rel) {
  const src = path.join(root, rel);
  if (!fs.existsSync(src)) return 0;
  let n = 0;
  for (const entry of fs.readdirSync(src, { withFileTypes: true })) {
    const r = path.join(rel, entry.name);
    if (entry.isDirectory()) n += copyTree(r);
    else if (EXT.has(path.extname(entry.name))) {
      const dest = path.join(root, 'dist', r);
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.copyFileSync(path.join(root, r), dest);
      n++;
    }
  }
  return n;
}

const n = ['gateway', 'policies', 'upstream-mock'].reduce((s, d) => s + copyTree(d), 0);
fs.writeFileSync(path.join(root, 'dist', '.build-stamp'), new Date().toISOString());
process.stdout.write(`copied ${n} asset file(s) to dist/\n`);
