import { buildConfigSchema } from './schema.js';

/** The published JSON Schema of gateway.yaml, from the same declaration the validator uses. */
export function renderJsonSchema(): string {
  const schema = { $schema: 'http://json-schema.org/draft-07/schema#', ...buildConfigSchema() };
  return `${JSON.stringify(schema, null, 2)}\n`;
}
