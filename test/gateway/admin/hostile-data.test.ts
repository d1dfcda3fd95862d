/**
 * Attacker-controlled request data (path, query, User-Agent, X-Request-Id, JSON field names
 * and values) sent through the real gateway (harness: real mock upstream, real listeners),
 * then shown to the operator: the dashboard in headless Chromium executes nothing and
 * breaks nowhere; `explain` prints no escape sequence or bidi control.
 */
import t from 'tap';
import { chromium } from 'playwright-core';
import { startHarness } from '../../helpers/harness.js';
import { rawExchange } from '../../helpers/raw-http.js';
import { runExplain } from '../../../gateway/commands/explain.js';
import type { DecisionEntry } from '../../../gateway/observability/decisions.js';

const CHROMIUM = '/usr/bin/chromium';
/** raw control characters, DEL, C1, bidi controls, line/paragraph separators */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const UNSAFE = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]/;

t.test('hostile request data on the dashboard and in explain', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const sent: { id: string; status: number }[] = [];
  const send = async (head: string, body = '') => {
    const ex = await rawExchange(h.url, Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(body)]), {
      responses: 1,
    });
    const r = ex.responses[0]!;
    sent.push({ id: r.headers['x-request-id']!, status: r.status });
  };
  await send('GET /api/receipts?q=<b>bold</b>&x="></td><i>it</i> HTTP/1.1\r\nHost: a\r\n\r\n');
  await send('GET /api/receipts HTTP/1.1\r\nHost: a\r\nX-Request-Id: <svg/onload=alert(1)>\r\n\r\n');
  await send('GET /api/receipts HTTP/1.1\r\nHost: a\r\nUser-Agent: <img src=x onerror=alert(2)>\r\n\r\n');
  // a JSON field name with an 8-bit CSI and a bidi override, its value an SQL injection
  const json = JSON.stringify({
    ['note\u009b2J\u202e<b>']: "1' UNION SELECT password FROM users--\u009b31m",
  });
  await send(
    `POST /api/auth/login HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(json)}\r\n\r\n`,
    json,
  );
  t.same(
    sent.map((s) => s.status),
    [401, 401, 403, 403],
    'all refused',
  );
  t.equal(sent[1]!.id, '<svg/onload=alert(1)>', 'a well-formed X-Request-Id is kept');
  t.same(await h.mockRequests(), [], 'nothing reached the upstream');

  // --- explain: the decision with the hostile field name ---
  const sqliId = sent[3]!.id;
  const entry = (await (
    await fetch(`${h.adminUrl}/api/decisions/${encodeURIComponent(sqliId)}`)
  ).json()) as DecisionEntry;
  t.match(JSON.stringify(entry), 'note\u009b2J\u202e<b>', 'the decision keeps the field name as sent');
  const out = { text: '', err: '' };
  const code = await runExplain([sqliId, '--admin', h.adminUrl], {
    stdout: { write: (s: string) => (out.text += s) },
    stderr: { write: (s: string) => (out.err += s) },
  });
  t.equal(code, 0);
  t.equal(out.err, '');
  t.notMatch(out.text, UNSAFE, 'no raw control or bidi character printed');
  t.ok(out.text.includes(String.raw`target="json:note\x9b2J\u202e<b>"`), 'shown with visible escapes');

  // --- the dashboard ---
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('dialog', (d) => {
    problems.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  page.on('console', (m) => problems.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  const res = await page.goto(`${h.adminUrl}/`);
  const csp = res!.headers()['content-security-policy']!;
  t.match(csp, /^default-src 'none'; script-src 'sha256-[^' ]+'; style-src 'sha256-[^' ]+';/);
  t.notMatch(csp, /unsafe-inline|unsafe-eval|\*/);
  await page.waitForSelector('body[data-loaded]');
  const rows = await page.$$eval('#denials tbody tr', (els) =>
    els.map((e) => e.getAttribute('data-request-id')),
  );
  t.same(
    rows,
    [...sent].reverse().map((s) => s.id),
    'every refusal listed, newest first, ids as sent',
  );
  t.equal(
    await page.textContent(`tr[data-request-id="${sent[0]!.id}"] td.path`),
    'GET /api/receipts?q=<b>bold</b>&x="></td><i>it</i>',
    'the path is text',
  );
  t.equal(
    await page.textContent('tr[data-request-id="<svg/onload=alert(1)>"] td:nth-child(2)'),
    '<svg/onload=alert(1)>',
  );
  for (const s of sent) {
    await page.click(`a[data-id="${s.id.replace(/"/g, '\\"')}"]`);
    await page.locator('#explain h3', { hasText: `Request ${s.id}: refused` }).waitFor({ timeout: 5000 });
  }
  t.match(await page.textContent('#explain-steps'), 'json:note\u009b2J\u202e<b>', 'field name shown as text');
  t.equal(
    await page
      .locator(
        ['#denials', '#explain'].flatMap((c) => ['b', 'i', 'img', 'svg'].map((e) => `${c} ${e}`)).join(', '),
      )
      .count(),
    0,
    'no element made of request data',
  );
  t.equal(await page.locator('script').count(), 1, 'only the page script');
  t.same(problems, [], 'nothing executed, no console error');
});
