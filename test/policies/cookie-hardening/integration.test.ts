/** Cookie hardening over real TCP, on the mock's Set-Cookie route. */
import t from 'tap';
import { startHarness } from '../../helpers/harness.js';

const h = await startHarness({
  config:
    'policies:\n  cookie_hardening:\n    cookies:\n      session: { secure: always, same_site: Strict }\n',
});
t.teardown(() => h.close());

t.test('upstream Set-Cookie gets the missing attributes, stated ones are kept', async (t) => {
  const token = await h.login('alice');
  const r = await fetch(`${h.url}/api/set-cookie`, { headers: { authorization: `Bearer ${token}` } });
  t.equal(r.status, 200);
  t.same(r.headers.getSetCookie(), [
    'session=abc; Path=/; HttpOnly; Secure; SameSite=Strict',
    'theme=dark; Path=/; HttpOnly; Secure; SameSite=Strict',
  ]);
  await h.reload('policies:\n  cookie_hardening:\n    same_site: Lax\n');
  const plain = await fetch(`${h.url}/api/set-cookie`, { headers: { authorization: `Bearer ${token}` } });
  t.same(
    plain.headers.getSetCookie()[0],
    'session=abc; Path=/; HttpOnly; SameSite=Lax',
    'no Secure over plain http',
  );
});
