// Drives the web UI of a running `cairn serve` in headless Chromium
// (Debian's, through playwright-core): sign in, list and filter runs, open
// a run and read its journal, send a signal, see the run complete; send an
// update to a cart and ask it a query; make and pause a schedule.
// Usage: node browser.mjs URL TOKEN RUN_ID SCREENSHOT_DIR CART_RUN_ID
// playwright-core is installed outside the repository (target/uienv): load
// it from there (ES module imports ignore NODE_PATH).
import { createRequire } from 'node:module';
const require = createRequire(`${process.env.CAIRN_PLAYWRIGHT_DIR}/`);
const { chromium } = require('playwright-core');

const [url, token, runId, shots, cartId] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CAIRN_CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const step = (what) => console.log(`step: ${what}`);
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(20000);

  step('the UI asks for the token');
  await page.goto(`${url}/ui`);
  await page.waitForURL(/\/ui\/login$/);
  await page.fill('input[name=token]', token);
  await Promise.all([page.waitForURL(/\/ui(#.*)?$/), page.click('button')]);

  step('the runs list shows the run');
  await page.waitForSelector(`#runs tr[data-run="${runId}"]`);
  await page.screenshot({ path: `${shots}/runs.png`, fullPage: true });

  step('filtering by workflow keeps it, by another hides it');
  await page.fill('input[name=workflow]', 'nonexistent');
  await page.click('#filters button');
  await page.waitForSelector('#runs td:text("No runs.")');
  await page.fill('input[name=workflow]', 'approval');
  await page.selectOption('select[name=status]', 'running');
  await page.click('#filters button');
  await page.waitForSelector(`#runs tr[data-run="${runId}"]`);

  step('the run page shows its journal');
  await page.click(`#runs tr[data-run="${runId}"] a`);
  await page.waitForSelector('#journal tbody tr');
  const calls = await page.$$eval('#journal tbody tr td:nth-child(3)', (cells) => cells.map((c) => c.textContent));
  if (!calls.includes('started') || !calls.includes('wait-signal')) throw new Error(`journal shows ${calls}`);
  const pending = await page.textContent('#pending');
  if (!pending.includes('wait-signal')) throw new Error(`pending handles: ${pending}`);
  await page.screenshot({ path: `${shots}/run.png`, fullPage: true });

  step('a signal from the UI completes the run');
  await page.fill('#signal-name', 'approve');
  await page.fill('#signal-payload', '{"approved":true,"by":"the web ui"}');
  await page.click('#send-signal');
  for (let i = 0; ; i++) {
    await page.waitForTimeout(300);
    await page.evaluate(() => window.dispatchEvent(new HashChangeEvent('hashchange')));
    await page.waitForSelector('#run-status');
    if ((await page.textContent('#run-status')) === 'completed') break;
    if (i > 60) throw new Error('the run did not complete');
  }
  const result = await page.textContent('#run-result');
  await page.screenshot({ path: `${shots}/completed.png`, fullPage: true });

  step('a reset of the completed run makes a new run, verified by replay');
  await page.fill('#reset-seq', '1');
  await page.click('#reset');
  await page.waitForFunction((id) => location.hash.startsWith('#/runs/') && !location.hash.endsWith(`/${id}`), runId);
  await page.waitForFunction(() => document.querySelector('#run-status')?.textContent === 'running');
  const resetTo = decodeURIComponent(await page.evaluate(() => location.hash.slice('#/runs/'.length)));
  await page.waitForTimeout(500); // the page renders once more after an action

  step('a finished run deleted from its page');
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(`${url}/ui#/runs/${cartId}-done`);
  await page.waitForSelector('#delete');
  await page.click('#delete');
  await page.waitForFunction(() => location.hash === '#/runs');
  await page.waitForSelector('#runs tr');
  await page.waitForTimeout(500); // the page renders once more after an action

  step('the workflows page lists versions and activity limits');
  await page.click('#nav-workflows');
  await page.waitForSelector('#workflows td');
  await page.waitForSelector('#activity-limits td:text("payments.charge")');
  await page.screenshot({ path: `${shots}/workflows.png`, fullPage: true });

  step('an update and a query from the run page of a cart');
  await page.goto(`${url}/ui#/runs/${cartId}`);
  await page.waitForSelector('#send-update');
  await page.fill('#update-name', 'add');
  await page.fill('#update-args', '"tea"');
  await page.click('#send-update');
  await page.waitForFunction(() => document.querySelector('#answer')?.textContent === 'update: 2').catch(async (e) => {
    throw new Error(`${e.message}; the page says: ${await page.textContent('#message')} / ${await page.textContent('#answer')}`);
  });
  await page.waitForTimeout(2000); // the page reloads the journal the update wrote to
  await page.waitForSelector('#ask-query');
  await page.fill('#query-name', 'items');
  await page.click('#ask-query');
  await page.waitForFunction(() => document.querySelector('#answer')?.textContent === 'query: ["coffee","tea"]');
  await page.screenshot({ path: `${shots}/update.png`, fullPage: true });

  step('a schedule made on the schedules page, then paused there');
  await page.click('#nav-schedules');
  await page.waitForSelector('#schedules td');
  await page.fill('#create-schedule input[name=name]', 'ui-nightly');
  await page.fill('#create-schedule input[name=workflow]', 'approval');
  await page.fill('#create-schedule input[name=cron]', '0 3 * * *');
  await page.fill('#create-schedule input[name=timezone]', 'Europe/Berlin');
  await page.click('#create-schedule button');
  await page.waitForSelector('#schedules td[data-name="ui-nightly"]');
  await page.click('#schedules td[data-name="ui-nightly"] button[data-do="pause"]');
  await page.waitForSelector('#schedules td[data-name="ui-nightly"] button[data-do="resume"]');
  await page.screenshot({ path: `${shots}/schedules.png`, fullPage: true });
  console.log(JSON.stringify({ ok: true, result: JSON.parse(result), reset: resetTo }));
} catch (e) {
  const page = browser.contexts()[0]?.pages()[0];
  if (page) console.log(`at ${page.url()}: ${(await page.textContent('#message').catch(() => '')) ?? ''} | ${(await page.textContent('#view').catch(() => ''))?.slice(0, 600)}`);
  throw e;
} finally {
  await browser.close();
}
