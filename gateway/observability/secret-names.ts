/**
 * Names (query parameters, body fields, headers, cookies) whose values are secrets: the
 * audit log's `path` redacts their values, and a pattern rule that matches in one of them
 * reports `[redacted]` instead of an excerpt (`detail.matches`). One list, so that a value
 * redacted from the path is not written out again in the same line's details.
 */
export const SECRET_NAME =
  /pass|pwd|secret|token|api[_-]?key|apikey|key|auth|session|sig|cred|jwt|otp|code|cookie|sid/i;
