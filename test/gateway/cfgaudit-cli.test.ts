import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runReplay } from '../../gateway/commands/replay.js';
import { REPO, TEST_SECRET } from '../helpers/harness.js';
import { runCli } from '../helpers/cli-process.js';

/**
 * Command-line options are strict: a typo, a missing value or a stray argument is a usage
 * error (exit 2), never ignored in favour of ./gateway.yaml; `--config=FILE` means the same
 * to every command.
 */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-cfgaudit-cli-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const absent = path.join(dir, 'absent.yaml');
// each run pays for tsx's start-up: side by side
const runs = {
  typo: runCli(['validate', '--conifg', absent]),
  missing: runCli(['validate', '--config']),
  stray: runCli(['validate', absent]),
  empty: runCli(['validate', '--config=']),
};

t.test('validate with a misspelt option: exit 2 and the usage, not ./gateway.yaml', async (t) => {
  const r = await runs.typo;
  t.equal(r.code, 2);
  t.equal(r.stdout, '', 'nothing validated');
  t.match(r.stderr, /^validate: Unknown option '--conifg'\nreceipt-gateway: a security gateway/);
  t.match(r.stderr, /usage:/);
});

t.test('validate --config without a value, or with an empty one, or a stray argument: exit 2', async (t) => {
  const missing = await runs.missing;
  t.equal(missing.code, 2);
  t.equal(missing.stdout, '');
  t.match(missing.stderr, /^validate: Option '--config <value>' argument missing\n/);
  const empty = await runs.empty;
  t.equal(empty.code, 2);
  t.equal(empty.stdout, '');
  t.match(empty.stderr, /^validate: Option '--config' needs a value\n/);
  const stray = await runs.stray;
  t.equal(stray.code, 2);
  t.equal(stray.stdout, '');
  t.match(stray.stderr, /^validate: Unexpected argument '/);
});

function capture(): { text: string; write(s: string): boolean } {
  return {
    text: '',
    write(s: string) {
      this.text += s;
      return true;
    },
  };
}

t.test('replay --config=FILE reads FILE; an unknown option is a usage error', async (t) => {
  const requests = path.join(dir, 'r.jsonl');
  fs.writeFileSync(
    requests,
    `${JSON.stringify({ id: 'a', method: 'GET', path: '/api/health', headers: {}, body: null })}\n`,
  );
  const bad = path.join(dir, 'bad.yaml');
  fs.writeFileSync(bad, 'listen:\n  prot: 1\n');
  const out = capture();
  const err = capture();
  const code = await runReplay([`--config=${bad}`, '--requests', requests], out, err, {
    JWT_SECRET_KEY: TEST_SECRET,
  });
  t.equal(code, 1, 'the named file is the one loaded');
  t.equal(out.text, '');
  t.match(err.text, `${bad}:2:3: listen.prot: unknown key "prot"`);

  const out2 = capture();
  const err2 = capture();
  const code2 = await runReplay(
    ['--config', path.join(REPO, 'gateway.yaml'), '--requests', requests, '--olny', 'pattern-block'],
    out2,
    err2,
    { JWT_SECRET_KEY: TEST_SECRET },
  );
  t.equal(code2, 2);
  t.equal(out2.text, '', 'nothing replayed with every policy instead of the one asked for');
  t.match(err2.text, /^replay: Unknown option '--olny'\nusage: receipt-gateway replay/);
});
