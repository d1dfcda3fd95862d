// `npm run schema`: regenerate schema/gateway.schema.json and the README's configuration
// reference from the schema declaration (tests fail when either is stale).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderJsonSchema } from './json-schema.js';
import { spliceReference } from './reference.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = path.join(root, 'schema', 'gateway.schema.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, renderJsonSchema());
const readme = path.join(root, 'README.md');
fs.writeFileSync(readme, spliceReference(fs.readFileSync(readme, 'utf8')));
process.stdout.write('wrote schema/gateway.schema.json and the README configuration reference\n');
