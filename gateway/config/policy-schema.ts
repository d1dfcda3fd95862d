import { Type, type TProperties, type TObject, type TString } from '@sinclair/typebox';
import { DURATION_PATTERN, SIZE_PATTERN, LIMITS_PATTERN } from './units.js';

/**
 * Helpers every policy uses to declare its block of gateway.yaml. One declaration
 * gives the TypeScript type (Static<>), the validator, the defaults and the published
 * JSON Schema (schema/gateway.schema.json), so they cannot drift.
 */

/** `enforce` refuses; `monitor` logs and counts what it would have refused and lets the request through. */
export const ModeSchema = Type.Union([Type.Literal('enforce'), Type.Literal('monitor')], {
  default: 'enforce',
  description: 'enforce: refuse; monitor: log and count the would-be refusal, let the request through',
});

/** What happens when the policy itself fails (store down, internal error). */
export const FailureSchema = (dflt: 'open' | 'closed') =>
  Type.Union([Type.Literal('open'), Type.Literal('closed')], {
    default: dflt,
    description: 'open: let the request through when the check cannot run; closed: refuse it (503)',
  });

/** A policy block: `enabled` and `mode` first, then the policy's own keys. Unknown keys are errors. */
export function policyBlock<P extends TProperties>(
  props: P,
  opts: { description: string; enabled?: boolean },
): TObject<P & { enabled: ReturnType<typeof Type.Boolean>; mode: typeof ModeSchema }> {
  return Type.Object(
    {
      enabled: Type.Boolean({ default: opts.enabled ?? true, description: 'turn the policy on or off' }),
      mode: ModeSchema,
      ...props,
    },
    { additionalProperties: false, description: opts.description, default: {} },
  ) as never;
}

export const Duration = (dflt: string | undefined, description: string): TString =>
  Type.String({
    pattern: DURATION_PATTERN,
    description: `${description} (duration, e.g. 500ms, 30s, 15m, 1h)`,
    ...(dflt === undefined ? {} : { default: dflt }),
  });

export const Size = (dflt: string | undefined, description: string): TString =>
  Type.String({
    pattern: SIZE_PATTERN,
    description: `${description} (size, e.g. 512KB, 16MB)`,
    ...(dflt === undefined ? {} : { default: dflt }),
  });

export const Limits = (dflt: string | undefined, description: string): TString =>
  Type.String({
    pattern: LIMITS_PATTERN,
    description: `${description} (limits like "10/minute" or "10 per minute", several joined by ";")`,
    ...(dflt === undefined ? {} : { default: dflt }),
  });
