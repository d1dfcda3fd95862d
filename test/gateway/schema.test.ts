import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { renderJsonSchema } from '../../gateway/config/json-schema.js';
import { REPO } from '../helpers/harness.js';

t.test('schema/gateway.schema.json is generated from the current schema declaration', async (t) => {
  const file = path.join(REPO, 'schema', 'gateway.schema.json');
  t.ok(fs.existsSync(file), 'the published schema exists');
  const published = fs.readFileSync(file, 'utf8');
  t.equal(published, renderJsonSchema(), 'stale: run `npm run schema` and commit schema/gateway.schema.json');
});

t.test('the published schema forbids unknown keys and documents defaults', async (t) => {
  const schema = JSON.parse(renderJsonSchema()) as {
    additionalProperties: boolean;
    properties: Record<
      string,
      { additionalProperties?: boolean; properties?: Record<string, { default?: unknown }> }
    >;
  };
  t.equal(schema.additionalProperties, false);
  t.equal(schema.properties.listen!.additionalProperties, false);
  t.equal(schema.properties.listen!.properties!.port!.default, 8080);
  t.equal(schema.properties.admin!.properties!.host!.default, '127.0.0.1');
});

t.test('the README configuration reference is generated from the current schema', async (t) => {
  const { spliceReference } = await import('../../gateway/config/reference.js');
  const readme = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');
  t.equal(readme, spliceReference(readme), 'stale: run `npm run schema` and commit README.md');
});
