// Drives keyproxy's page in Debian's headless Chromium through playwright-core, for tests/ui.rs:
// the admin view, then a client's own view in a fresh context, each checked through the DOM
// against the JSON the page reads (fetched here with the same token, outside the browser).
// Every request the browser makes, every response body, the DOM and the console are kept and
// checked: nothing outside /_keyproxy/, no key text, no console error. Screenshots go to
// KP_SCREENS. Exits non-zero with the reason on the first failed check.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const require = createRequire(env('KP_PLAYWRIGHT') + '/');
const { chromium } = require('playwright-core');

const base = env('KP_URL');
const admin = env('KP_ADMIN');
const clientToken = env('KP_CLIENT');
const clientName = env('KP_CLIENT_NAME');
const otherName = env('KP_OTHER_NAME');
const restingFp = env('KP_RESTING_FP');
const secrets = env('KP_SECRETS').split(',');
const screens = env('KP_SCREENS');
mkdirSync(screens, { recursive: true });

const money = (v) => (v == null ? '–' : v > 0 && v < 0.005 ? '<$0.01' : '$' + v.toFixed(2));
const count = (n) => Number(n).toLocaleString('en-US');
const problems = [];
const check = (ok, what) => {
  if (!ok) problems.push(what);
};

async function data(token) {
  const r = await fetch(base + '/_keyproxy/ui/data?history=1', { headers: { authorization: 'Bearer ' + token } });
  return r.json();
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  // Playwright gives every launch a fresh temporary --user-data-dir of its own.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  timeout: 60000,
});
const seen = { requests: [], bodies: [], console: [] };

async function open(path) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on('console', (m) => seen.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => seen.console.push(`pageerror: ${e.message}`));
  page.on('request', (r) => seen.requests.push({ url: r.url(), headers: r.headers() }));
  page.on('requestfailed', (r) => seen.console.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', async (r) => {
    try {
      seen.bodies.push(await r.text());
    } catch {
      // A redirect has no body.
    }
  });
  await page.goto(base + path);
  return { context, page };
}

async function login(page, token) {
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#token', token);
  await page.click('#login button[type=submit]');
}

const text = (page, selector) => page.locator(selector).first().innerText();

// The admin view: every section, against the JSON.
{
  const { context, page } = await open('/_keyproxy/');
  await login(page, 'kp-wrong-0123456789abcdef0123');
  await page.waitForSelector('#login-error:not([hidden])');
  check((await text(page, '#login-error')).includes('keyproxy:'), 'a wrong token shows why');
  await login(page, admin);
  await page.waitForSelector('#keys:not([hidden]) [data-fingerprint]');
  await page.waitForSelector('#history:not([hidden]) [data-series]');
  const d = await data(admin);
  check(d.view === 'admin', `the admin token's view is ${d.view}`);
  for (const [name, p] of Object.entries(d.status.profiles)) {
    for (const k of p.keys) {
      const row = `[data-profile="${name}"] [data-fingerprint="${k.fingerprint}"]`;
      const state = await text(page, `${row} [data-field=state]`);
      check(state.startsWith(k.state), `${name} ${k.fingerprint}: page says '${state}', JSON '${k.state}'`);
    }
  }
  const resting = await text(page, `[data-fingerprint="${restingFp}"] [data-field=state]`);
  check(/^resting \d+ (s|min) more, after 429$/.test(resting), `the rested key shows '${resting}'`);
  for (const a of d.agents) {
    const card = `[data-agent="${a.client}"]`;
    check((await text(page, `${card} [data-field=today-cost]`)) === money(a.usage.today.cost_usd), `${a.client}: cost today`);
    check((await text(page, `${card} [data-field=today-requests]`)) === count(a.usage.today.requests), `${a.client}: requests today`);
    const c = a.usage.today;
    check((await text(page, `${card} [data-field=today-tokens]`)) === count(c.prompt_tokens + c.completion_tokens), `${a.client}: tokens today`);
    if (a.limits.budget) {
      check((await text(page, `${card} [data-field=budget-left]`)) === money(a.limits.budget.left_usd), `${a.client}: budget left`);
    }
    check(await page.locator(`#history-legend [data-series="${a.client}"]`).count() === 1, `${a.client} in the chart's legend`);
  }
  check(d.agents.length === 2, `two agents in the JSON, got ${d.agents.length}`);
  check((await page.locator('[data-agent]').count()) === d.agents.length, 'one card per agent');
  check((await text(page, '#traffic [data-field=requests]')) === count(d.traffic.requests), 'requests in the last hour');
  check((await text(page, '#traffic [data-field=upstream-errors]')) === count(d.traffic.upstream_errors), 'upstream errors');
  check(Object.keys(d.traffic.local).length > 0, 'the traffic has local refusals');
  for (const [reason, n] of Object.entries(d.traffic.local)) {
    check((await text(page, `[data-reason="${reason}"] [data-field=count]`)) === count(n), `refusals '${reason}'`);
  }
  check(d.traffic.latency_p50_ms != null && (await text(page, '[data-field=p50]')).includes(String(d.traffic.latency_p50_ms)), 'latency p50');
  check((await text(page, '[data-field=reloads]')) === String(d.status.reload.count), 'reload count');
  await page.click('[data-split=by_model]');
  await page.waitForSelector('#history-legend [data-series="openai/gpt-4o-mini"]');
  await page.click('[data-split=by_client]');
  // At the top, so the sticky header is where a person sees it.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${screens}/admin.png`, fullPage: true });
  seen.dom = (seen.dom || '') + (await page.content()) + (await page.innerText('body'));
  await context.close();
}

// A client's view, opened as /_keyproxy/me: its own agent only.
{
  const { context, page } = await open('/_keyproxy/me');
  await login(page, clientToken);
  await page.waitForSelector(`[data-agent="${clientName}"]`);
  await page.waitForSelector('#history:not([hidden]) [data-series]');
  const d = await data(clientToken);
  check(d.view === 'client' && d.agents.length === 1 && d.status === null && d.traffic === null, 'a client token gets its own view only');
  for (const id of ['keys', 'traffic', 'health']) {
    check(await page.locator(`#${id}`).isHidden(), `#${id} is hidden from a client`);
  }
  check((await page.locator('[data-agent]').count()) === 1, 'one agent card');
  const a = d.agents[0];
  check((await text(page, '[data-field=today-cost]')) === money(a.usage.today.cost_usd), 'the client\'s cost today');
  check((await text(page, '#who')).includes(clientName), 'the header names the client');
  const body = await page.innerText('body');
  check(!body.includes(otherName), `the client's page names ${otherName}`);
  check(!body.includes('sk-or-v1'), 'the client\'s page shows no fingerprint');
  await page.screenshot({ path: `${screens}/client.png`, fullPage: true });
  seen.dom += (await page.content()) + body;
  await page.click('#logout');
  await page.waitForSelector('#login:not([hidden])');
  await context.close();
}
await browser.close();

for (const r of seen.requests) {
  check(r.url.startsWith(base + '/_keyproxy/'), `a request outside /_keyproxy/: ${r.url}`);
}
const network = JSON.stringify(seen.requests) + seen.bodies.join('\n');
for (const s of secrets) {
  check(!seen.dom.includes(s), `key text '${s.slice(0, 12)}…' in the DOM`);
  check(!network.includes(s), `key text '${s.slice(0, 12)}…' in the network log`);
}
const errors = seen.console.filter((l) => /^(error|pageerror|requestfailed)/.test(l));
check(errors.length === 0, `console errors: ${errors.join(' | ')}`);
console.log(JSON.stringify({ requests: seen.requests.length, console: seen.console, problems }));
process.exit(problems.length ? 1 : 0);
