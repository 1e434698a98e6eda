// Browser checks of the operator console in headless Chromium (Debian's, never a download).
// Driven by crates/portcullis/tests/e2e/console.rs, which starts the real gateway and origin,
// makes the proxied requests and passes what it made in the environment:
//
//   CONSOLE_URL   admin listener base, e.g. http://127.0.0.1:PORT
//   ADMIN_KEY     operator key, tenant default, role admin
//   VIEWER_KEY    operator key, tenant default, role viewer
//   AGENT         the agent that made the requests (suspended at the end, in the UI)
//   AGENT_PROXY   http://AGENT:SECRET@HOST:PORT, for the live-update request
//   ORIGIN_URL    the origin behind the proxy (http://127.0.0.1:PORT)
//   DENY_PATH     the path of the request the policy denied
//   DENY_REASON   the reason the gateway recorded for it
//   SCREENSHOTS   directory for one PNG per page
//   CHROMIUM      browser executable (default /usr/bin/chromium)
//
// Prints `PASS <step>` or `FAIL <step>: why` per step and exits non-zero on any failure.

import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const env = (k, dflt) => {
  const v = process.env[k] ?? dflt;
  if (v === undefined) { console.log(`FAIL setup: ${k} is not set`); process.exit(2); }
  return v;
};
const BASE = env('CONSOLE_URL');
const ADMIN_KEY = env('ADMIN_KEY');
const VIEWER_KEY = env('VIEWER_KEY');
const AGENT = env('AGENT');
const AGENT_PROXY = new URL(env('AGENT_PROXY'));
const ORIGIN = env('ORIGIN_URL');
const DENY_REASON = env('DENY_REASON');
const DENY_PATH = env('DENY_PATH');
const SHOTS = env('SCREENSHOTS');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const WAIT = 15000;

fs.mkdirSync(SHOTS, { recursive: true });
let failed = false;
const check = (cond, what) => { if (!cond) throw new Error(what); };

async function step(name, fn) {
  try {
    await fn();
    console.log(`PASS ${name}`);
  } catch (e) {
    failed = true;
    console.log(`FAIL ${name}: ${(e && e.message ? e.message : String(e)).split('\n')[0]}`);
  }
}

/** A proxied request made by the agent itself (absolute-form through the gateway). */
function proxied(p) {
  return new Promise((resolve, reject) => {
    const auth = Buffer.from(`${decodeURIComponent(AGENT_PROXY.username)}:${decodeURIComponent(AGENT_PROXY.password)}`).toString('base64');
    const req = http.request({
      host: AGENT_PROXY.hostname, port: AGENT_PROXY.port, method: 'GET', path: ORIGIN + p,
      headers: { 'Proxy-Authorization': `Basic ${auth}`, Host: new URL(ORIGIN).host },
    }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
    req.on('error', reject);
    req.end();
  });
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
const dialogs = [];
const cspErrors = [];

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('dialog', async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) cspErrors.push(m.text());
  });
  return page;
}

async function signIn(page, key) {
  await page.goto(`${BASE}/ui/`);
  await page.waitForURL(/\/ui\/login/);
  await page.fill('#key', key);
  await Promise.all([page.waitForURL(`${BASE}/ui/`), page.click('button[type=submit]')]);
}

const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: false });

const page = await newPage();

await step('sign-in refuses a wrong key', async () => {
  await page.goto(`${BASE}/ui/`);
  await page.waitForURL(/\/ui\/login/);
  await shot(page, '01-login');
  await page.fill('#key', 'pck_wrong_key_000000000000000000000');
  await page.click('button[type=submit]');
  await page.locator('#login-error').waitFor();
  check((await page.locator('#login-error').innerText()).includes('not accepted'), 'no refusal message');
  check(page.url().includes('/ui/login'), `left the login page: ${page.url()}`);
  const cookies = await page.context().cookies();
  check(!cookies.some((c) => c.name === 'portcullis_session'), 'a session cookie was set');
});

await step('sign-in with an operator key', async () => {
  await page.fill('#key', ADMIN_KEY);
  await Promise.all([page.waitForURL(`${BASE}/ui/`), page.click('button[type=submit]')]);
  check((await page.locator('h1').innerText()) === 'Requests', 'not on the Requests page');
  const cookies = await page.context().cookies();
  const s = cookies.find((c) => c.name === 'portcullis_session');
  check(s && s.httpOnly && s.sameSite === 'Strict' && s.path === '/ui', `cookie flags: ${JSON.stringify(s)}`);
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
  check(!stored.includes(ADMIN_KEY) && !stored.includes('portcullis_session'), 'key or session readable from script or storage');
});

await step('a proxied request appears with agent, verdict, policy and tokens', async () => {
  const row = page.locator('#rows tr', { has: page.locator('.path', { hasText: /^\/v1\/chat\/completions$/ }) })
    .filter({ has: page.locator('.pill', { hasText: /^allow$/ }) }).first();
  await row.waitFor();
  check((await row.locator('.agent-id').innerText()) === AGENT, 'agent');
  check((await row.locator('.policy').innerText()) === 'guard', `policy: ${await row.locator('.policy').innerText()}`);
  check((await row.locator('.tokens').innerText()) === '41', `tokens: ${await row.locator('.tokens').innerText()}`);
  check((await page.locator('#range').innerText()).includes('last 24h'), 'range not shown');
  await shot(page, '02-requests');
});

await step('live updates show a new request without reloading', async () => {
  await page.goto(`${BASE}/ui/`);
  await page.locator('#rows').waitFor();
  const status = await proxied('/live-check');
  check(status === 200, `proxied request answered ${status}`);
  await page.locator('#rows .path', { hasText: /^\/live-check$/ }).waitFor({ timeout: WAIT });
});

await step('filter by verdict', async () => {
  await page.selectOption('select[name=verdict]', 'deny');
  await Promise.all([page.waitForURL(/verdict=deny/), page.click('#filters button[type=submit]')]);
  const verdicts = await page.locator('#rows tr').evaluateAll((rows) => rows.map((r) => r.dataset.verdict));
  check(verdicts.length >= 1 && verdicts.every((v) => v === 'deny'), `verdicts: ${verdicts}`);
  check((await page.locator('select[name=verdict]').inputValue()) === 'deny', 'filter not kept');
});

await step('the detail shows the decision trace', async () => {
  const denied = page.locator('#rows tr', { has: page.locator('.path', { hasText: DENY_PATH }) }).first();
  await Promise.all([page.waitForURL(/\/ui\/requests\//), denied.locator('.rowlink').click()]);
  const trace = await page.locator('#trace').innerText();
  check(trace.includes('guard') && trace.includes('denied') && trace.includes(DENY_REASON), `trace: ${trace}`);
  const fields = await page.locator('#fields').innerText();
  for (const f of ['decision_id', 'latency_ms', 'policy_us', 'client_addr']) check(fields.includes(f), `field ${f}`);
  await shot(page, '03-request-detail');
});

await step('simulating the denied request gives the same decision and reasons', async () => {
  await Promise.all([page.waitForURL(/\/ui\/simulate\?from=/), page.click('#simulate-this')]);
  await Promise.all([page.waitForLoadState('load'), page.click('#sim-run')]);
  await page.locator('#sim-verdict').waitFor();
  check((await page.locator('#sim-verdict').innerText()) === 'deny', 'verdict');
  check((await page.locator('#sim-policy').innerText()) === 'guard', 'policy');
  check((await page.locator('#sim-reasons').innerText()).trim() === DENY_REASON, `reasons: ${await page.locator('#sim-reasons').innerText()}`);
  const recorded = await page.locator('#recorded').innerText();
  check(recorded.includes('deny') && recorded.includes(DENY_REASON), `recorded: ${recorded}`);
  await shot(page, '04-simulator');
});

await step('agent-controlled payloads render inert', async () => {
  await page.goto(`${BASE}/ui/?since=24h`);
  const sub = page.locator('#rows .subagent', { hasText: '"><img' }).first();
  await sub.waitFor();
  check((await sub.innerText()) === '"><img src=x onerror=alert(1)>', `sub-agent text: ${await sub.innerText()}`);
  const path = page.locator('#rows .path', { hasText: '<script>' }).first();
  check((await path.innerText()) === '/<script>alert(1)</script>', 'path text');
  await shot(page, '05-requests-payloads');
  const row = page.locator('#rows tr', { has: page.locator('.subagent', { hasText: '"><img' }) }).first();
  await Promise.all([page.waitForURL(/\/ui\/requests\//), row.locator('.rowlink').click()]);
  const fields = await page.locator('#fields').innerText();
  check(fields.includes('<img src=x onerror=alert(1)>') && fields.includes('<script>alert(1)</script>'), 'payloads not visible as text');
  await page.goto(`${BASE}/ui/?model=${encodeURIComponent('"><img src=x onerror=alert(1)>')}`);
  check(await page.locator('#rows tr').count() >= 1, 'the proxied request with a model payload is not listed');
  const injected = await page.evaluate(() => ({
    imgs: document.querySelectorAll('img').length,
    scripts: [...document.scripts].filter((s) => !s.src.includes('/ui/assets/')).length,
    handlers: document.querySelectorAll('[onerror],[onload],[onclick]').length,
  }));
  check(injected.imgs === 0 && injected.scripts === 0 && injected.handlers === 0, `injected: ${JSON.stringify(injected)}`);
  check(dialogs.length === 0, `dialogs fired: ${dialogs}`);
});

await step('every page renders (screenshots)', async () => {
  for (const [p, name, h1] of [['agents', '06-agents', 'Agents'], ['policies', '07-policies', 'Policies'], ['usage', '08-usage', 'Usage'], ['credentials', '09-credentials', 'Credentials'], ['simulate', '10-simulator-empty', 'Policy simulator']]) {
    const r = await page.goto(`${BASE}/ui/${p}`);
    check(r.status() === 200, `${p}: ${r.status()}`);
    check((await page.locator('main h1').first().innerText()) === h1, `${p}: heading`);
    if (p === 'usage') check(await page.locator('#chart-requests svg rect').count() >= 1, 'no bars in the usage chart');
    await shot(page, name);
  }
});

await step('a change without the CSRF token is refused', async () => {
  const r = await page.request.post(`${BASE}/ui/agents/${AGENT}/suspend`, { form: {}, maxRedirects: 0 });
  check(r.status() === 403, `status ${r.status()}`);
  check((await r.text()).includes('CSRF'), 'no CSRF explanation');
  await page.goto(`${BASE}/ui/agents`);
  check((await page.locator(`tr[data-agent=${AGENT}] .status`).innerText()) === 'active', 'agent changed anyway');
});

await step('a viewer has no controls and a forged change is refused', async () => {
  const viewer = await newPage();
  await signIn(viewer, VIEWER_KEY);
  await viewer.goto(`${BASE}/ui/agents`);
  check((await viewer.locator('[data-action]').count()) === 0, 'viewer sees action controls');
  check((await viewer.locator('#create-agent').count()) === 0, 'viewer sees the create form');
  const csrf = await viewer.locator('input[name=csrf]').first().inputValue();
  const r = await viewer.request.post(`${BASE}/ui/agents/${AGENT}/suspend`, { form: { csrf }, maxRedirects: 0 });
  check(r.status() === 403, `forged POST answered ${r.status()}`);
  check((await r.text()).includes('viewer'), 'no role explanation');
  await viewer.context().close();
});

await step('suspend the agent in the UI', async () => {
  await page.goto(`${BASE}/ui/agents`);
  const row = page.locator(`tr[data-agent=${AGENT}]`);
  await row.locator('[data-action=suspend]').click();
  await Promise.all([page.waitForURL(/done=suspend/), row.locator('[data-confirm=suspend]').click()]);
  check((await page.locator(`tr[data-agent=${AGENT}] .status`).innerText()) === 'suspended', 'not suspended');
  check((await page.locator('.flash').innerText()).includes('suspended'), 'no confirmation message');
  await shot(page, '11-agents-suspended');
});

await step('no CSP violation and no dialog anywhere', async () => {
  check(cspErrors.length === 0, `CSP: ${cspErrors.join(' | ')}`);
  check(dialogs.length === 0, `dialogs: ${dialogs}`);
});

await browser.close();
process.exit(failed ? 1 : 0);
