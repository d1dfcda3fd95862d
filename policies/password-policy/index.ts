import { Type, type Static } from '@sinclair/typebox';
import type { PolicyFactory, Policy, Deny } from '../../gateway/policy.js';
import type { RequestContext } from '../../gateway/context.js';
import { ConfigError } from '../../gateway/errors.js';
import { policyBlock } from '../../gateway/config/policy-schema.js';
import { foldFieldName } from '../../gateway/body.js';

/**
 * `policies.password_policy`: on password-setting routes (register, change password)
 * the new password is checked before the upstream sees it. Off by default; a route is
 * "marked" by enabling it there, over the global block that carries the rules.
 *
 * @example
 * ```yaml
 * policies:
 *   password_policy:
 *     min_length: ${PASSWORD_MIN_LENGTH:-8}
 *     require_special: ${PASSWORD_REQUIRE_SPECIAL:-true}
 * routes:
 *   - name: register
 *     match: { path: /api/auth/register, methods: [POST] }
 *     policies: { password_policy: { enabled: true } }
 * ```
 */
export const passwordPolicySchema = policyBlock(
  {
    fields: Type.Array(Type.String({ minLength: 1 }), {
      default: ['new_password', 'password'],
      minItems: 1,
      description: 'body fields holding the new password; every one present is checked',
    }),
    username_fields: Type.Array(Type.String({ minLength: 1 }), {
      default: ['username', 'email'],
      description: 'body fields holding the username (else the authenticated subject is used)',
    }),
    min_length: Type.Integer({
      default: 8,
      minimum: 1,
      maximum: 72,
      description: 'minimum length in characters (PASSWORD_MIN_LENGTH)',
    }),
    max_bytes: Type.Integer({
      default: 72,
      minimum: 8,
      maximum: 4096,
      description: 'maximum length in UTF-8 bytes (bcrypt ignores bytes past 72)',
    }),
    require_special: Type.Boolean({
      default: true,
      description: 'require a character that is not a letter or digit (PASSWORD_REQUIRE_SPECIAL)',
    }),
    forbid_username: Type.Boolean({
      default: true,
      description: 'refuse a password equal to or containing the username',
    }),
    require_field: Type.Boolean({
      default: true,
      description: 'refuse a request that carries none of the fields',
    }),
  },
  { description: 'password requirements on password-setting routes', enabled: false },
);

export type PasswordPolicyConfig = Static<typeof passwordPolicySchema>;

/** The rules, as named in `detail.rule` of a 400 weak_password. */
export type PasswordRule =
  'required' | 'min_length' | 'max_bytes' | 'control_characters' | 'blank' | 'special' | 'username';

const SPECIAL = /[^\p{L}\p{N}]/u;
/**
 * Control characters (C0, DEL, C1): a NUL ends the password for bcrypt's C implementations
 * (the rest would not count), and no keyboard types the others.
 */
const CONTROL = /\p{Cc}/u;
/** Nothing but whitespace. */
const BLANK = /^[\p{White_Space}]*$/u;

function badRequest(message: string): Deny {
  return { code: 'bad_request', message, reason: 'password' };
}

function weak(rule: PasswordRule, field: string, message: string): Deny {
  return { code: 'weak_password', message, detail: { rule, field } };
}

function add(out: Map<string, unknown[]>, name: string, value: unknown): void {
  const key = foldFieldName(name);
  const list = out.get(key);
  if (list === undefined) out.set(key, [value]);
  else list.push(value);
}

/** Field values from a parsed JSON object or form pairs (all occurrences), by folded name. */
function fieldValues(ctx: RequestContext): Map<string, unknown[]> | Deny {
  const body = ctx.body;
  if (body === undefined || body.raw.length === 0) return badRequest('A JSON or form body is required.');
  if (body.parseError !== undefined) return badRequest('The request body could not be parsed.');
  const out = new Map<string, unknown[]>();
  if (body.form !== undefined) {
    for (const [k, v] of body.form) add(out, k, v);
    return out;
  }
  if (body.json !== undefined) {
    const j = body.json;
    if (j === null || typeof j !== 'object' || Array.isArray(j))
      return badRequest('The request body must be a JSON object.');
    for (const [k, v] of Object.entries(j)) add(out, k, v);
    return out;
  }
  return badRequest('The request body must be JSON or form-encoded.');
}

/** The password-policy policy (onBody). */
export const passwordPolicy: PolicyFactory<typeof passwordPolicySchema> = {
  name: 'password-policy',
  key: 'password_policy',
  schema: passwordPolicySchema,
  compile(config, ctx): Policy {
    if (config.max_bytes < config.min_length) {
      throw new ConfigError(`max_bytes (${config.max_bytes}) is below min_length (${config.min_length})`, [
        ...ctx.path,
        'max_bytes',
      ]);
    }
    const { fields, min_length: minLength, max_bytes: maxBytes } = config;
    // matched whatever their case: the service's binder may not mind it (see foldFieldName)
    const folded = fields.map(foldFieldName);
    const userFields = config.username_fields.map(foldFieldName);
    const requireSpecial = config.require_special;
    const forbidUsername = config.forbid_username;
    const requireField = config.require_field;

    const usernames = (values: Map<string, unknown[]>, c: RequestContext): string[] => {
      const names: string[] = [];
      for (const f of userFields) {
        for (const v of values.get(f) ?? [])
          if (typeof v === 'string' && v.trim() !== '') names.push(v.trim().toLowerCase());
      }
      if (names.length === 0 && c.identity?.method === 'jwt') names.push(c.identity.subject.toLowerCase());
      // an e-mail address as username: its local part counts too
      for (const n of [...names]) {
        const at = n.indexOf('@');
        if (at > 0) names.push(n.slice(0, at));
      }
      return names;
    };

    const check = (password: string, field: string, names: readonly string[]): Deny | undefined => {
      if ([...password].length < minLength) {
        return weak('min_length', field, `The new password must be at least ${minLength} characters long.`);
      }
      if (Buffer.byteLength(password, 'utf8') > maxBytes) {
        return weak('max_bytes', field, `The new password must be at most ${maxBytes} bytes long.`);
      }
      if (CONTROL.test(password)) {
        return weak('control_characters', field, 'The new password must not contain control characters.');
      }
      if (BLANK.test(password)) {
        return weak('blank', field, 'The new password must not be only spaces.');
      }
      if (requireSpecial && !SPECIAL.test(password)) {
        return weak(
          'special',
          field,
          'The new password must contain a special character (not a letter or digit).',
        );
      }
      if (forbidUsername) {
        const lower = password.toLowerCase();
        for (const n of names) {
          if (lower === n || (n.length >= 3 && lower.includes(n))) {
            return weak('username', field, 'The new password must not contain the username.');
          }
        }
      }
      return undefined;
    };

    return {
      name: 'password-policy',
      mode: config.mode,
      failure: 'closed',
      needsBody: true,
      onBody(c) {
        const values = fieldValues(c);
        if (!(values instanceof Map)) return values;
        const map = values;
        let seen = false;
        let names: string[] | undefined;
        for (let i = 0; i < fields.length; i++) {
          const field = fields[i]!;
          for (const v of map.get(folded[i]!) ?? []) {
            if (typeof v !== 'string') return badRequest(`The field "${field}" must be a string.`);
            seen = true;
            names ??= usernames(map, c);
            const deny = check(v, field, names);
            if (deny !== undefined) return deny;
          }
        }
        if (!seen && requireField) return weak('required', fields[0]!, 'The new password is missing.');
        return undefined;
      },
    };
  },
};
