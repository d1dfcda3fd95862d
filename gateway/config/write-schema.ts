// `npm run schema`: regenerate schema/gateway.schema.json (a test fails when it is stale).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderJsonSchema } from './json-schema.js';

const out = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'schema', 'gateway.schema.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, renderJsonSchema());
process.stdout.write(`wrote ${path.relative(process.cwd(), out)}\n`);
